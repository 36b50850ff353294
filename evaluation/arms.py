"""The arms of the experiment: what each one trains on.

(a) ``real``: the real training patients only.
(b) ``classic``: the same, with classic augmentation (:mod:`evaluation.augmentation`).
(c) ``classic+synthetic xR``: (b) plus R synthetic samples per real sample *of each class* (Frid-Adar et
    al. 2018 added synthetic lesions to the classically augmented set); one arm per sweep ratio. Both
    real and synthetic samples are augmented.
(d) ``pretrain-finetune``: pretrain on synthetic samples, then fine-tune on the real data with classic
    augmentation (Onishi et al. 2019). Pretraining is not augmented: tens of thousands of synthetic
    samples bring their own variety, and augmenting them would double the cost.
(e) ``synthetic-only``: train on synthetic samples only, test on real (TSTR): a fidelity measure
    (how much of the real task the GAN's samples teach), not a way to use them. Not augmented.

Every arm uses the same validation patients, the same seeds and the same step budget per stage. The
synthetic samples an arm uses are the *first* n of each class in the pool, so the sweep is nested (x1 is
part of x2, ...): the curve then shows the effect of adding samples, not of drawing different ones.
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
    PRETRAIN_FINETUNE = "pretrain-finetune"
    SYNTHETIC_ONLY = "synthetic-only"


BASELINE = ArmKind.REAL.value  # paired differences are against this arm
# ... and, for the arms that use synthetic data, also against classic augmentation alone: the question
# Frid-Adar et al. 2018 ask is what GAN samples add on top of classic augmentation.
CLASSIC_BASELINE = ArmKind.CLASSIC.value


@dataclass(frozen=True)
class StagePlan:
    """One training stage: which samples, augmented or not, for at most ``max_steps`` steps.

    Attributes:
        name: "train", "pretrain" or "finetune".
        real: include the real training samples.
        synthetic_per_class: take the first n synthetic samples of class c (index c).
        augment: apply classic augmentation.
        max_steps: step budget (early stopping may end it sooner).
    """

    name: str
    real: bool
    synthetic_per_class: tuple[int, ...]
    augment: bool
    max_steps: int


@dataclass(frozen=True)
class Arm:
    """An arm: a kind and, for the synthetic ones, how much synthetic data."""

    name: str
    kind: ArmKind
    ratio: float = 0.0  # synthetic samples per real sample, per class

    @property
    def uses_synthetic(self) -> bool:
        return self.kind in (ArmKind.CLASSIC_SYNTHETIC, ArmKind.PRETRAIN_FINETUNE, ArmKind.SYNTHETIC_ONLY)

    def stages(self, real_counts: Sequence[int], *, max_steps: int, pretrain_steps: int, pretrain_per_class: Sequence[int]) -> tuple[StagePlan, ...]:
        """The training stages of this arm.

        Args:
            real_counts: real training samples per class (after the validation split).
            max_steps: step budget of a training (or fine-tuning) stage.
            pretrain_steps: step budget of the pretraining stage.
            pretrain_per_class: synthetic samples per class for pretraining.
        """
        none = (0,) * len(real_counts)
        scaled = tuple(round(self.ratio * count) for count in real_counts)
        if self.kind is ArmKind.REAL:
            return (StagePlan("train", True, none, False, max_steps),)
        if self.kind is ArmKind.CLASSIC:
            return (StagePlan("train", True, none, True, max_steps),)
        if self.kind is ArmKind.CLASSIC_SYNTHETIC:
            return (StagePlan("train", True, scaled, True, max_steps),)
        if self.kind is ArmKind.PRETRAIN_FINETUNE:
            return (
                StagePlan("pretrain", False, tuple(pretrain_per_class), False, pretrain_steps),
                StagePlan("finetune", True, none, True, max_steps),
            )
        return (StagePlan("train", False, scaled, False, max_steps),)


def _ratio_label(ratio: float) -> str:
    return f"x{ratio:g}"


def expand_arms(names: Sequence[str], sweep: Sequence[float], synthetic_only_ratio: float) -> list[Arm]:
    """The arms named in a recipe, with ``classic+synthetic`` expanded into one arm per sweep ratio.

    Args:
        names: arm kinds, in the order the report lists them.
        sweep: synthetic-per-real ratios of the ``classic+synthetic`` arms.
        synthetic_only_ratio: synthetic-per-real ratio of the TSTR arm (0: the largest sweep ratio).

    Returns:
        The arms; the ``real`` arm (when present) first, since paired differences are taken against it.
    """
    arms: list[Arm] = []
    for name in names:
        kind = ArmKind(look_up_option(name, [k.value for k in ArmKind], "arm"))
        if kind is ArmKind.CLASSIC_SYNTHETIC:
            arms += [Arm(f"{kind.value} {_ratio_label(r)}", kind, float(r)) for r in sorted(sweep)]
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
