"""Augmentation efficiency: the ratio of two paired gains with Fieller's interval, undefined on a noise denominator."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.efficiency import efficiency


def test_a_clear_oracle_gain_gives_a_ratio_with_an_interval_around_it() -> None:
    rng = np.random.default_rng(0)
    synthetic = 0.03 + 0.002 * rng.standard_normal(5)
    oracle = 0.06 + 0.002 * rng.standard_normal(5)
    shared = 0.003 * rng.standard_normal(500)
    result = efficiency(synthetic, oracle, synthetic[:, None] + shared, oracle[:, None] + shared, num_patients=80)
    assert result.defined
    assert result.estimate == pytest.approx(synthetic.mean() / oracle.mean())
    assert result.low < result.estimate < result.high
    assert result.low > 0.3 and result.high < 0.75


def test_a_noisy_oracle_gain_leaves_the_efficiency_undefined() -> None:
    rng = np.random.default_rng(1)
    synthetic = 0.02 + 0.01 * rng.standard_normal(5)
    oracle = 0.005 + 0.02 * rng.standard_normal(5)  # its interval includes zero
    shared = 0.01 * rng.standard_normal(500)
    result = efficiency(synthetic, oracle, synthetic[:, None] + shared, oracle[:, None] + 2 * shared, num_patients=80)
    assert not result.defined
    assert result.to_dict()["estimate"] is None and "not distinguishable from zero" in result.reason


def test_fieller_interval_covers_the_true_ratio_at_about_its_nominal_rate() -> None:
    rng = np.random.default_rng(2)
    true_ratio, hits, trials = 0.5, 0, 400
    for _ in range(trials):
        # this test set's draw moves both gains (correlated), and every seed shares it; seeds add their own noise
        test_effect = 0.004 * rng.standard_normal()
        seeds_a = 0.03 + test_effect + 0.01 * rng.standard_normal(5)
        seeds_b = 0.06 + 2 * test_effect + 0.01 * rng.standard_normal(5)
        resampled = 0.004 * rng.standard_normal(300)  # the patient bootstrap's spread around this test set, shared by the seeds
        own = 0.002 * rng.standard_normal((2, 5, 300))  # each seed's own lesion-by-lesion noise under resampling
        result = efficiency(seeds_a, seeds_b, seeds_a[:, None] + resampled + own[0], seeds_b[:, None] + 2 * resampled + own[1])
        hits += result.defined and result.low <= true_ratio <= result.high
    assert 0.92 <= hits / trials <= 0.98
