"""Confidence intervals and paired tests: a two-level (hierarchical) bootstrap over seeds and test patients.

An arm's score varies for two reasons: which patients happen to be in the test set, and which seed the
network trained with. Each bootstrap replicate b therefore resamples both levels (Davison & Hinkley 1997,
§3.8; Saravanan et al. 2020, "Application of the hierarchical bootstrap to multi-level data in
neuroscience"):

- the test *patients* with replacement (a cluster bootstrap: lesions of one patient are not independent,
  so resampling lesions would understate the uncertainty), which gives every test sample a weight equal to
  how often its patient was drawn; and
- the S seeds with replacement, giving seed s a count c_bs (the counts sum to S).

The replicate of a metric is sum_s c_bs m_s(w_b) / S, where m_s(w_b) is seed s's metric on the reweighted
test set. The point estimate is the mean over seeds on the full test set; the (1 - alpha) interval is the
percentile interval of the replicates.

Paired differences between two arms reuse the *same* weights and seed counts for both (same seeds, same test
samples), so what the two arms share cancels: the replicate of the difference is
sum_s c_bs (m^A_s(w_b) - m^B_s(w_b)) / S. Its two-sided p-value inverts the percentile interval: the
smallest alpha at which the (1 - alpha) interval excludes 0, p = min(1, 2 min(P*(D <= 0), P*(D >= 0))), with
the (count + 1) / (B + 1) correction so that p is never 0 from finitely many replicates. So p < 0.05 exactly
when the 95 % interval excludes 0, and identical arms give p = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BootstrapPlan:
    """The resampling shared by every arm of one task.

    Attributes:
        sample_weights: (B, N) how often each test sample's patient was drawn in replicate b.
        seed_counts: (B, S) how often each seed was drawn in replicate b.
        confidence: e.g. 0.95.
    """

    sample_weights: np.ndarray
    seed_counts: np.ndarray
    confidence: float

    @property
    def resamples(self) -> int:
        return int(self.sample_weights.shape[0])

    @property
    def num_seeds(self) -> int:
        return int(self.seed_counts.shape[1])


def patient_weights(patient_ids: np.ndarray, resamples: int, generator: np.random.Generator) -> np.ndarray:
    """Cluster-bootstrap weights: draw the P patients P times with replacement, ``resamples`` times.

    Args:
        patient_ids: (N,) patient of each test sample.
        resamples: B.
        generator: the random source.

    Returns:
        (B, N) float64: the number of times sample n's patient was drawn in replicate b.
    """
    patients, inverse = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    count = patients.size
    draws = generator.integers(0, count, size=(resamples, count))
    flat = (draws + np.arange(resamples)[:, None] * count).ravel()
    per_patient = np.bincount(flat, minlength=resamples * count).reshape(resamples, count)
    return per_patient[:, inverse].astype(np.float64)


def make_plan(patient_ids: np.ndarray, num_seeds: int, resamples: int, confidence: float, seed: int) -> BootstrapPlan:
    """Draw the test-patient weights and seed counts of every replicate (seeded).

    Args:
        patient_ids: (N,) patient of each test sample.
        num_seeds: S, the seeds each arm was trained with.
        resamples: B.
        confidence: the interval's coverage, e.g. 0.95.
        seed: the bootstrap's seed.
    """
    generator = np.random.default_rng(np.random.SeedSequence([seed, 0xB007]))
    weights = patient_weights(patient_ids, resamples, generator)
    counts = generator.multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), size=resamples).astype(np.float64)
    return BootstrapPlan(weights, counts, confidence)


@dataclass(frozen=True)
class Estimate:
    """A metric of one arm: mean over seeds with its confidence interval."""

    estimate: float
    low: float
    high: float
    per_seed: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": _clean(self.estimate), "low": _clean(self.low), "high": _clean(self.high), "per_seed": [_clean(v) for v in self.per_seed]}


@dataclass(frozen=True)
class Difference:
    """A paired difference between two arms (A - B) with its interval and two-sided p-value."""

    estimate: float
    low: float
    high: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": _clean(self.estimate), "low": _clean(self.low), "high": _clean(self.high), "p_value": _clean(self.p_value)}


def _clean(value: float) -> float | None:
    """JSON has no NaN: undefined values become null."""
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def _combine(replicates: np.ndarray, plan: BootstrapPlan) -> np.ndarray:
    """(S, B) per-seed replicates -> (B,) replicates of the seed mean under resampled seeds."""
    per_seed = np.asarray(replicates, dtype=np.float64)
    if per_seed.shape != (plan.num_seeds, plan.resamples):
        raise ValueError(f"replicates must be (seeds, resamples) = {(plan.num_seeds, plan.resamples)}, got {per_seed.shape}")
    # A seed whose metric is undefined on a replicate (a class drawn zero times) drops out of that replicate.
    valid = ~np.isnan(per_seed.T)
    counts = plan.seed_counts * valid
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (counts * np.where(valid, per_seed.T, 0.0)).sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def estimate(point: np.ndarray, replicates: np.ndarray, plan: BootstrapPlan) -> Estimate:
    """An arm's metric with its hierarchical-bootstrap interval.

    Args:
        point: (S,) the metric of each seed on the full test set.
        replicates: (S, B) the metric of each seed under each replicate's test weights.
        plan: the shared resampling.
    """
    point = np.asarray(point, dtype=np.float64)
    finite = point[np.isfinite(point)]
    low, high = _interval(_combine(replicates, plan), plan.confidence)
    return Estimate(float(finite.mean()) if finite.size else float("nan"), low, high, tuple(float(v) for v in point))


def paired_difference(
    point_a: np.ndarray, replicates_a: np.ndarray, point_b: np.ndarray, replicates_b: np.ndarray, plan: BootstrapPlan
) -> Difference:
    """Arm A minus arm B, paired by seed and test sample.

    Args:
        point_a: (S,) arm A's metric per seed on the full test set.
        replicates_a: (S, B) arm A's replicates.
        point_b: (S,) arm B's metric per seed (same seeds, same order).
        replicates_b: (S, B) arm B's replicates (same plan).
        plan: the shared resampling.

    Returns:
        The mean paired difference, its percentile interval and its two-sided p-value.
    """
    differences = _combine(np.asarray(replicates_a) - np.asarray(replicates_b), plan)
    differences = differences[np.isfinite(differences)]
    point = np.asarray(point_a, dtype=np.float64) - np.asarray(point_b, dtype=np.float64)
    point = point[np.isfinite(point)]
    if differences.size == 0 or point.size == 0:
        return Difference(float("nan"), float("nan"), float("nan"), float("nan"))
    low, high = _interval(differences, plan.confidence)
    count = differences.size
    at_most_zero = (np.count_nonzero(differences <= 0) + 1) / (count + 1)
    at_least_zero = (np.count_nonzero(differences >= 0) + 1) / (count + 1)
    p_value = min(1.0, 2.0 * min(at_most_zero, at_least_zero))
    return Difference(float(point.mean()), low, high, p_value)
