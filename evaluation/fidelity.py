"""Fidelity of synthetic samples, per class, against the real training data, with a real-data floor.

Features: ImageNet Inception weights are neither available offline nor meaningful for CT patches, so the
feature extractor is a CNN trained *here* to classify the real training patients' samples (the downstream
Frid-Adar CNN with classic augmentation, early-stopped on the validation patients); its dense layer is the
embedding. Distances between feature distributions are then distances in what separates the lesion classes.

- Fréchet distance (Heusel et al. 2017) and kernel inception distance (KID: unbiased polynomial-kernel MMD,
  Bińkowski et al. 2018), both by torchmetrics with that CNN as a custom feature extractor. Fréchet
  distance is biased upwards for small sets (Chong & Forsyth 2020); KID is unbiased.
- precision, recall, density and coverage (Naeem et al. 2020, k-NN balls with k = 5): precision and density
  ask whether synthetic samples lie where real ones do, recall and coverage whether real samples are
  covered by synthetic ones.

The floor: the same numbers for real-train vs *real-test* samples of the class, at the same set size as
the synthetic comparison. A GAN cannot be expected to beat two independent real samples of the same
distribution; "synthetic / floor" is the readable ratio.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

FEATURE_EXTRACTOR_NOTE = (
    "Features: the dense layer of a Frid-Adar CNN trained in this run to classify the real training "
    "patients' samples (classic augmentation, early stopping on the validation patients). ImageNet "
    "Inception weights are neither available offline nor meaningful for CT patches."
)


class FeatureExtractor(nn.Module):
    """A trained :class:`~evaluation.models.FridAdarCNN` as a torchmetrics feature extractor.

    Takes images in [-1, 1], (B, C, H, W) float; returns (B, num_features) float features.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval()
        self.num_features = int(network.num_features)  # type: ignore[arg-type]

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.embed(images.float())  # type: ignore[operator]


@torch.inference_mode()
def embed(extractor: FeatureExtractor, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Features of (N, C, H, W) normalised images, (N, D) float32."""
    parts = [extractor(torch.from_numpy(images[start : start + batch_size])).numpy() for start in range(0, len(images), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, extractor.num_features), np.float32)


def frechet_distance(extractor: FeatureExtractor, real: np.ndarray, other: np.ndarray) -> float:
    """Fréchet distance between the feature distributions of two image sets (torchmetrics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(other) < 2:
        return float("nan")
    metric = FrechetInceptionDistance(feature=extractor, normalize=False)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(other), real=False)
    return float(metric.compute())


def kernel_inception_distance(
    extractor: FeatureExtractor, real: np.ndarray, other: np.ndarray, subsets: int, subset_size: int, seed: int
) -> tuple[float, float]:
    """KID (mean and standard deviation over random subsets) between two image sets (torchmetrics)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), len(other))
    if size < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "will save all extracted features in buffer"
        metric = KernelInceptionDistance(feature=extractor, subsets=subsets, subset_size=size, normalize=False)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(other), real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from torch's global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def _kth_neighbour_radii(features: np.ndarray, k: int) -> np.ndarray:
    distances = torch.cdist(torch.from_numpy(features).double(), torch.from_numpy(features).double())
    return distances.kthvalue(k + 1, dim=1).values.numpy()  # k + 1: the nearest is the point itself


def precision_recall_density_coverage(real_features: np.ndarray, other_features: np.ndarray, k: int = 5) -> dict[str, float]:
    """Naeem et al. 2020 (ICML), "Reliable fidelity and diversity metrics for generative models".

    With B(x, r) the ball around x with radius r = distance to x's k-th nearest real neighbour:
    precision = share of other samples inside some real ball; recall = share of real samples inside some
    ball of the *other* set's k-NN radii; density = mean number of real balls containing an other sample,
    / k; coverage = share of real balls containing at least one other sample.
    """
    nan = float("nan")
    if len(real_features) <= k or len(other_features) <= k:
        return {"precision": nan, "recall": nan, "density": nan, "coverage": nan}
    real_radii = _kth_neighbour_radii(real_features, k)
    other_radii = _kth_neighbour_radii(other_features, k)
    between = torch.cdist(torch.from_numpy(real_features).double(), torch.from_numpy(other_features).double()).numpy()  # (R, O)
    inside_real = between < real_radii[:, None]
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((between < other_radii[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((between.min(axis=1) < real_radii).mean()),
    }


def compare(extractor: FeatureExtractor, real: np.ndarray, other: np.ndarray, *, subsets: int, subset_size: int, k: int, seed: int) -> dict[str, Any]:
    """Every fidelity number of ``other`` against ``real`` (images normalised, (N, C, H, W) float32)."""
    kid_mean, kid_std = kernel_inception_distance(extractor, real, other, subsets, subset_size, seed)
    values: dict[str, Any] = {
        "n_real": len(real),
        "n_other": len(other),
        "frechet_distance": frechet_distance(extractor, real, other),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
    }
    values.update(precision_recall_density_coverage(embed(extractor, real), embed(extractor, other), k))
    return values


def fidelity_table(
    extractor: FeatureExtractor,
    real_train: Mapping[str, np.ndarray],
    real_test: Mapping[str, np.ndarray],
    synthetic: Mapping[str, np.ndarray],
    *,
    max_samples: int,
    subsets: int,
    subset_size: int,
    k: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Per class (and all classes together): synthetic vs real-train, and the real-test vs real-train floor.

    Both comparisons use the same number of samples (the smaller of the test and synthetic sets, at most
    ``max_samples``; seeded subsamples), so the floor and the synthetic numbers share their small-sample bias.

    Args:
        extractor: the feature network.
        real_train: ``{class: images}`` of the real training patients.
        real_test: ``{class: images}`` of the real test set.
        synthetic: ``{class: images}`` of the synthetic pool.
        max_samples: cap per set.
        subsets: KID subsets.
        subset_size: KID subset size (capped at the set sizes).
        k: nearest neighbours of the PRDC balls.
        seed: subsampling and KID subsets.

    Returns:
        ``{class or "all": {"synthetic": {...}, "real_test_floor": {...}}}``.
    """
    generator = np.random.default_rng(seed)

    def take(images: np.ndarray, count: int) -> np.ndarray:
        if len(images) <= count:
            return images
        return images[np.sort(generator.choice(len(images), size=count, replace=False))]

    names: Sequence[str] = [name for name in real_train if name in synthetic and len(synthetic[name]) and len(real_train[name])]
    groups: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name in names:
        count = min(len(real_test.get(name, ())), len(synthetic[name]), max_samples)
        reference = take(real_train[name], max_samples)
        groups[name] = (reference, take(synthetic[name], count), take(real_test[name], count))
    if len(groups) > 1:
        groups["all"] = tuple(np.concatenate([group[i] for group in groups.values()]) for i in range(3))  # type: ignore[assignment]
    table = {}
    for name, (reference, fake, test) in groups.items():
        options = {"subsets": subsets, "subset_size": subset_size, "k": k, "seed": seed}
        table[name] = {"synthetic": compare(extractor, reference, fake, **options), "real_test_floor": compare(extractor, reference, test, **options)}
    return table
