"""Fidelity of synthetic samples, per class, against the real training data, with a real-data floor.

Features: ImageNet Inception weights are neither available offline nor meaningful for CT patches, so the
feature extractor is a CNN trained *here* to classify the real training patients' samples (the downstream
Frid-Adar CNN with classic augmentation, early-stopped on the validation patients); its dense layer is the
embedding. Distances between feature distributions are then distances in what separates the lesion classes.

The sets are small (53-65 real lesions per class in the Frid-Adar cohort), so every number is chosen for how
it behaves at that size:

- KID, the headline (kernel inception distance, Bińkowski et al. 2018): the unbiased estimate of the squared
  maximum mean discrepancy with the polynomial kernel k(x, y) = (x·y / d + 1)³, averaged over random subsets
  (``kid_std``: its spread over the subsets). Unbiased: two samples of one distribution give ≈ 0 at any n.
- Fréchet distance (Heusel et al. 2017) on the features *projected to at most n / 4 principal axes* of the
  real reference features (n = the smallest set compared; ``fd_dimensions`` says how many). Its small-sample
  bias grows with the dimension (Chong & Forsyth 2020): at n = 60 and d = 128, two samples of the *same*
  Gaussian are 66 (variance ∝ 1 / rank) to 120 (isotropic) apart, enough to drown a real difference; on 15
  principal axes, 12 to 20. What remains is shared by the floor, which goes through the same projection.
- precision, recall, density and coverage (Naeem et al. 2020, k-NN balls with k = 5; the authors' ``prdc``
  package): precision and density ask whether synthetic samples lie where real ones do, recall and
  coverage whether real samples are covered by synthetic ones.

The floor: the same numbers for real-train vs *real-test* samples of the class, at the same set size and
through the same projection as the synthetic comparison. A GAN cannot be expected to beat two independent
real samples of the same distribution; "synthetic / floor" is the readable ratio.
"""

from __future__ import annotations

import contextlib
import io
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
FIDELITY_NOTE = (
    "KID (unbiased squared MMD, polynomial kernel; ± its standard deviation over random subsets) is the headline: "
    "two samples of one distribution score about 0 at any size. The Fréchet distance is computed after projecting "
    "the features onto their first fd_dimensions = n / 4 principal axes (fitted on the real reference features; n = "
    "the smallest set compared), since in all dimensions its small-sample bias would dominate. Each real-test floor "
    "uses the same n and projection as the synthetic row above it: compare the two."
)


class FeatureExtractor(nn.Module):
    """A trained :class:`~evaluation.models.FridAdarCNN` as a feature extractor.

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


# ------------------------------------------------------------------------------ distances of features ----


def fd_dimensions(smallest_set: int, num_features: int) -> int:
    """How many principal axes the Fréchet distance keeps: n / 4 (at least 1, at most the feature count)."""
    return int(max(1, min(smallest_set // 4, num_features)))


def principal_projection(reference: np.ndarray, dimensions: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the reference features: (mean (D,), axes (D, dimensions)); project with ``(x - mean) @ axes``.

    Fitted on the real reference only, so the synthetic set and the real-test floor go through one and the
    same projection.
    """
    reference = np.asarray(reference, dtype=np.float64)
    mean = reference.mean(axis=0)
    # rows of vt: principal axes, by decreasing variance (at most min(N, D) of them)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    return mean, vt[:dimensions].T


def frechet_distance(real_features: np.ndarray, other_features: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    FD = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½), covariances with n − 1 (as torchmetrics computes it).
    Biased upwards for small sets, by about d² / n in d dimensions: reduce d first (:func:`principal_projection`).
    """
    if len(real_features) < 2 or len(other_features) < 2:
        return float("nan")
    real = np.asarray(real_features, dtype=np.float64).reshape(len(real_features), -1)
    other = np.asarray(other_features, dtype=np.float64).reshape(len(other_features), -1)
    mean_gap = float(np.sum((real.mean(axis=0) - other.mean(axis=0)) ** 2))
    covariance_real = np.atleast_2d(np.cov(real, rowvar=False))
    covariance_other = np.atleast_2d(np.cov(other, rowvar=False))
    # tr (Σ₁Σ₂)^½ = Σ √λ over the eigenvalues of Σ₁Σ₂ (real and ≥ 0 up to rounding: similar to a PSD matrix)
    cross = np.sqrt(np.linalg.eigvals(covariance_real @ covariance_other).astype(np.complex128)).real.sum()
    return float(mean_gap + np.trace(covariance_real) + np.trace(covariance_other) - 2.0 * cross)


def kernel_inception_distance(
    real_features: np.ndarray, other_features: np.ndarray, *, subsets: int, subset_size: int, seed: int
) -> tuple[float, float]:
    """KID: mean and standard deviation over random subsets of the unbiased polynomial-kernel MMD².

    Bińkowski et al. 2018, "Demystifying MMD GANs": k(x, y) = (x·y / d + 1)³, the unbiased U-statistic
    MMD² per pair of subsets (``subset_size`` capped at both set sizes, drawn without replacement from a
    seeded generator), as torchmetrics' ``KernelInceptionDistance`` computes it.

    Returns:
        (mean, standard deviation over the subsets); NaN for sets of fewer than 2 samples.
    """
    from torchmetrics.image.kid import poly_mmd

    size = min(subset_size, len(real_features), len(other_features))
    if size < 2:
        return float("nan"), float("nan")
    generator = np.random.default_rng(seed)
    real = torch.from_numpy(np.asarray(real_features, dtype=np.float64))
    other = torch.from_numpy(np.asarray(other_features, dtype=np.float64))
    values = []
    for _ in range(subsets):
        real_subset = real[generator.choice(len(real), size, replace=False)]
        other_subset = other[generator.choice(len(other), size, replace=False)]
        values.append(float(poly_mmd(real_subset, other_subset)))
    return float(np.mean(values)), float(np.std(values))


def precision_recall_density_coverage(real_features: np.ndarray, other_features: np.ndarray, k: int = 5) -> dict[str, float]:
    """Naeem et al. 2020 (ICML), "Reliable fidelity and diversity metrics for generative models".

    With B(x, r) the ball around x with radius r = distance to x's k-th nearest neighbour in its own set:
    precision = share of other samples inside some real ball; recall = share of real samples inside some
    ball of the *other* set; density = mean number of real balls containing an other sample, / k;
    coverage = share of real balls containing at least one other sample. Computed by the authors'
    ``prdc`` package; NaN when a set has fewer than k + 2 samples.
    """
    from prdc import compute_prdc

    if len(real_features) < k + 2 or len(other_features) < k + 2:
        return dict.fromkeys(("precision", "recall", "density", "coverage"), float("nan"))
    with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the set sizes
        values = compute_prdc(np.asarray(real_features, np.float64), np.asarray(other_features, np.float64), nearest_k=k)
    return {name: float(values[name]) for name in ("precision", "recall", "density", "coverage")}


def compare(
    real_features: np.ndarray,
    other_features: np.ndarray,
    projection: tuple[np.ndarray, np.ndarray],
    *,
    subsets: int,
    subset_size: int,
    k: int,
    seed: int,
) -> dict[str, Any]:
    """Every fidelity number of ``other`` against ``real`` ((N, D) features), KID first.

    Args:
        real_features: the real reference.
        other_features: the set compared with it (synthetic, or real test for the floor).
        projection: (mean, axes) of :func:`principal_projection`, for the Fréchet distance.
        subsets: KID subsets.
        subset_size: KID subset size (capped at the set sizes).
        k: nearest neighbours of the PRDC balls.
        seed: KID subsets.
    """
    mean, axes = projection
    kid_mean, kid_std = kernel_inception_distance(real_features, other_features, subsets=subsets, subset_size=subset_size, seed=seed)
    values: dict[str, Any] = {
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "frechet_distance": frechet_distance((real_features - mean) @ axes, (other_features - mean) @ axes),
        "fd_dimensions": int(axes.shape[1]),
    }
    values.update(precision_recall_density_coverage(real_features, other_features, k))
    values.update({"n_real": len(real_features), "n_other": len(other_features)})
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
    ``max_samples``; seeded subsamples) and the same Fréchet projection (n / 4 principal axes of the real-train
    features, n the smallest set), so the floor and the synthetic numbers share their small-sample behaviour.

    Args:
        extractor: the feature network.
        real_train: ``{class: images}`` of the real training patients (the reference).
        real_test: ``{class: images}`` of the real test set.
        synthetic: ``{class: images}`` of the synthetic pool.
        max_samples: cap per set.
        subsets: KID subsets.
        subset_size: KID subset size (capped at the set sizes).
        k: nearest neighbours of the PRDC balls.
        seed: subsampling and KID subsets.

    Returns:
        ``{class or "all": {"synthetic": {...}, "real_test_floor": {...}}}``, each with ``kid_mean``,
        ``kid_std``, ``frechet_distance``, ``fd_dimensions``, ``precision``, ``recall``, ``density``,
        ``coverage``, ``n_real``, ``n_other``.
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
        images = (take(real_train[name], max_samples), take(synthetic[name], count), take(real_test[name], count))
        groups[name] = tuple(embed(extractor, part) for part in images)  # type: ignore[assignment]
    if len(groups) > 1:
        groups["all"] = tuple(np.concatenate([group[i] for group in groups.values()]) for i in range(3))  # type: ignore[assignment]
    table = {}
    options = {"subsets": subsets, "subset_size": subset_size, "k": k, "seed": seed}
    for name, (reference, fake, test) in groups.items():
        smallest = min(len(reference), len(fake), len(test))
        # PCA can return at most min(N, D) axes; the n / 4 rule keeps far fewer.
        projection = principal_projection(reference, min(fd_dimensions(smallest, reference.shape[1]), len(reference)))
        table[name] = {
            "synthetic": compare(reference, fake, projection, **options),
            "real_test_floor": compare(reference, test, projection, **options),
        }
    return table
