"""Fidelity numbers that survive small sets: KID and the Fréchet distance agree with torchmetrics, the
reduced Fréchet distance loses its small-sample bias but not its sensitivity, PRDC gives hand-computed values,
and the table puts KID first with a floor that shares the synthetic rows' projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from evaluation import fidelity


class _Identity(nn.Module):
    """Features = the inputs (torchmetrics' metrics with a custom extractor)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs


class _Flatten(nn.Module):
    """A stand-in for the fidelity CNN: its embedding is the flattened image."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def _gaussian(generator: np.random.Generator, count: int, scale: np.ndarray, shift: float = 0.0) -> np.ndarray:
    return generator.normal(size=(count, scale.size)) * scale + shift * scale


def _power_law(dimensions: int) -> np.ndarray:
    """Per-axis standard deviations, variance ∝ 1 / rank (CNN features are far from isotropic), mean variance 1."""
    scale = np.arange(1, dimensions + 1) ** -0.5
    return scale * np.sqrt(dimensions / np.sum(scale**2))


def test_frechet_distance_and_kid_equal_torchmetrics() -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    generator = np.random.default_rng(0)
    real, other = generator.normal(size=(40, 6)), generator.normal(size=(30, 6)) + 0.3
    reference = FrechetInceptionDistance(feature=_Identity(6), normalize=False)
    reference.update(torch.from_numpy(real).float(), real=True)
    reference.update(torch.from_numpy(other).float(), real=False)
    assert fidelity.frechet_distance(real, other) == pytest.approx(float(reference.compute()), rel=1e-5)
    # subsets of the whole sets: every subset is a permutation, so the mean is the full-set unbiased MMD²
    with pytest.warns(UserWarning):
        kid = KernelInceptionDistance(feature=_Identity(6), subsets=3, subset_size=30, normalize=False)
    kid.update(torch.from_numpy(real[:30]).float(), real=True)
    kid.update(torch.from_numpy(other).float(), real=False)
    mean, std = fidelity.kernel_inception_distance(real[:30], other, subsets=3, subset_size=30, seed=0)
    assert mean == pytest.approx(float(kid.compute()[0]), rel=1e-5)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_at_small_n_and_grows_with_a_shift() -> None:
    generator = np.random.default_rng(1)
    scale = _power_law(128)
    same = [fidelity.kernel_inception_distance(_gaussian(generator, 60, scale), _gaussian(generator, 60, scale), subsets=20, subset_size=50, seed=s)[0]
            for s in range(20)]
    shifted = fidelity.kernel_inception_distance(_gaussian(generator, 60, scale), _gaussian(generator, 60, scale, 1.0), subsets=20, subset_size=50, seed=0)[0]
    spread = np.std(same) / np.sqrt(len(same))
    assert abs(np.mean(same)) < 3 * spread  # mean ≈ 0: no small-sample bias
    assert shifted > np.mean(same) + 20 * np.std(same)


def test_reduced_frechet_distance_loses_its_small_sample_bias_not_its_sensitivity() -> None:
    generator = np.random.default_rng(2)
    scale = _power_law(128)
    dimensions = fidelity.fd_dimensions(60, 128)
    assert dimensions == 15
    full, reduced, shifted = [], [], {0.5: [], 1.0: [], 2.0: []}
    for _ in range(5):
        reference, other = _gaussian(generator, 60, scale), _gaussian(generator, 60, scale)
        mean, axes = fidelity.principal_projection(reference, dimensions)

        def project(features: np.ndarray, mean: np.ndarray = mean, axes: np.ndarray = axes) -> np.ndarray:
            return (features - mean) @ axes

        full.append(fidelity.frechet_distance(reference, other))
        reduced.append(fidelity.frechet_distance(project(reference), project(other)))
        for shift, values in shifted.items():
            values.append(fidelity.frechet_distance(project(reference), project(_gaussian(generator, 60, scale, shift))))
    # Two samples of the same distribution: ~66 apart in all 128 dimensions, ~12 in 15.
    assert np.mean(full) > 50
    assert np.mean(reduced) < 0.25 * np.mean(full)
    # A mean shift still shows, and more so the larger it is.
    means = [np.mean(values) for values in shifted.values()]
    assert np.mean(reduced) < means[0] < means[1] < means[2]
    assert means[1] > 4 * np.mean(reduced)


def test_prdc_of_hand_checkable_points() -> None:
    # k = 1: each real point's ball reaches its nearest real neighbour, radii 2, 2, 8; fake radii 0.4, 0.4, 18.6.
    real = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0]])
    fake = np.array([[1.0, 0.0], [1.4, 0.0], [20.0, 0.0]])
    values = fidelity.precision_recall_density_coverage(real, fake, k=1)
    assert values["precision"] == pytest.approx(2 / 3)  # (20, 0) lies in no real ball (10 > 8)
    assert values["recall"] == pytest.approx(2 / 3)  # (0, 0) lies in no fake ball; the outlier's wide ball covers the rest
    assert values["density"] == pytest.approx(4 / 3)  # (1, 0) and (1.4, 0) each lie in 2 real balls, (20, 0) in none
    assert values["coverage"] == pytest.approx(2 / 3)  # the ball of (10, 0) holds no fake point (8.6 > 8)
    too_few = fidelity.precision_recall_density_coverage(real, fake, k=5)
    assert all(np.isnan(v) for v in too_few.values())


def test_table_kid_first_and_a_floor_through_the_same_projection() -> None:
    generator = np.random.default_rng(3)
    scale = _power_law(16).astype(np.float32)

    def images(count: int, shift: float = 0.0) -> np.ndarray:
        return _gaussian(generator, count, scale, shift).astype(np.float32).reshape(count, 1, 4, 4)

    extractor = fidelity.FeatureExtractor(_Flatten(16))
    real_train = {"cyst": images(60), "metastasis": images(64)}
    real_test = {"cyst": images(200), "metastasis": images(200)}
    synthetic = {"cyst": images(200, 1.5), "metastasis": images(200)}
    table = fidelity.fidelity_table(extractor, real_train, real_test, synthetic, max_samples=80, subsets=10, subset_size=50, k=5, seed=0)
    assert list(table) == ["cyst", "metastasis", "all"]
    for name, pair in table.items():
        synthetic_row, floor = pair["synthetic"], pair["real_test_floor"]
        assert list(synthetic_row)[:2] == ["kid_mean", "kid_std"] and list(synthetic_row) == list(floor)
        smallest = min(synthetic_row["n_real"], synthetic_row["n_other"])
        assert synthetic_row["fd_dimensions"] == floor["fd_dimensions"] == min(smallest // 4, 16), name
        assert synthetic_row["n_other"] == floor["n_other"] == (160 if name == "all" else 80)
    assert table["cyst"]["synthetic"]["kid_mean"] > 10 * abs(table["cyst"]["real_test_floor"]["kid_mean"])
    assert table["cyst"]["synthetic"]["frechet_distance"] > 3 * table["cyst"]["real_test_floor"]["frechet_distance"]
    assert table["cyst"]["synthetic"]["precision"] < table["metastasis"]["synthetic"]["precision"]
