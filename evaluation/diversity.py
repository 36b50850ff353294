"""Diversity of a set of lesions, and how a synthetic set's diversity compares with a real one's.

The numbers of issue 13, one implementation for the training monitor and for the shipped-model test. For a
set of (image HU, mask) samples of one class:

- ``nn_distance``: median over samples of the Euclidean distance to the nearest *other* sample of the same
  set, on images normalised to [-1, 1] by the HU window and blurred with a Gaussian of σ = 2 px first (CT
  noise is independent between samples and would otherwise dominate the distance; blurred, the distance
  sees the lesion's shape, size and surroundings). A mode-collapsed generator's samples sit closer to each
  other than real lesions do.
- ``nn_mask_iou``: median over samples of the largest IoU of the sample's mask with the mask of any other
  sample in the set (repeated masks give 1; two empty masks count as identical).
- ``lesion_area``: median of mask pixels / ROI pixels.
- ``bright_fraction``: pixels above 170 HU outside the lesion / pixels outside the lesion, pooled over the
  set (in the liver: contrast-filled vessels).
- ``texture_hu``: median over samples of the standard deviation, outside the lesion, of the image minus its
  Gaussian blur (σ = 1 px), in HU: the fine-grained texture CT noise gives (a record, not a criterion;
  measured: 42.5 HU on the lung split's training nodules, 5.4 HU on the shipped liver model's samples, issue #13).

Set size matters: the nearest of n samples gets closer as n grows, so two sets are compared at equal n
(:func:`compare_diversity` subsamples the larger one with a seed). The same holds for the IoU.

Two files, per class (e.g. a generator's *training* set against new patients: what it inherits)::

    python -m evaluation.diversity cohorts/lung-split-train.h5 cohorts/lung-nodules-seed1/test.h5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.data.intensity import normalise
from evaluation.memorisation import nearest

BLUR_SIGMA_PIXELS = 2.0
TEXTURE_SIGMA_PIXELS = 1.0
BRIGHT_HU = 170.0
# Issue 13's targets for a synthetic set against real lesions of new patients.
NN_DISTANCE_RATIO_MIN = 0.85  # synthetic / real
MASK_IOU_EXCESS_MAX = 0.05  # synthetic - real
AREA_RATIO_TOLERANCE = 0.20  # |synthetic / real - 1|
BRIGHT_RATIO_TOLERANCE = 0.50  # |synthetic / real - 1|
CRITERIA = ("nn_distance", "nn_mask_iou", "lesion_area", "bright_fraction")


@dataclass(frozen=True)
class LesionSet:
    """Lesions of one class (or of all classes together).

    Attributes:
        hu: (N, C, H, W) or (N, H, W) images in HU (the first channel is used).
        masks: (N, H, W) labels or bools; every value > 0 is lesion.
    """

    hu: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def subset(self, indices: np.ndarray) -> LesionSet:
        return LesionSet(self.hu[indices], self.masks[indices])


def _first_channel(hu: np.ndarray) -> np.ndarray:
    return hu[:, 0] if hu.ndim == 4 else hu


def blurred(hu: np.ndarray, window: tuple[float, float], sigma: float = BLUR_SIGMA_PIXELS) -> np.ndarray:
    """(N, [C,] H, W) HU -> (N, H * W) float32: normalised to [-1, 1] by ``window``, blurred in-plane."""
    from scipy import ndimage

    images = np.asarray(normalise(_first_channel(hu).astype(np.float32), window), dtype=np.float32)
    smooth = ndimage.gaussian_filter(images, sigma=(0.0, sigma, sigma), mode="nearest")
    return smooth.reshape(len(images), -1)


def nearest_other_distance(hu: np.ndarray, window: tuple[float, float], sigma: float = BLUR_SIGMA_PIXELS) -> np.ndarray:
    """(N,) distance of each blurred image to the nearest other image of the set (NaN when N < 2)."""
    if len(hu) < 2:
        return np.full(len(hu), np.nan)
    points = blurred(hu, window, sigma)
    return nearest(points, points, exclude_same_index=True)[0]


def nearest_mask_iou(masks: np.ndarray) -> np.ndarray:
    """(N,) largest IoU of each mask with any other mask of the set (NaN when N < 2)."""
    count = len(masks)
    if count < 2:
        return np.full(count, np.nan)
    import torch

    flat = torch.from_numpy((np.asarray(masks) > 0).reshape(count, -1).astype(np.float32))
    intersection = flat @ flat.T  # exact: integer counts well below 2^24
    areas = flat.sum(dim=1)
    union = areas[:, None] + areas[None, :] - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1.0), torch.ones_like(union))  # two empty masks: identical
    iou.fill_diagonal_(-1.0)
    return iou.max(dim=1).values.double().numpy()


def fine_texture(hu: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(N,) standard deviation in HU, outside each mask, of the image minus its σ = 1 px Gaussian blur (NaN
    where the mask covers the ROI)."""
    from scipy import ndimage

    images = _first_channel(np.asarray(hu)).astype(np.float32)
    residual = images - ndimage.gaussian_filter(images, sigma=(0.0, TEXTURE_SIGMA_PIXELS, TEXTURE_SIGMA_PIXELS), mode="nearest")
    outside = ~(np.asarray(masks) > 0)
    return np.array([float(r[o].std()) if o.any() else float("nan") for r, o in zip(residual, outside, strict=True)])


def diversity(lesions: LesionSet, window: tuple[float, float]) -> dict[str, float]:
    """The set's diversity numbers (see the module docstring) and its size ``n``.

    Args:
        lesions: the samples.
        window: HU window that normalises images for the distance.
    """
    masks = np.asarray(lesions.masks) > 0
    image = _first_channel(np.asarray(lesions.hu))
    outside = ~masks
    bright = (image > BRIGHT_HU) & outside
    pixels = masks[0].size if len(masks) else 1
    return {
        "n": len(lesions),
        "nn_distance": float(np.median(nearest_other_distance(lesions.hu, window))) if len(lesions) > 1 else float("nan"),
        "nn_mask_iou": float(np.median(nearest_mask_iou(masks))) if len(lesions) > 1 else float("nan"),
        "lesion_area": float(np.median(masks.reshape(len(masks), -1).sum(axis=1) / pixels)) if len(masks) else float("nan"),
        "bright_fraction": float(bright.sum() / max(int(outside.sum()), 1)),
        "texture_hu": float(np.nanmedian(fine_texture(lesions.hu, masks))) if len(masks) and outside.any() else float("nan"),
    }


def equal_size(first: LesionSet, second: LesionSet, seed: int) -> tuple[LesionSet, LesionSet]:
    """Both sets at the smaller one's size: the larger is subsampled (seeded, without replacement, in order)."""
    size = min(len(first), len(second))
    generator = np.random.default_rng(seed)

    def take(lesions: LesionSet) -> LesionSet:
        if len(lesions) == size:
            return lesions
        return lesions.subset(np.sort(generator.choice(len(lesions), size, replace=False)))

    return take(first), take(second)


def _ratio(numerator: float, denominator: float) -> float:
    if not np.isfinite(numerator) or not np.isfinite(denominator) or denominator == 0:
        return float("nan") if numerator != denominator else 1.0
    return numerator / denominator


def compare_diversity(synthetic: LesionSet, real: LesionSet, window: tuple[float, float], *, seed: int = 0) -> dict[str, Any]:
    """Issue 13's diversity criteria of ``synthetic`` against ``real`` lesions of new patients, at equal n.

    Args:
        synthetic: generated lesions of one class.
        real: real lesions of the same class (other patients than the generator's training set).
        window: HU window for the distance.
        seed: which samples of the larger set are kept.

    Returns:
        ``{"synthetic": {...}, "real": {...}, "criteria": {name: {"value", "target", "passed"}}, "passed"}``:
        ``nn_distance`` is the ratio synthetic / real (target ≥ 0.85), ``nn_mask_iou`` the difference
        synthetic − real (≤ 0.05), ``lesion_area`` and ``bright_fraction`` ratios synthetic / real (within
        20 % and 50 % of 1). A criterion whose value is NaN (a set of fewer than 2 samples) fails.
    """
    synthetic, real = equal_size(synthetic, real, seed)
    ours, theirs = diversity(synthetic, window), diversity(real, window)
    values = {
        "nn_distance": _ratio(ours["nn_distance"], theirs["nn_distance"]),
        "nn_mask_iou": ours["nn_mask_iou"] - theirs["nn_mask_iou"],
        "lesion_area": _ratio(ours["lesion_area"], theirs["lesion_area"]),
        "bright_fraction": _ratio(ours["bright_fraction"], theirs["bright_fraction"]),
    }
    targets = {
        "nn_distance": f"synthetic / real >= {NN_DISTANCE_RATIO_MIN}",
        "nn_mask_iou": f"synthetic - real <= {MASK_IOU_EXCESS_MAX}",
        "lesion_area": f"synthetic / real within {AREA_RATIO_TOLERANCE:.0%} of 1",
        "bright_fraction": f"synthetic / real within {BRIGHT_RATIO_TOLERANCE:.0%} of 1",
    }
    passed = {
        "nn_distance": values["nn_distance"] >= NN_DISTANCE_RATIO_MIN,
        "nn_mask_iou": values["nn_mask_iou"] <= MASK_IOU_EXCESS_MAX,
        "lesion_area": abs(values["lesion_area"] - 1.0) <= AREA_RATIO_TOLERANCE,
        "bright_fraction": abs(values["bright_fraction"] - 1.0) <= BRIGHT_RATIO_TOLERANCE,
    }
    criteria = {name: {"value": values[name], "target": targets[name], "passed": bool(passed[name])} for name in CRITERIA}
    return {"synthetic": ours, "real": theirs, "criteria": criteria, "passed": all(c["passed"] for c in criteria.values())}


def compare_files(path: str | Path, reference: str | Path, *, samples: int = 256, repeats: int = 20, seed: int = 0) -> dict[str, dict[str, Any]]:
    """:func:`compare_diversity` of every class two lesion files share (by name), repeated on ``repeats`` random
    draws of at most ``samples`` lesions a class from each file, with the reference against itself as the floor.

    Any two files: a generator's samples against lesions of new patients, or -- what a generator trained on a
    small set inherits -- its *training* lesions against those of new patients. At a few dozen lesions a class the
    criteria move a lot with the draw, so each is given as its median and 10th-90th percentile over the draws, and
    so is the same comparison between two disjoint draws of the reference at the same n (``floor``: what sampling
    alone does; None where the reference holds fewer than twice n).

    Raises:
        AugmentorError: a file that is missing or not a dataset file, or no class in common.
    """
    from augmentor.data.reader import H5File
    from augmentor.errors import AugmentorError

    files = [H5File(Path(p)) for p in (path, reference)]
    names = [name for name in files[0].info.class_names if name in files[1].info.class_names]
    if not names:
        raise AugmentorError(f"{path} ({', '.join(files[0].info.class_names)}) and {reference} ({', '.join(files[1].info.class_names)}) share no class")
    window = files[1].info.hu_window
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = [np.flatnonzero(file.labels() == file.info.class_names.index(name)) for file in files]
        n = min(samples, *(r.size for r in rows))
        lesions = [LesionSet(*file.read(r)[:2]) for file, r in zip(files, rows, strict=True)]
        judged: list[dict[str, Any]] = []
        floor: list[dict[str, Any]] = []
        for repeat in range(repeats):
            generator = np.random.default_rng([seed, repeat])
            draws = [np.sort(generator.choice(len(s), n, replace=False)) for s in lesions]
            judged.append(compare_diversity(lesions[0].subset(draws[0]), lesions[1].subset(draws[1]), window, seed=seed)["criteria"])
            if len(lesions[1]) >= 2 * n:
                order = generator.permutation(len(lesions[1]))
                halves = [np.sort(order[:n]), np.sort(order[n : 2 * n])]
                floor.append(compare_diversity(lesions[1].subset(halves[0]), lesions[1].subset(halves[1]), window, seed=seed)["criteria"])
        results[name] = {"n": n, "repeats": repeats, "judged": _spread(judged), "floor": _spread(floor) if floor else None}
    return results


def _spread(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per criterion over repeated draws: median, 10th and 90th percentile, and the fraction that passed."""
    spread = {}
    for key in CRITERIA:
        values = np.array([run[key]["value"] for run in runs], dtype=np.float64)
        low, median, high = np.nanpercentile(values, [10, 50, 90]) if np.isfinite(values).any() else (np.nan,) * 3
        spread[key] = {"median": float(median), "p10": float(low), "p90": float(high), "passed": float(np.mean([run[key]["passed"] for run in runs]))}
    return spread


def markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Two rows per class (the file, and the reference against itself): each criterion's median [10th, 90th
    percentile] over the draws, and how often it passed."""
    header = "| class | n | compared | " + " | ".join(f"{key} (passed)" for key in CRITERIA) + " |"
    lines = [header, "|" + "---|" * (3 + len(CRITERIA))]
    for name, result in results.items():
        for label, spread in (("file vs reference", result["judged"]), ("reference vs reference", result["floor"])):
            if spread is None:
                continue
            cells = [f"{spread[key]['median']:.2f} [{spread[key]['p10']:.2f}, {spread[key]['p90']:.2f}] ({spread[key]['passed']:.0%})" for key in CRITERIA]
            lines.append(f"| {name} | {result['n']} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    from augmentor.errors import AugmentorError

    parser = argparse.ArgumentParser(
        prog="python -m evaluation.diversity", description="Issue 13's diversity criteria of a lesion file against a reference file (lesions of new patients), per class."
    )
    parser.add_argument("file", type=Path, help="the lesions judged (generated samples, or a generator's training set)")
    parser.add_argument("reference", type=Path, help="real lesions of other patients (e.g. the tuning cohort's test.h5)")
    parser.add_argument("--samples", type=int, default=256, help="at most this many lesions a class from each file (default 256)")
    parser.add_argument("--repeats", type=int, default=20, help="random draws of the lesions compared (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    arguments = parser.parse_args(argv)
    try:
        if arguments.samples < 2 or arguments.repeats < 1:
            raise AugmentorError(f"need --samples >= 2 and --repeats >= 1, got {arguments.samples} and {arguments.repeats}")
        print(markdown(compare_files(arguments.file, arguments.reference, samples=arguments.samples, repeats=arguments.repeats, seed=arguments.seed)))
    except AugmentorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
