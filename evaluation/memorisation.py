"""Memorisation audit: is a synthetic sample a near-copy of one the GAN trained on?

For every synthetic sample, the distance to its nearest neighbour in the GAN's training set, in two spaces:

- pixel space: root-mean-square difference per value (normalised [-1, 1] units) of the central window (the
  image less a ``SHIFT_PIXELS`` border) after 2x2 averaging, minimised over the 8 flips and rotations of
  each training image (the 4 that keep the shape when it is not square) and over shifts of the synthetic
  sample by up to ``SHIFT_PIXELS`` pixels in each direction. A flipped, rotated or slightly shifted copy is
  a copy; raw pixel distances would call it a new image (a 2-pixel shift of a textured CT patch is as far
  in pixels as another patient's lesion).
- feature space: Euclidean distance between embeddings (the fidelity CNN's dense layer), against the same
  flipped and rotated training images.

The yardstick is the same distance for *real test* samples: new patients from the same distribution, which
the GAN never saw. A synthetic sample closer to the training set than the p/2-th percentile (default p = 1)
of those real distances in *either* space is flagged as a near-copy: a copy need only be close in one
representation (a flip can move the CNN's features; a re-textured copy can move the pixels). Each space
flags about p/2 % of new samples by chance, so the rule flags at most p % by chance (fewer where the two
spaces agree); ``real_test_flagged_fraction`` shows the rate the rule gives on the real test samples
themselves. Far more than that among synthetic samples means memorisation (the "memorisation test" of
Meehan et al. 2020 and the nearest-neighbour audits of Carlini et al. 2023 follow the same idea).

Caveat: the feature CNN was trained on the same training images, which pulls them together in feature space;
the pixel distance has no such bias.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

SHIFT_PIXELS = 2  # a synthetic sample shifted by up to this many pixels (each axis) still matches its source
EXACT_TOLERANCE = 1e-6  # pixel RMS below this: an exact copy (up to a flip or rotation), float rounding aside
PIXEL_SPACE_NOTE = (
    f"pixel RMS of the central window (less a {SHIFT_PIXELS}-pixel border) after 2x2 averaging, minimised over "
    f"the flips and rotations of each training image and shifts of up to {SHIFT_PIXELS} pixels"
)


def nearest(
    queries: np.ndarray, reference: np.ndarray, chunk: int = 2048, *, exclude_same_index: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest reference row, and that row's index.

    Args:
        queries: (Q, D) float.
        reference: (R, D) float.
        chunk: queries per block (bounds memory at chunk x R distances).
        exclude_same_index: query i never matches reference row i (queries and reference are one set: the
            nearest *other* sample).

    Returns:
        distances (Q,) float64, indices (Q,) int64.
    """
    reference_t = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    distances, indices = [], []
    for start in range(0, len(queries), chunk):
        block = torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk], dtype=np.float32))
        pairwise = torch.cdist(block, reference_t)
        if exclude_same_index:
            rows = torch.arange(len(block))
            keep = rows + start < pairwise.shape[1]
            pairwise[rows[keep], rows[keep] + start] = float("inf")
        where = pairwise.argmin(dim=1)
        # cdist's fast path (|a|^2 + |b|^2 - 2ab) loses ~1e-3 to cancellation; recompute the chosen pairs
        # directly so an exact copy measures exactly 0.
        values = (block.double() - reference_t[where].double()).norm(dim=1)
        distances.append(values.numpy())
        indices.append(where.numpy())
    if not distances:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(distances), np.concatenate(indices).astype(np.int64)


def pixel_rms(distances: np.ndarray, pixels: int) -> np.ndarray:
    """Euclidean distance over ``pixels`` values -> root-mean-square difference per pixel."""
    return distances / np.sqrt(pixels)


def dihedral_transforms(height: int, width: int) -> tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...]:
    """The flips and rotations of (..., H, W) images that keep their shape: 8 when square, else 4.

    Returns:
        ``(name, transform)`` pairs, the identity first.
    """
    def rotate(turns: int, flip: bool) -> Callable[[np.ndarray], np.ndarray]:
        def transform(images: np.ndarray) -> np.ndarray:
            rotated = np.rot90(images, turns, axes=(-2, -1))
            return np.ascontiguousarray(rotated[..., ::-1] if flip else rotated)

        return transform

    names = {(0, False): "identity", (0, True): "flip-left-right", (2, False): "rotate-180", (2, True): "flip-up-down",
             (1, False): "rotate-90", (1, True): "rotate-90+flip-left-right", (3, False): "rotate-270", (3, True): "rotate-270+flip-left-right"}
    turns = (0, 2, 1, 3) if height == width else (0, 2)
    return tuple((names[(t, flip)], rotate(t, flip)) for t in turns for flip in (False, True))


def _window_geometry(height: int, width: int) -> tuple[int, int]:
    """(shift, pooling factor) for images of this size: the full shift and 2x2 averaging when they fit."""
    shift = max(0, min(SHIFT_PIXELS, (min(height, width) - 2) // 2))
    pool = 2 if min(height, width) - 2 * shift >= 2 else 1
    return shift, pool


def _pixel_representation(windows: torch.Tensor, pool: int) -> torch.Tensor:
    """(N, C, h, w) windows -> (N, C * (h // pool) * (w // pool)) pooled values."""
    if pool > 1:
        windows = torch.nn.functional.avg_pool2d(windows, pool)
    return windows.flatten(1)


def _aligned_nearest(images: np.ndarray, reference: torch.Tensor, shift: int, pool: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest reference row of each image, minimised over the image's shifted central windows.

    Args:
        images: (Q, C, H, W) queries.
        reference: (M, D) :func:`_pixel_representation` of the reference's central windows.
        shift: largest shift, pixels.
        pool: pooling factor of the representation.

    Returns:
        Euclidean distances (Q,) float64, reference rows (Q,) int64, shifts (Q, 2) int64 (rows, columns).
    """
    offsets = [(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)]
    height, width = images.shape[-2:]
    rows_out, columns_out = (height - 2 * shift) // pool, (width - 2 * shift) // pool
    reference_squared = reference.square().sum(dim=1)
    chunk = max(1, 2**24 // (len(offsets) * max(1, len(reference))))  # bounds the distance block at 64 MiB
    distances, rows, shifts = [], [], []
    for start in range(0, len(images), chunk):
        block = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk], dtype=np.float32))
        # pool x pool means at every position once; the pooled window of a sample shifted by (dy, dx) that lines
        # up with the reference's central window is then a strided slice of them
        means = torch.nn.functional.avg_pool2d(block, pool, stride=1) if pool > 1 else block
        windows = torch.stack(
            [means[..., shift + dy :: pool, shift + dx :: pool][..., :rows_out, :columns_out].flatten(1) for dy, dx in offsets], dim=1
        ).flatten(0, 1)  # (q * S, D)
        # squared distances |a|^2 + |b|^2 - 2ab for the search; the chosen pairs are recomputed exactly below
        squared = (windows.square().sum(dim=1, keepdim=True) + reference_squared) - 2.0 * (windows @ reference.T)
        best = squared.view(len(block), -1).argmin(dim=1)  # over (shift, reference row)
        offset_index, row = best // len(reference), best % len(reference)
        chosen = windows.view(len(block), len(offsets), -1)[torch.arange(len(block)), offset_index]
        distances.append((chosen.double() - reference[row].double()).norm(dim=1).numpy())  # exact 0 for a copy
        rows.append(row.numpy())
        shifts.append(np.asarray(offsets, dtype=np.int64)[offset_index.numpy()])
    if not distances:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
    return np.concatenate(distances), np.concatenate(rows).astype(np.int64), np.concatenate(shifts)


@dataclass
class AuditResult:
    """Distances and flags of one audit (every array is per sample, in the order given)."""

    percentile: float
    test_pixel: np.ndarray
    test_feature: np.ndarray
    synthetic_pixel: np.ndarray
    synthetic_feature: np.ndarray
    synthetic_neighbour: np.ndarray  # index (into the training set) of the nearest pixel-space neighbour
    threshold_pixel: float
    threshold_feature: float
    flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    test_flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # the rule applied to real test samples
    synthetic_transform: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # into transform_names
    synthetic_shift: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # (rows, columns) pixels
    transform_names: tuple[str, ...] = ("identity",)

    def summary(self, closest_pairs: int) -> dict[str, Any]:
        """JSON-ready numbers: thresholds, counts, the chance rate, the closest pairs and distance quantiles."""
        below_pixel = self.synthetic_pixel < self.threshold_pixel
        below_feature = self.synthetic_feature < self.threshold_feature
        order = np.argsort(self.synthetic_pixel, kind="stable")[:closest_pairs]

        def quantiles(values: np.ndarray) -> dict[str, float]:
            if values.size == 0:
                return {}
            points = np.percentile(values, [0, 1, 5, 25, 50, 75, 95, 100])
            return {name: round(float(v), 6) for name, v in zip(("min", "p1", "p5", "p25", "median", "p75", "p95", "max"), points, strict=True)}

        count = int(self.synthetic_pixel.size)
        return {
            "percentile": self.percentile,
            "percentile_per_space": self.percentile / 2.0,
            "rule": "flagged when closer than the threshold in pixel space or in feature space",
            "pixel_space": PIXEL_SPACE_NOTE,
            "threshold_pixel_rms": round(self.threshold_pixel, 6),
            "threshold_feature": round(self.threshold_feature, 6),
            "synthetic_audited": count,
            "real_test_audited": int(self.test_pixel.size),
            "below_pixel": int(below_pixel.sum()),
            "below_feature": int(below_feature.sum()),
            "near_copies": int(self.flagged.sum()),
            "near_copy_fraction": round(float(self.flagged.mean()), 6) if count else None,
            "exact_copies": int((self.synthetic_pixel < EXACT_TOLERANCE).sum()),
            "expected_by_chance": self.percentile / 100.0,
            "expected_by_chance_per_space": self.percentile / 200.0,
            "real_test_flagged_fraction": round(float(self.test_flagged.mean()), 6) if self.test_flagged.size else None,
            "distances": {
                "synthetic_pixel_rms": quantiles(self.synthetic_pixel),
                "real_test_pixel_rms": quantiles(self.test_pixel),
                "synthetic_feature": quantiles(self.synthetic_feature),
                "real_test_feature": quantiles(self.test_feature),
            },
            "closest_pairs": [
                {
                    "synthetic_index": int(i),
                    "training_index": int(self.synthetic_neighbour[i]),
                    "transform": self.transform_names[int(self.synthetic_transform[i])] if self.synthetic_transform.size else "identity",
                    "shift": [int(v) for v in self.synthetic_shift[i]] if self.synthetic_shift.size else [0, 0],
                    "pixel_rms": round(float(self.synthetic_pixel[i]), 6),
                    "feature_distance": round(float(self.synthetic_feature[i]), 6),
                    "flagged": bool(self.flagged[i]),
                }
                for i in order
            ],
        }


def audit(
    training_images: np.ndarray,
    test_images: np.ndarray,
    synthetic_blocks: Iterable[np.ndarray],
    embed: Callable[[np.ndarray], np.ndarray],
    percentile: float = 1.0,
) -> AuditResult:
    """Nearest-neighbour audit of synthetic samples against the GAN's training set (flips, rotations and
    small shifts of a training image count as copies of it).

    Args:
        training_images: (R, C, H, W) the GAN's training samples, normalised to [-1, 1].
        test_images: (T, C, H, W) real test samples, normalised alike (the yardstick).
        synthetic_blocks: the synthetic samples, normalised alike, in blocks (so large pools stream).
        embed: images -> (n, D) features.
        percentile: the chance rate p of the rule, in percent: a sample is flagged when it is closer than
            the p/2-th percentile of the real-test distances in pixel space or in feature space.

    Returns:
        Distances, thresholds and flags.
    """
    height, width = training_images.shape[-2:]
    shift, pool = _window_geometry(height, width)
    transforms = dihedral_transforms(height, width)
    central = training_images[..., shift : height - shift, shift : width - shift]
    # rows t * R + i: training image i under transform t (the central window is symmetric, so transforming it
    # equals taking the window of the transformed image)
    reference_pixel = torch.cat([_pixel_representation(torch.from_numpy(transform(central).astype(np.float32)), pool) for _, transform in transforms])
    reference_feature = np.concatenate([embed(transform(training_images)) for _, transform in transforms])
    pixels = int(reference_pixel.shape[1])
    count = len(training_images)

    test_distances, _, _ = _aligned_nearest(test_images, reference_pixel, shift, pool)
    test_pixel = pixel_rms(test_distances, pixels)
    test_feature = nearest(embed(test_images), reference_feature)[0]
    pixel_parts, feature_parts, row_parts, shift_parts = [], [], [], []
    for block in synthetic_blocks:
        distances, rows, shifts = _aligned_nearest(block, reference_pixel, shift, pool)
        pixel_parts.append(pixel_rms(distances, pixels))
        row_parts.append(rows)
        shift_parts.append(shifts)
        feature_parts.append(nearest(embed(block), reference_feature)[0])
    synthetic_pixel = np.concatenate(pixel_parts) if pixel_parts else np.zeros(0)
    synthetic_feature = np.concatenate(feature_parts) if feature_parts else np.zeros(0)
    rows = np.concatenate(row_parts) if row_parts else np.zeros(0, np.int64)
    threshold_pixel = float(np.percentile(test_pixel, percentile / 2.0))
    threshold_feature = float(np.percentile(test_feature, percentile / 2.0))
    # < rather than <=: a threshold of 0 (a test sample that is itself in the training set) flags nothing.
    return AuditResult(
        percentile=percentile,
        test_pixel=test_pixel,
        test_feature=test_feature,
        synthetic_pixel=synthetic_pixel,
        synthetic_feature=synthetic_feature,
        synthetic_neighbour=rows % count,
        threshold_pixel=threshold_pixel,
        threshold_feature=threshold_feature,
        flagged=(synthetic_pixel < threshold_pixel) | (synthetic_feature < threshold_feature),
        test_flagged=(test_pixel < threshold_pixel) | (test_feature < threshold_feature),
        synthetic_transform=rows // count,
        synthetic_shift=np.concatenate(shift_parts) if shift_parts else np.zeros((0, 2), np.int64),
        transform_names=tuple(name for name, _ in transforms),
    )
