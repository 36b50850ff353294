"""Augmentation efficiency: how much of the possible gain a generator captures.

On a simulated cohort the harness can add *real* lesions of new virtual patients (the oracle arm) at the
same counts as the synthetic arm: what perfect synthetic data would give. The efficiency of a generator at
ratio k is

    E = Δ_syn / Δ_oracle,   Δ_syn = m(classic+synthetic xk) - m(classic),  Δ_oracle = m(classic+oracle xk) - m(classic),

both paired by seed and test sample. Its interval is Fieller's (Fieller 1954, "Some problems in interval
estimation"): the set of ratios ρ for which Δ_syn - ρ Δ_oracle is compatible with zero,

    (a - ρ b)^2 <= t^2 (V_aa - 2 ρ V_ab + ρ^2 V_bb),

with a, b the mean deltas over seeds and V their covariance: the seed-to-seed covariance of the per-seed
deltas over S, plus the test-patient covariance the seeds share (the bootstrap covariance between different
seeds' replicates, as in :mod:`evaluation.bootstrap`; the same resamples for both gains).
The t quantile has Welch-Satterthwaite degrees of freedom from the pivot's two variance parts at the
estimated ratio (S - 1 for the seed part, effectively infinite for the bootstrap part). When the oracle's own gain is not
distinguishable from zero (t^2 V_bb >= b^2) the interval is unbounded and the efficiency is reported as
undefined: a ratio of noise says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Efficiency:
    """Δ_syn / Δ_oracle with its Fieller interval; ``defined`` is False when the oracle gain is not significant."""

    estimate: float
    low: float
    high: float
    defined: bool
    synthetic_delta: float
    oracle_delta: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        def clean(value: float) -> float | None:
            return round(float(value), 6) if np.isfinite(value) else None

        return {
            "estimate": clean(self.estimate) if self.defined else None,
            "low": clean(self.low) if self.defined else None,
            "high": clean(self.high) if self.defined else None,
            "defined": self.defined,
            "synthetic_delta": clean(self.synthetic_delta),
            "oracle_delta": clean(self.oracle_delta),
            "reason": self.reason,
        }


def _shared_covariance(first: np.ndarray, second: np.ndarray) -> float:
    """Mean covariance over replicates between *different* seeds of two (S, B) replicate sets: the test-patient
    variance the seeds share (each seed's own lesion-by-lesion noise is already in the seed spread)."""
    seeds = first.shape[0]
    a = first - first.mean(axis=1, keepdims=True)
    b = second - second.mean(axis=1, keepdims=True)
    cross = (a @ b.T) / max(first.shape[1] - 1, 1)
    if seeds == 1:
        return float(cross[0, 0])
    return float(cross[~np.eye(seeds, dtype=bool)].mean())


def efficiency(
    synthetic_per_seed: np.ndarray,
    oracle_per_seed: np.ndarray,
    synthetic_replicates: np.ndarray,
    oracle_replicates: np.ndarray,
    confidence: float = 0.95,
    num_patients: int = 0,
) -> Efficiency:
    """Fieller interval of the ratio of two paired gains.

    Args:
        synthetic_per_seed: (S,) Δ_syn of each seed on the full test set.
        oracle_per_seed: (S,) Δ_oracle of each seed (same seeds).
        synthetic_replicates: (S, B) each seed's Δ_syn under each test-patient resample.
        oracle_replicates: (S, B) each seed's Δ_oracle under the same resamples.
        confidence: e.g. 0.95.
        num_patients: test patients P (the bootstrap variance is scaled by P / (P - 1)); 0: no correction.
    """
    from scipy import stats

    a_seeds = np.asarray(synthetic_per_seed, dtype=np.float64)
    b_seeds = np.asarray(oracle_per_seed, dtype=np.float64)
    a_reps = np.asarray(synthetic_replicates, dtype=np.float64)
    b_reps = np.asarray(oracle_replicates, dtype=np.float64)
    keep = np.isfinite(a_seeds) & np.isfinite(b_seeds)
    a_seeds, b_seeds, a_reps, b_reps = a_seeds[keep], b_seeds[keep], a_reps[keep], b_reps[keep]
    columns = np.isfinite(a_reps).all(axis=0) & np.isfinite(b_reps).all(axis=0)
    a_reps, b_reps = a_reps[:, columns], b_reps[:, columns]
    seeds = a_seeds.size
    if seeds == 0:
        return Efficiency(float("nan"), float("nan"), float("nan"), False, float("nan"), float("nan"), "no seed defines both gains")
    a, b = float(a_seeds.mean()), float(b_seeds.mean())
    scale = num_patients / (num_patients - 1) if num_patients > 1 else 1.0
    cross = 0.5 * (_shared_covariance(a_reps, b_reps) + _shared_covariance(b_reps, a_reps))
    variances = (max(_shared_covariance(a_reps, a_reps), 0.0), max(_shared_covariance(b_reps, b_reps), 0.0))
    patient = scale * np.array([[variances[0], cross], [cross, variances[1]]])
    seed = np.cov(np.stack([a_seeds, b_seeds])) / seeds if seeds > 1 else np.zeros((2, 2))
    covariance = seed + patient
    v_aa, v_ab, v_bb = covariance[0, 0], covariance[0, 1], covariance[1, 1]
    ratio = a / b if b != 0 else float("nan")
    # Welch-Satterthwaite for the pivot a - ρ b at ρ = a / b: its seed part has S - 1 degrees of freedom,
    # its test-patient part effectively infinitely many.
    weights = np.array([1.0, -ratio]) if np.isfinite(ratio) else np.array([0.0, 1.0])
    seed_part, patient_part = float(weights @ seed @ weights), float(weights @ patient @ weights)
    df = (seed_part + patient_part) ** 2 / (seed_part**2 / (seeds - 1)) if seeds > 1 and seed_part > 0 else np.inf
    t = float(stats.t.ppf(0.5 + confidence / 2, df)) if np.isfinite(df) else float(stats.norm.ppf(0.5 + confidence / 2))
    g = t * t * v_bb / (b * b) if b != 0 else np.inf
    if not g < 1.0:
        return Efficiency(ratio, float("nan"), float("nan"), False, a, b, "the oracle's own gain is not distinguishable from zero")
    discriminant = v_aa - 2 * ratio * v_ab + ratio * ratio * v_bb - g * (v_aa - v_ab * v_ab / v_bb)
    centre = ratio - g * v_ab / v_bb
    half = t / abs(b) * np.sqrt(max(discriminant, 0.0))
    low, high = (centre - half) / (1 - g), (centre + half) / (1 - g)
    return Efficiency(ratio, float(low), float(high), True, a, b)
