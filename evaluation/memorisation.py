"""Memorisation audit: is a synthetic sample a near-copy of one the GAN trained on?

For every synthetic sample, the distance to its nearest neighbour in the GAN's training set, in pixel space
(root-mean-square difference of the normalised images, in [-1, 1] units) and in feature space (the fidelity
CNN's embedding). The yardstick is the same distance for *real test* samples: new patients from the same
distribution, which the GAN never saw. A synthetic sample closer to the training set than the p-th
percentile (default 1st) of those real distances, in *both* spaces, is flagged as a near-copy (a copy is
close in every representation; asking for both keeps chance hits down). If the GAN copied nothing and its
samples were like new patients, about p % (fewer, with both spaces) would fall below by chance; far more
means memorisation (the "memorisation test" of Meehan et al. 2020 and the nearest-neighbour audits of
Carlini et al. 2023 follow the same idea).

Caveat: the feature CNN was trained on the same training images, which pulls them together in feature space;
the pixel distance has no such bias.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def nearest(queries: np.ndarray, reference: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest reference row, and that row's index.

    Args:
        queries: (Q, D) float.
        reference: (R, D) float.
        chunk: queries per block (bounds memory at chunk x R distances).

    Returns:
        distances (Q,) float64, indices (Q,) int64.
    """
    reference_t = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    distances, indices = [], []
    for start in range(0, len(queries), chunk):
        block = torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk], dtype=np.float32))
        where = torch.cdist(block, reference_t).argmin(dim=1)
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


@dataclass
class AuditResult:
    """Distances and flags of one audit (every array is per sample, in the order given)."""

    percentile: float
    test_pixel: np.ndarray
    test_feature: np.ndarray
    synthetic_pixel: np.ndarray
    synthetic_feature: np.ndarray
    synthetic_neighbour: np.ndarray  # index (into the reference set) of the nearest pixel-space neighbour
    threshold_pixel: float
    threshold_feature: float
    flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def summary(self, closest_pairs: int) -> dict[str, Any]:
        """JSON-ready numbers: thresholds, counts, the closest pairs and distance quantiles."""
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
            "threshold_pixel_rms": round(self.threshold_pixel, 6),
            "threshold_feature": round(self.threshold_feature, 6),
            "synthetic_audited": count,
            "real_test_audited": int(self.test_pixel.size),
            "below_pixel": int(below_pixel.sum()),
            "below_feature": int(below_feature.sum()),
            "near_copies": int(self.flagged.sum()),
            "near_copy_fraction": round(float(self.flagged.mean()), 6) if count else None,
            "exact_copies": int((self.synthetic_pixel == 0).sum()),
            "expected_by_chance_per_space": self.percentile / 100.0,
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
    """Nearest-neighbour audit of synthetic samples against the GAN's training set.

    Args:
        training_images: (R, C, H, W) the GAN's training samples, normalised to [-1, 1].
        test_images: (T, C, H, W) real test samples, normalised alike (the yardstick).
        synthetic_blocks: the synthetic samples, normalised alike, in blocks (so large pools stream).
        embed: images -> (n, D) features.
        percentile: flag synthetic samples closer than this percentile of the real-test distances.

    Returns:
        Distances, thresholds and flags.
    """
    pixels = int(np.prod(training_images.shape[1:]))
    training_flat = training_images.reshape(len(training_images), -1)
    training_features = embed(training_images)
    test_pixel = pixel_rms(nearest(test_images.reshape(len(test_images), -1), training_flat)[0], pixels)
    test_feature = nearest(embed(test_images), training_features)[0]
    pixel_parts, feature_parts, neighbour_parts = [], [], []
    for block in synthetic_blocks:
        distances, neighbours = nearest(block.reshape(len(block), -1), training_flat)
        pixel_parts.append(pixel_rms(distances, pixels))
        neighbour_parts.append(neighbours)
        feature_parts.append(nearest(embed(block), training_features)[0])
    synthetic_pixel = np.concatenate(pixel_parts) if pixel_parts else np.zeros(0)
    synthetic_feature = np.concatenate(feature_parts) if feature_parts else np.zeros(0)
    threshold_pixel = float(np.percentile(test_pixel, percentile))
    threshold_feature = float(np.percentile(test_feature, percentile))
    result = AuditResult(
        percentile=percentile,
        test_pixel=test_pixel,
        test_feature=test_feature,
        synthetic_pixel=synthetic_pixel,
        synthetic_feature=synthetic_feature,
        synthetic_neighbour=np.concatenate(neighbour_parts) if neighbour_parts else np.zeros(0, np.int64),
        threshold_pixel=threshold_pixel,
        threshold_feature=threshold_feature,
    )
    # <= would flag everything when the threshold is 0 (a test sample that is itself in the training set).
    result.flagged = (synthetic_pixel < threshold_pixel) & (synthetic_feature < threshold_feature)
    return result
