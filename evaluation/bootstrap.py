"""Confidence intervals and paired tests: a t-interval over seeds combined with a test-patient bootstrap.

What the interval is about. An arm is trained with S seeds and each network is scored once on one test set.
The interval is *conditional on one training set, one train/validation split and one synthetic-data
generator* (one trained GAN and the samples drawn from it): it covers the arm's mean score over training seeds
and over test patients from the same population, not the variation that re-drawing the training patients, the
split or retraining the generator would add (Bouthillier et al. 2021, "Accounting for variance in machine
learning benchmarks", MLSys); a methods section should say so.

Construction. Seed s scores m_s = mu + u_s + v + e_s: u_s its own training noise (initial weights, batch
order, augmentation), v the part of the test-set draw that every seed shares (which patients happen to be
tested) and e_s the part of the test-set draw specific to seed s (seeds err on different lesions). The
estimate is the mean over seeds on the full test set, m = (1/S) sum_s m_s, and
Var(m) = Var(u + e) / S + Var(v). The two terms are estimated separately:

- seed level: the sample variance s^2 of the m_s on the fixed test set estimates Var(u + e), so the first term
  is a = s^2 / S with S - 1 degrees of freedom. It cannot see v: every seed is tested on the same patients.
- test-patient level: a cluster bootstrap over test *patients* (lesions of one patient are not independent;
  Davison & Hinkley 1997, §3.8; Field & Welsh 2007) gives replicates m_s(w_b) of every seed's metric. The
  shared term is their covariance *between* two different seeds, c = mean over pairs s != t of
  Cov_b(m_s(w_b), m_t(w_b)), times P / (P - 1) for the plug-in bias of P patients, clipped at 0: e_s is
  independent across seeds and drops out of it. (The bootstrap variance of the seed *mean* would hold e a
  second time, on top of s^2, and widen the interval by up to sqrt(2) where seeds disagree lesion by lesion.)
- interval: m ± t_{nu, 1 - alpha/2} sqrt(a + c), with Welch-Satterthwaite degrees of freedom
  nu = (a + c)^2 / (a^2 / (S - 1) + c^2 / nu_c) (Satterthwaite 1946; Welch 1947), nu_c the precision of c: that
  of a variance from P patients and B replicates, lowered where the seeds' own parts cross it (the formula is
  in ``_t_interval``). nu = S - 1 when the seeds dominate (the t-interval of S values) and tends to a normal
  interval when the shared test-set term dominates.

Checked by simulation (the helpers in ``tests/evaluation/test_bootstrap.py``: 5 seeds, 40 patients with 1-3
samples, null paired differences, 10 x 1 000 experiments per regime): type-I error 0.053-0.054 at alpha = 0.05
whether seeds, test patients or seed-by-lesion noise dominate, arm coverage 0.943-0.948. The construction it
replaced, a percentile bootstrap that also resampled the S = 5 seed values, is a plug-in interval of 5 values
with a z-type width: it rejected 0.11 where the seeds dominate. With fewer seeds the degrees of freedom rest on
fewer values and the approximation drifts (3 seeds: 0.03-0.08 depending on the regime; 2 seeds: up to 0.12):
use 5 seeds or more.

Paired differences between arms (A - B) apply the same to the per-seed differences d_s = m^A_s - m^B_s (arms
are paired by seed) and to the replicate differences m^A_s(w_b) - m^B_s(w_b) (the *same* patient weights for
both arms), so what the arms share cancels. The two-sided p-value comes from the same t statistic,
p = 2 P(T_nu > |d| / sqrt(a + c)): p < alpha exactly when the (1 - alpha) interval excludes 0, and identical
arms give p = 1.

One seed (S = 1): there is no seed term. The interval falls back to the patient bootstrap alone (the
bootstrap variance of that seed's metric, nu = 1 / (1 / (P - 1) + 1 / (B - 1))), is conditional on that
seed's training run, and says so: ``seed_level`` is ``"none"`` (and ``to_dict`` carries it),
``"studentised"`` otherwise.

Undefined values: a seed whose metric is undefined on the full test set is left out; a seed whose metric is
undefined on a replicate (a class drawn zero times) drops out of that replicate (each covariance is taken over
the replicates on which both seeds are defined).

References: B. L. Welch (1947), "The generalization of 'Student's' problem when several different population
variances are involved", Biometrika 34; F. E. Satterthwaite (1946), "An approximate distribution of estimates
of variance components", Biometrics Bulletin 2; X. Bouthillier et al. (2021), "Accounting for variance in
machine learning benchmarks", MLSys; A. C. Davison & D. V. Hinkley (1997), "Bootstrap methods and their
application", §3.8; C. A. Field & A. H. Welsh (2007), "Bootstrapping clustered data", JRSS B 69.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import special

SeedLevel = Literal["studentised", "none"]


@dataclass(frozen=True)
class BootstrapPlan:
    """The test-patient resampling shared by every arm of one task.

    Attributes:
        sample_weights: (B, N) how often each test sample's patient was drawn in replicate b.
        num_seeds: S, the seeds each arm was trained with.
        num_patients: P, the test patients (the patient level's degrees of freedom are P - 1).
        confidence: e.g. 0.95.
    """

    sample_weights: np.ndarray
    num_seeds: int
    num_patients: int
    confidence: float

    @property
    def resamples(self) -> int:
        return int(self.sample_weights.shape[0])


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
    """Draw the test-patient weights of every replicate (seeded).

    Args:
        patient_ids: (N,) patient of each test sample.
        num_seeds: S, the seeds each arm was trained with.
        resamples: B.
        confidence: the interval's coverage, e.g. 0.95.
        seed: the bootstrap's seed.
    """
    if num_seeds < 1:
        raise ValueError(f"num_seeds must be >= 1, got {num_seeds}")
    generator = np.random.default_rng(np.random.SeedSequence([seed, 0xB007]))
    weights = patient_weights(patient_ids, resamples, generator)
    num_patients = int(np.unique(np.asarray(patient_ids).astype(str)).size)
    return BootstrapPlan(weights, num_seeds, num_patients, confidence)


@dataclass(frozen=True)
class Estimate:
    """A metric of one arm: mean over seeds with its confidence interval.

    ``standard_error`` is sqrt(a + c) of the module docstring, ``degrees_of_freedom`` the t quantile's nu
    (inf: a normal interval) and ``seed_level`` says whether the seed term is in (``"none"`` with one seed).
    """

    estimate: float
    low: float
    high: float
    per_seed: tuple[float, ...]
    standard_error: float = float("nan")
    degrees_of_freedom: float = float("nan")
    seed_level: SeedLevel = "studentised"

    def to_dict(self) -> dict[str, Any]:
        result = {"estimate": _clean(self.estimate), "low": _clean(self.low), "high": _clean(self.high), "per_seed": [_clean(v) for v in self.per_seed]}
        return _flag_seed_level(result, self.seed_level)


@dataclass(frozen=True)
class Difference:
    """A paired difference between two arms (A - B) with its interval and two-sided p-value."""

    estimate: float
    low: float
    high: float
    p_value: float
    standard_error: float = float("nan")
    degrees_of_freedom: float = float("nan")
    seed_level: SeedLevel = "studentised"

    def to_dict(self) -> dict[str, Any]:
        result = {"estimate": _clean(self.estimate), "low": _clean(self.low), "high": _clean(self.high), "p_value": _clean(self.p_value)}
        return _flag_seed_level(result, self.seed_level)


def _clean(value: float) -> float | None:
    """JSON has no NaN: undefined values become null."""
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def _flag_seed_level(result: dict[str, Any], seed_level: SeedLevel) -> dict[str, Any]:
    """Only the fallback is flagged, so the usual record keeps its keys."""
    return {**result, "seed_level": seed_level} if seed_level == "none" else result


@dataclass(frozen=True)
class _TInterval:
    """The mean over seeds, its standard error and the degrees of freedom of its t quantile."""

    mean: float
    standard_error: float
    degrees_of_freedom: float
    seed_level: SeedLevel

    def bounds(self, confidence: float) -> tuple[float, float]:
        if not np.isfinite(self.standard_error):
            return float("nan"), float("nan")
        # special.stdtrit / stdtr are scipy.stats.t's ppf and cdf without its per-call overhead
        half_width = float(special.stdtrit(self.degrees_of_freedom, 0.5 + confidence / 2)) * self.standard_error
        return self.mean - half_width, self.mean + half_width

    def p_value(self) -> float:
        """Two-sided, against a true value of 0."""
        if not np.isfinite(self.standard_error):
            return float("nan")
        if self.standard_error == 0.0:
            return 1.0 if self.mean == 0.0 else 0.0
        return float(min(1.0, 2.0 * special.stdtr(self.degrees_of_freedom, -abs(self.mean) / self.standard_error)))


def _t_interval(point: np.ndarray, replicates: np.ndarray, plan: BootstrapPlan) -> _TInterval:
    """Seed term a = s^2 / S and shared test-set term c, combined by Welch-Satterthwaite (module docstring).

    Args:
        point: (S,) per-seed metric on the full test set.
        replicates: (S, B) per-seed metric under each replicate's patient weights.
        plan: the shared resampling.
    """
    point = np.asarray(point, dtype=np.float64)
    replicates = np.asarray(replicates, dtype=np.float64)
    if point.shape != (plan.num_seeds,) or replicates.shape != (plan.num_seeds, plan.resamples):
        raise ValueError(
            f"point must be (seeds,) = {(plan.num_seeds,)} and replicates (seeds, resamples) = {(plan.num_seeds, plan.resamples)}, "
            f"got {point.shape} and {replicates.shape}"
        )
    defined = np.isfinite(point)
    point, replicates = point[defined], replicates[defined]
    seeds = point.size
    if seeds == 0:
        return _TInterval(float("nan"), float("nan"), float("nan"), "studentised" if plan.num_seeds > 1 else "none")
    mean = float(point.mean())
    # P / (P - 1): the plug-in bootstrap variance of P patients is biased low by (P - 1) / P.
    patient_dof, resample_dof = max(plan.num_patients - 1, 1), max(plan.resamples - 1, 1)
    small_sample = plan.num_patients / patient_dof
    covariance = _replicate_covariance(replicates) * small_sample
    diagonal = np.diag(covariance)
    diagonal = diagonal[np.isfinite(diagonal)]
    if seeds == 1:
        if diagonal.size == 0:
            return _TInterval(mean, float("nan"), float("nan"), "none")
        variance = float(diagonal[0])
        # a variance from P patients and B replicates: nu = 1 / (1 / (P - 1) + 1 / (B - 1))
        dof = 1.0 / (1.0 / patient_dof + 1.0 / resample_dof)
        return _TInterval(mean, float(np.sqrt(variance)), dof if variance > 0 else float("inf"), "none")
    seed_term = float(point.var(ddof=1)) / seeds
    between = covariance[~np.eye(seeds, dtype=bool)]
    between = between[np.isfinite(between)]
    shared_term = max(float(between.mean()), 0.0) if between.size else 0.0
    variance = seed_term + shared_term
    if variance == 0.0:
        return _TInterval(mean, 0.0, float("inf"), "studentised")
    # How noisy the shared term is, for the degrees of freedom. c is a covariance from P patients and B
    # replicates, the mean over seed pairs of products (v + e_s)(v + e_t): v shared (variance c), e_s the seed's
    # own part (variance r = diagonal - c). For Gaussian terms its variance is
    # 2 (c^2 + 2 c r / S + r^2 / (S (S - 1))) (1 / (P - 1) + 1 / (B - 1)). The first two parts count: with c
    # taken as exact the test was liberal (type-I 0.06-0.07 at alpha = 0.05, simulated); the r^2 part, noise of
    # the products e_s e_t that is symmetric about 0, is left out: with it the test was conservative where seeds
    # disagree lesion by lesion (0.04 with 5 seeds, 0.02 with 3).
    own = max(float(diagonal.mean()) - shared_term, 0.0) if diagonal.size else 0.0
    shared_noise = 2.0 * (shared_term**2 + 2.0 * shared_term * own / seeds) * (1.0 / patient_dof + 1.0 / resample_dof)
    seed_noise = 2.0 * seed_term**2 / (seeds - 1)  # s^2 / S has S - 1 degrees of freedom
    # Welch-Satterthwaite: nu = 2 (a + c)^2 / (Var(a) + Var(c)), i.e. (a + c)^2 / (a^2 / nu_a + c^2 / nu_c).
    dof = 2.0 * variance**2 / (seed_noise + shared_noise)
    return _TInterval(mean, float(np.sqrt(variance)), float(dof), "studentised")


def _replicate_covariance(replicates: np.ndarray) -> np.ndarray:
    """(S, B) replicates -> (S, S) covariance over replicates, each pair over the replicates both are defined on."""
    defined = np.isfinite(replicates)
    if defined.all():
        deviations = replicates - replicates.mean(axis=1, keepdims=True)
        return np.asarray((deviations @ deviations.T) / max(replicates.shape[1] - 1, 1))
    counts = defined.sum(axis=1, keepdims=True)
    centre = np.where(defined, replicates, 0.0).sum(axis=1, keepdims=True) / np.maximum(counts, 1)
    deviations = np.where(defined, replicates - centre, 0.0)
    pairs = defined.astype(np.float64) @ defined.T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 1, (deviations @ deviations.T) / (pairs - 1), np.nan)


def estimate(point: np.ndarray, replicates: np.ndarray, plan: BootstrapPlan) -> Estimate:
    """An arm's metric: mean over seeds with its t-interval (seeds) combined with the patient bootstrap.

    Args:
        point: (S,) the metric of each seed on the full test set.
        replicates: (S, B) the metric of each seed under each replicate's patient weights.
        plan: the shared resampling.

    Returns:
        The mean over seeds (seeds with an undefined metric left out), its interval and the per-seed values.
    """
    interval = _t_interval(point, replicates, plan)
    low, high = interval.bounds(plan.confidence)
    per_seed = tuple(float(v) for v in np.asarray(point, dtype=np.float64))
    return Estimate(interval.mean, low, high, per_seed, interval.standard_error, interval.degrees_of_freedom, interval.seed_level)


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
        The mean paired difference, its interval and its two-sided p-value (from the same t statistic).
    """
    point = np.asarray(point_a, dtype=np.float64) - np.asarray(point_b, dtype=np.float64)
    replicates = np.asarray(replicates_a, dtype=np.float64) - np.asarray(replicates_b, dtype=np.float64)
    interval = _t_interval(point, replicates, plan)
    low, high = interval.bounds(plan.confidence)
    return Difference(interval.mean, low, high, interval.p_value(), interval.standard_error, interval.degrees_of_freedom, interval.seed_level)
