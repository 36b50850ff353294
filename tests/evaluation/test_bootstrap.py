"""The interval and test code against cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation import bootstrap


def _mean_replicates(values: np.ndarray, plan: bootstrap.BootstrapPlan) -> np.ndarray:
    """(S, N) per-seed per-sample values -> (S, B) replicates of the sample-weighted mean."""
    return np.stack([(plan.sample_weights @ row) / plan.sample_weights.sum(axis=1) for row in values])


def test_interval_of_a_mean_matches_the_normal_theory_interval() -> None:
    # One seed, one sample per patient, x ~ N(3, 2^2): the 95 % interval of the mean is x̄ ± 1.96 s / √n.
    generator = np.random.default_rng(0)
    n = 1000
    values = generator.normal(3.0, 2.0, size=(1, n))
    plan = bootstrap.make_plan(np.arange(n).astype(str), num_seeds=1, resamples=4000, confidence=0.95, seed=1)
    result = bootstrap.estimate(values.mean(axis=1), _mean_replicates(values, plan), plan)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(n)
    assert result.estimate == pytest.approx(values.mean())
    assert result.low == pytest.approx(values.mean() - half_width, abs=0.15 * half_width)
    assert result.high == pytest.approx(values.mean() + half_width, abs=0.15 * half_width)


def test_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    generator = np.random.default_rng(2)
    covered = 0
    repeats = 200
    for repeat in range(repeats):
        values = generator.exponential(1.0, size=(1, 120))  # skewed, true mean 1
        plan = bootstrap.make_plan(np.arange(120).astype(str), 1, 400, 0.95, seed=repeat)
        result = bootstrap.estimate(values.mean(axis=1), _mean_replicates(values, plan), plan)
        covered += result.low <= 1.0 <= result.high
    assert 0.88 <= covered / repeats <= 0.99


def test_patients_not_lesions_are_resampled() -> None:
    # Every patient has 10 identical lesions: the information is that of the 100 patients, so the interval
    # must be as wide as that of 100 independent values (√10 wider than pretending 1 000 independent lesions).
    generator = np.random.default_rng(3)
    per_patient = generator.normal(0.0, 1.0, size=100)
    values = np.repeat(per_patient, 10)[None, :]
    patients = np.repeat(np.arange(100), 10).astype(str)
    plan = bootstrap.make_plan(patients, 1, 4000, 0.95, seed=4)
    result = bootstrap.estimate(values.mean(axis=1), _mean_replicates(values, plan), plan)
    expected = 2 * 1.96 * per_patient.std(ddof=1) / np.sqrt(100)
    assert result.high - result.low == pytest.approx(expected, rel=0.15)


def test_seed_spread_widens_the_interval() -> None:
    # Test-set noise is zero (every sample equal within a seed); seeds differ: the interval is the seeds'.
    seeds = np.array([0.70, 0.75, 0.80, 0.85, 0.90])
    values = np.repeat(seeds[:, None], 50, axis=1)
    plan = bootstrap.make_plan(np.arange(50).astype(str), 5, 2000, 0.95, seed=5)
    result = bootstrap.estimate(seeds, _mean_replicates(values, plan), plan)
    assert result.estimate == pytest.approx(0.80)
    assert result.per_seed == tuple(seeds)
    assert 0.72 < result.low < 0.77 and 0.83 < result.high < 0.88


def test_paired_difference_of_identical_arms_has_p_value_one() -> None:
    generator = np.random.default_rng(6)
    values = generator.uniform(size=(3, 200))
    plan = bootstrap.make_plan(np.arange(200).astype(str), 3, 500, 0.95, seed=7)
    replicates = _mean_replicates(values, plan)
    result = bootstrap.paired_difference(values.mean(axis=1), replicates, values.mean(axis=1), replicates, plan)
    assert result.estimate == 0.0 and result.low == 0.0 and result.high == 0.0
    assert result.p_value == 1.0


def test_paired_difference_of_clearly_different_arms_is_significant() -> None:
    generator = np.random.default_rng(8)
    base = generator.uniform(size=(3, 300))
    better = base + generator.normal(0.1, 0.05, size=base.shape)  # +0.1 on every sample, every seed
    plan = bootstrap.make_plan(np.arange(300).astype(str), 3, 999, 0.95, seed=9)
    result = bootstrap.paired_difference(better.mean(axis=1), _mean_replicates(better, plan), base.mean(axis=1), _mean_replicates(base, plan), plan)
    assert result.estimate == pytest.approx(0.1, abs=0.01)
    assert 0.09 < result.low < result.estimate < result.high < 0.11
    assert result.p_value == pytest.approx(2 / 1000)  # the smallest p-value B = 999 replicates can give


def test_pairing_cancels_what_arms_share() -> None:
    # Two arms that differ by a constant 0.02 on top of large shared test-set variation: unpaired intervals
    # overlap, the paired difference is exactly 0.02.
    generator = np.random.default_rng(10)
    shared = generator.normal(0.0, 1.0, size=(2, 100))
    plan = bootstrap.make_plan(np.arange(100).astype(str), 2, 500, 0.95, seed=11)
    a, b = shared + 0.02, shared
    difference = bootstrap.paired_difference(a.mean(axis=1), _mean_replicates(a, plan), b.mean(axis=1), _mean_replicates(b, plan), plan)
    assert difference.low == pytest.approx(0.02) and difference.high == pytest.approx(0.02)
    assert difference.p_value < 0.01
    alone = bootstrap.estimate(b.mean(axis=1), _mean_replicates(b, plan), plan)
    assert alone.high - alone.low > 0.2


def test_same_seed_same_plan() -> None:
    patients = np.array(["a", "a", "b", "c"])
    first, second = bootstrap.make_plan(patients, 2, 50, 0.9, seed=3), bootstrap.make_plan(patients, 2, 50, 0.9, seed=3)
    np.testing.assert_array_equal(first.sample_weights, second.sample_weights)
    np.testing.assert_array_equal(first.seed_counts, second.seed_counts)
    # samples of one patient always share a weight; each replicate draws as many patients as there are
    assert (first.sample_weights[:, 0] == first.sample_weights[:, 1]).all()
    assert (first.sample_weights[:, [0, 2, 3]].sum(axis=1) == 3).all()
    assert (first.seed_counts.sum(axis=1) == 2).all()
