"""The arms of the experiment: what each one trains on.

(a) ``real``: the real training patients only.
(b) ``classic``: the same, with classic augmentation (:mod:`evaluation.batch_augmentation`).
(c) ``classic+synthetic xR``: (b) plus R synthetic samples per real sample *of each class* (Frid-Adar et
    al. 2018 added synthetic lesions to the classically augmented set); one arm per sweep ratio. Both
    real and synthetic samples are augmented.
(o) ``classic+oracle xR``: (b) plus R *real* lesions per real lesion of each class, from new virtual
    patients (simulated cohorts only): what perfect synthetic data would add -- the ceiling. The
    augmentation efficiency of a generator is Δ(c at R) / Δ(o at R), both against (b).
(d) ``pretrain-finetune``: pretrain on synthetic samples, then fine-tune on the real data with classic
    augmentation (Onishi et al. 2019). Pretraining is not augmented: tens of thousands of synthetic
    samples bring their own variety.
(t) ``classic+translated(MODEL) xR``: (b) plus R phantom slices per real slice, translated into the CT domain
    by the CycleGAN ``MODEL`` (segmentation: the phantom's labels are the translation's); one set of arms
    per translation model (e.g. with and without structure consistency).
(p) ``classic+phantom xR``: (b) plus the same phantom slices untranslated: what the translation adds.
(e) ``synthetic-only``: train on synthetic samples only, test on real (TSTR): a fidelity measure
    (how much of the real task the GAN's samples teach), not a way to use them. Not augmented. When its
    samples and budget equal (d)'s pretraining, the same trained network serves both (one computation).

Every arm uses the same validation patients and seeds, and a budget in *epochs of its own training set*
(with a floor of steps), trained to convergence (:mod:`evaluation.training`). The pool samples an arm uses
are the *first* n of each class, so the sweep is nested (x1 is part of x3, ...): the curve then shows the
effect of adding samples, not of drawing different ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from augmentor.errors import look_up_option


class ArmKind(StrEnum):
    """The kinds of arm (names as written in recipes)."""

    REAL = "real"
    CLASSIC = "classic"
    CLASSIC_SYNTHETIC = "classic+synthetic"
    CLASSIC_ORACLE = "classic+oracle"
    PRETRAIN_FINETUNE = "pretrain-finetune"
    SYNTHETIC_ONLY = "synthetic-only"
    CLASSIC_TRANSLATED = "classic+translated"
    CLASSIC_PHANTOM = "classic+phantom"


class Pool(StrEnum):
    """Where a stage's extra samples come from."""

    NONE = ""
    SYNTHETIC = "synthetic"
    ORACLE = "oracle"
    TRANSLATED = "translated"  # one pool per translation model (the stage's ``source``)
    PHANTOM = "phantom"


def pool_key(pool: Pool, source: str = "") -> str:
    """The name of one pool: its kind, and the translation model for translated phantoms."""
    return f"{pool.value}:{source}" if source else pool.value


BASELINE = ArmKind.REAL.value  # paired differences are against this arm
# ... and, for the arms that add data, also against classic augmentation alone: the question Frid-Adar
# et al. 2018 ask is what GAN samples add on top of classic augmentation.
CLASSIC_BASELINE = ArmKind.CLASSIC.value
SYNTHETIC_KINDS = (ArmKind.CLASSIC_SYNTHETIC, ArmKind.PRETRAIN_FINETUNE, ArmKind.SYNTHETIC_ONLY)
PHANTOM_KINDS = (ArmKind.CLASSIC_TRANSLATED, ArmKind.CLASSIC_PHANTOM)  # segmentation arms that add phantom slices


@dataclass(frozen=True)
class StageBudget:
    """A stage's budget: epochs of its own samples, at least ``min_steps`` optimiser steps."""

    epochs: float
    min_steps: int


@dataclass(frozen=True)
class StagePlan:
    """One training stage: which samples, augmented or not, and its budget.

    Attributes:
        name: "train", "pretrain" or "finetune".
        real: include the real training samples.
        pool: the pool the extra samples come from.
        per_class: take the first n pool samples of class c (index c).
        augment: apply classic augmentation.
        epochs: budget in epochs of this stage's samples.
        min_steps: floor of the budget.
        source: which pool of its kind (the translation model of a translated pool); "" for the others.
    """

    name: str
    real: bool
    pool: Pool
    per_class: tuple[int, ...]
    augment: bool
    epochs: float
    min_steps: int
    source: str = ""


@dataclass(frozen=True)
class Arm:
    """An arm: a kind and, for the arms that add samples, how many per real sample."""

    name: str
    kind: ArmKind
    ratio: float = 0.0  # pool samples per real sample, per class
    source: str = ""  # the translation model of a classic+translated arm

    @property
    def uses_synthetic(self) -> bool:
        return self.kind in SYNTHETIC_KINDS

    def stages(self, real_counts: Sequence[int], *, train: StageBudget, pretrain: StageBudget, pretrain_per_class: Sequence[int]) -> tuple[StagePlan, ...]:
        """The training stages of this arm.

        Args:
            real_counts: real training samples per class (after the validation split).
            train: budget of a training (or fine-tuning) stage.
            pretrain: budget of the synthetic pretraining stage (and of synthetic-only training on the same samples).
            pretrain_per_class: synthetic samples per class for pretraining.
        """
        none = (0,) * len(real_counts)
        scaled = tuple(round(self.ratio * count) for count in real_counts)

        def stage(name: str, real: bool, pool: Pool, per_class: tuple[int, ...], augment: bool, budget: StageBudget) -> StagePlan:
            return StagePlan(name, real, pool, per_class, augment, budget.epochs, budget.min_steps)

        if self.kind is ArmKind.REAL:
            return (stage("train", True, Pool.NONE, none, False, train),)
        if self.kind is ArmKind.CLASSIC:
            return (stage("train", True, Pool.NONE, none, True, train),)
        if self.kind is ArmKind.CLASSIC_SYNTHETIC:
            return (stage("train", True, Pool.SYNTHETIC, scaled, True, train),)
        if self.kind is ArmKind.CLASSIC_ORACLE:
            return (stage("train", True, Pool.ORACLE, scaled, True, train),)
        if self.kind is ArmKind.CLASSIC_TRANSLATED:
            return (StagePlan("train", True, Pool.TRANSLATED, scaled, True, train.epochs, train.min_steps, self.source),)
        if self.kind is ArmKind.CLASSIC_PHANTOM:
            return (stage("train", True, Pool.PHANTOM, scaled, True, train),)
        if self.kind is ArmKind.PRETRAIN_FINETUNE:
            return (
                stage("pretrain", False, Pool.SYNTHETIC, tuple(pretrain_per_class), False, pretrain),
                stage("finetune", True, Pool.NONE, none, True, train),
            )
        # synthetic-only: when it trains on the pretraining's samples it is that stage (one computation)
        same = scaled == tuple(pretrain_per_class)
        return (stage("pretrain" if same else "train", False, Pool.SYNTHETIC, scaled, False, pretrain if same else train),)


def ratio_label(ratio: float) -> str:
    return f"x{ratio:g}"


def expand_arms(
    names: Sequence[str], sweep: Sequence[float], synthetic_only_ratio: float, oracle_sweep: Sequence[float] = (), translation_models: Sequence[str] = ()
) -> list[Arm]:
    """The arms named in a recipe, with the arms that add samples expanded per ratio (and per translation model).

    Args:
        names: arm kinds, in the order the report lists them.
        sweep: pool-per-real ratios of the ``classic+synthetic``, ``classic+translated`` and ``classic+phantom`` arms.
        synthetic_only_ratio: synthetic-per-real ratio of the TSTR arm (0: the largest sweep ratio).
        oracle_sweep: ratios of the ``classic+oracle`` arms (empty: the synthetic sweep's).
        translation_models: the names of the translation models (one ``classic+translated`` arm per model and ratio).

    Returns:
        The arms; the ``real`` arm (when present) first, since paired differences are taken against it.
    """
    arms: list[Arm] = []
    for name in names:
        kind = ArmKind(look_up_option(name, [k.value for k in ArmKind], "arm"))
        if kind is ArmKind.CLASSIC_SYNTHETIC:
            arms += [Arm(f"{kind.value} {ratio_label(r)}", kind, float(r)) for r in sorted(sweep)]
        elif kind is ArmKind.CLASSIC_ORACLE:
            arms += [Arm(f"{kind.value} {ratio_label(r)}", kind, float(r)) for r in sorted(oracle_sweep or sweep)]
        elif kind is ArmKind.CLASSIC_TRANSLATED:
            arms += [Arm(f"{kind.value}({model}) {ratio_label(r)}", kind, float(r), model) for model in translation_models for r in sorted(sweep)]
        elif kind is ArmKind.CLASSIC_PHANTOM:
            arms += [Arm(f"{kind.value} {ratio_label(r)}", kind, float(r)) for r in sorted(sweep)]
        elif kind is ArmKind.SYNTHETIC_ONLY:
            arms.append(Arm(kind.value, kind, float(synthetic_only_ratio or max(sweep))))
        else:
            arms.append(Arm(kind.value, kind))
    arms.sort(key=lambda arm: arm.kind is not ArmKind.REAL)
    return arms


def pretrain_counts(num_classes: int, pretrain_samples: int, real_counts: Sequence[int], sweep: Sequence[float]) -> tuple[int, ...]:
    """Synthetic samples per class for pretraining: ``pretrain_samples`` split evenly by class (Onishi
    et al. pretrained on equal numbers of benign and malignant nodules), or max(sweep) x the real count."""
    if pretrain_samples > 0:
        base, extra = divmod(pretrain_samples, num_classes)
        return tuple(base + (1 if c < extra else 0) for c in range(num_classes))
    return tuple(round(max(sweep) * count) for count in real_counts)
