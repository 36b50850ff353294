"""The ``gan`` recipe kind (``augment train``): frozen, validated dataclasses. Imports no torch.

A recipe file::

    kind = "gan"
    name = "frid-adar-liver"

    [model]                       # the networks
    generator = "dcgan-generator"
    discriminator = "projection-discriminator"   # "wgan-critic" for wgan-gp
    image_size = 64
    latent_dim = 128
    base_channels = 32

    [train]                       # the algorithm and the loop
    algorithm = "cgan"            # or "wgan-gp"
    steps = 20000
    batch_size = 64

    [data]
    classes = ["cyst", "metastasis", "hemangioma"]

    [monitor]                     # optional: score the generator during training, ship the best step
    reference = "test.h5"         # real lesions of other patients (the tuning cohort); not the training file
    every = 1000                  # steps; 0 (the default) turns the monitor off

Switches of the mode-collapse study (issue #13); each default is the original behaviour, and each can
be set from the command line (``augment train RECIPE --set model.upsample=resize --set train.r1_gamma=1``):

- ``model.minibatch_std`` (false): a minibatch standard-deviation channel (Karras et al. 2018) before the
  discriminator's last strided convolution; groups of 4 samples (the largest divisor of the batch not
  above 4), formed within each data-parallel rank's rows (statistics are per rank).
- ``model.mask_output`` ("tanh" | "logits"): the generator's mask channel through tanh, or as a logit
  that the discriminator sees as ``2 sigmoid(logit) - 1``; either way the mask is ``value > 0``.
- ``model.upsample`` ("transposed" | "resize" | "bilinear"): transposed convolutions, or nearest x2 + 3x3
  convolution (Odena et al. 2016), or bilinear x2 + 3x3 convolution.
- ``model.embedding_init`` ("dcgan" | "unit"): the generator's class embedding from N(0, 0.02) or N(0, 1).
- ``model.noise_inputs`` (false): per-pixel noise inputs in the generator (Karras et al. 2019) after every x2
  step and on the output image, scaled by learned per-channel weights that start at 0; the noise is a hash of
  the latent, so a latent still gives one sample on every device.
- ``train.r1_gamma`` (0) and ``train.r1_every`` (1): R1 penalty ``γ/2 E||grad_x D(x)||^2`` on the reals
  (Mescheder et al. 2018), lazily every k updates times k (StyleGAN2); cgan only, and not with a
  batch-normalised discriminator (use discriminator_normalization = "none", "spectral", "layer" or "instance").
- ``train.lecam_weight`` (0): LeCam regulariser (Tseng et al. 2021) with anchors decaying at 0.99; cgan only.
- ``train.mask_smoothing`` (0): ε in [0, 1): real masks shown to the discriminator as ±(1 - ε) instead of
  ±1 (label smoothing of the mask, Szegedy et al. 2016), so exact ±1 is no cue a tanh or sigmoid cannot match.
- ``train.mask_background_fill`` (false): DiffAugment's translation and cutout fill the mask channel with
  -1 (background) instead of 0.
- ``train.real_dihedral`` (false): each real sample in a random one of the 8 flips / 90° rotations.
- ``train.ada_target`` (0: off) and ``train.ada_images`` (100 000): adaptive augmentation probability (Karras
  et al. 2020, ADA) over the DiffAugment policy: each operation applies to each sample with a probability p
  that starts at 0 and moves by ``4 · batch / ada_images`` every 4 updates to keep ``E[sign D(real)]`` at the
  target (0.6 published; their 500 000 images for p to cross [0, 1] is more than a 4 000-step run of batch 64
  sees); cgan only, and it needs a non-empty diffaugment policy.

Values left out take the defaults below; those marked "algorithm default" are filled in from the
algorithm (cgan: non-saturating loss, Adam 2e-4, betas (0.5, 0.999), as in DCGAN; wgan-gp: Wasserstein
loss, n_critic 5, λ_gp 10, Adam 1e-4, betas (0, 0.9), as in Gulrajani et al. 2017), so the resolved
recipe stored in checkpoints and model cards shows every value used.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from augmentor.recipes import register_recipe_kind
from augmentor.training.diffaugment import parse_policy

# The registry (augmentor.models.registry.NETWORKS) holds these names too; a test keeps them in step.
GeneratorFamily = Literal["dcgan-generator"]
DiscriminatorFamily = Literal["projection-discriminator", "wgan-critic"]
NormalizationName = Literal["spectral", "batch", "layer", "instance", "none"]
AlgorithmName = Literal["cgan", "wgan-gp"]
LossName = Literal["non-saturating", "hinge", "wasserstein"]
AugmentationName = Literal["color", "translation", "translation-reflect", "cutout"]
MixedPrecisionName = Literal["auto", "bf16", "fp16", "off"]
# The generator's options (augmentor.models.dcgan: Upsample, MaskOutput, EmbeddingInit); a test keeps them in step.
UpsampleName = Literal["transposed", "resize", "bilinear"]
MaskOutputName = Literal["tanh", "logits"]
EmbeddingInitName = Literal["dcgan", "unit"]

_ALGORITHM_DEFAULTS = {
    "cgan": {"loss": "non-saturating", "generator_lr": 2e-4, "discriminator_lr": 2e-4, "betas": (0.5, 0.999), "n_critic": 1},
    "wgan-gp": {"loss": "wasserstein", "generator_lr": 1e-4, "discriminator_lr": 1e-4, "betas": (0.0, 0.9), "n_critic": 5},
}


def _fill(instance: object, name: str, value: object) -> None:
    object.__setattr__(instance, name, value)  # frozen dataclass: resolve a default once, in __post_init__


@dataclass(frozen=True)
class ModelSection:
    """The generator and discriminator architectures."""

    generator: GeneratorFamily = "dcgan-generator"
    discriminator: DiscriminatorFamily | None = None  # algorithm default
    discriminator_normalization: NormalizationName | None = None  # default: spectral (projection), layer (critic)
    image_size: int = 64
    latent_dim: int = 128
    embedding_dim: int = 32
    base_channels: int = 32
    discriminator_channels: int | None = None  # default: base_channels
    minibatch_std: bool = False  # minibatch standard-deviation channel in the discriminator
    mask_output: MaskOutputName = "tanh"  # the generator's mask channel: tanh or logits
    upsample: UpsampleName = "transposed"  # the generator's x2 steps: transposed conv or resize + conv
    embedding_init: EmbeddingInitName = "dcgan"  # the generator's class embedding: N(0, 0.02) or N(0, 1)
    noise_inputs: bool = False  # the generator's per-pixel noise inputs (StyleGAN), a function of the latent

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8 (16, 32, 64, 128, ...), got {self.image_size}")
        for name in ("latent_dim", "embedding_dim", "base_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.discriminator_channels is None:
            _fill(self, "discriminator_channels", self.base_channels)
        elif self.discriminator_channels < 1:
            raise ValueError(f"discriminator_channels must be >= 1, got {self.discriminator_channels}")


@dataclass(frozen=True)
class TrainSection:
    """The algorithm, its hyper-parameters and the loop's intervals."""

    algorithm: AlgorithmName = "cgan"
    loss: LossName | None = None  # algorithm default
    steps: int = 20000  # generator updates
    batch_size: int = 64
    generator_lr: float | None = None  # algorithm default
    discriminator_lr: float | None = None  # algorithm default
    betas: tuple[float, float] | None = None  # algorithm default
    n_critic: int | None = None  # algorithm default (cgan: 1)
    lambda_gp: float = 10.0
    ema_decay: float = 0.999
    diffaugment: tuple[AugmentationName, ...] = ("color", "translation", "cutout")
    checkpoint_every: int = 1000
    sample_every: int = 1000
    log_every: int = 50
    keep_checkpoints: int = 2
    seed: int = 0
    mixed_precision: MixedPrecisionName = "auto"
    compile: bool = False  # torch.compile the networks (GPU runs; the WGAN-GP critic is never compiled)
    r1_gamma: float = 0.0  # R1 penalty γ (0: off)
    r1_every: int = 1  # lazy R1: every k-th discriminator update, times k
    lecam_weight: float = 0.0  # LeCam regulariser weight (0: off)
    mask_smoothing: float = 0.0  # real masks as ±(1 - ε)
    mask_background_fill: bool = False  # DiffAugment fills the mask channel with -1, not 0
    real_dihedral: bool = False  # random flip / 90° rotation of each real sample
    ada_target: float = 0.0  # adaptive augmentation probability: target of E[sign D(real)] (0: off; 0.6 published)
    ada_images: int = 100_000  # real images over which that probability can move from 0 to 1

    def __post_init__(self) -> None:
        defaults = _ALGORITHM_DEFAULTS[self.algorithm]
        for name, value in defaults.items():
            if getattr(self, name) is None:
                _fill(self, name, value)
        if self.algorithm == "wgan-gp" and self.loss != "wasserstein":
            raise ValueError(f"algorithm 'wgan-gp' uses the 'wasserstein' loss, not {self.loss!r}")
        if self.algorithm == "cgan" and self.loss == "wasserstein":
            raise ValueError("the 'wasserstein' loss needs a Lipschitz constraint: use algorithm = 'wgan-gp'")
        if self.algorithm == "cgan" and self.n_critic != 1:
            raise ValueError(f"n_critic applies to 'wgan-gp' only; cgan takes one discriminator step per step (got {self.n_critic})")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "keep_checkpoints", "n_critic"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sample_every < 0:
            raise ValueError(f"sample_every must be >= 0 (0: no sample grids), got {self.sample_every}")
        for name in ("generator_lr", "discriminator_lr"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        assert self.betas is not None
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {list(self.betas)}")
        if self.lambda_gp < 0:
            raise ValueError(f"lambda_gp must be >= 0, got {self.lambda_gp}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if len(set(self.diffaugment)) != len(self.diffaugment):
            raise ValueError(f"diffaugment lists an operation twice: {list(self.diffaugment)}")
        parse_policy(self.diffaugment)  # the operations' own rules (e.g. one of the two translations)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        for name in ("r1_gamma", "lecam_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: off), got {getattr(self, name)}")
            if getattr(self, name) > 0 and self.algorithm != "cgan":
                raise ValueError(f"{name} applies to algorithm 'cgan' only (wgan-gp has its own gradient penalty, lambda_gp)")
        if self.r1_every < 1:
            raise ValueError(f"r1_every must be >= 1, got {self.r1_every}")
        if not 0.0 <= self.ada_target < 1.0:
            raise ValueError(f"ada_target must be in [0, 1) (0: off; 0.6 published), got {self.ada_target}")
        if self.ada_target and self.algorithm != "cgan":
            raise ValueError("ada_target applies to algorithm 'cgan' only (its heuristic reads the sign of a logit)")
        if self.ada_target and not self.diffaugment:
            raise ValueError("ada_target adapts the probability of the diffaugment operations: the policy is empty")
        if self.ada_images < 1:
            raise ValueError(f"ada_images must be >= 1, got {self.ada_images}")
        if not 0.0 <= self.mask_smoothing < 1.0:
            raise ValueError(f"mask_smoothing must be in [0, 1) (real masks become ±(1 - mask_smoothing)), got {self.mask_smoothing}")


@dataclass(frozen=True)
class DataSection:
    """Which classes of the training file, and the intensity window."""

    classes: tuple[str, ...] = ()  # the model's classes, in order; empty: all of the file's
    hu_window: tuple[float, float] | None = None  # default: the training file's hu_window attribute

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes lists a class twice: {list(self.classes)}")
        if self.hu_window is not None and not self.hu_window[0] < self.hu_window[1]:
            raise ValueError(f"hu_window low {self.hu_window[0]} must be below high {self.hu_window[1]}")


MonitorSelectName = Literal["kid-covered", "kid", "criteria", "c2st", "last"]


@dataclass(frozen=True)
class MonitorSection:
    """Scores of the EMA generator during training against real lesions of other patients (the tuning
    cohort), and which step ships (:mod:`evaluation.monitor`; needs the ``evaluation`` package).

    ``select = "kid-covered"`` (default): the step with the lowest KID over all classes together among those whose
    coverage is at least 0.3 ships (a collapsed generator can score a low KID); ``"kid"``: the lowest KID of any
    step; ``"criteria"``: among the covered steps, the one whose classes miss the fewest diversity criteria
    (nearest-neighbour distance, mask IoU, lesion area, bright-pixel fraction), then the lowest KID;
    ``"c2st"``: among the covered steps, the one whose lesions a CNN tells least well from the reference's
    (classifier two-sample AUC, all classes together; needs ``detectability = true``, which scores it at every
    check, about a minute on 2 CPU cores). The earliest on a tie. ``"last"``: the last step ships; the scores are kept as a record.
    """

    reference: str = ""  # HDF5 file of real lesions of patients the training file does not hold
    every: int = 0  # steps between scores (and at the end); 0: no monitor
    samples_per_class: int = 256
    select: MonitorSelectName = "kid-covered"
    detectability: bool = False  # also a classifier two-sample test at every check (evaluation.detectability)

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"every must be >= 0 (0: no monitor), got {self.every}")
        if self.samples_per_class < 8:
            raise ValueError(f"samples_per_class must be >= 8 (precision and recall use 5 nearest neighbours), got {self.samples_per_class}")
        if self.every > 0 and not self.reference:
            raise ValueError("every > 0 needs a reference file of real lesions: set monitor.reference")
        if self.select == "c2st" and not self.detectability:
            raise ValueError('select = "c2st" needs the two-sample test at every check: set monitor.detectability = true')


@register_recipe_kind("gan")
@dataclass(frozen=True)
class GanRecipe:
    """A recipe for ``augment train``."""

    kind: Literal["gan"] = "gan"
    name: str = ""
    description: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    data: DataSection = field(default_factory=DataSection)
    monitor: MonitorSection = field(default_factory=MonitorSection)

    def __post_init__(self) -> None:
        if self.model.discriminator is None:
            discriminator: DiscriminatorFamily = "wgan-critic" if self.train.algorithm == "wgan-gp" else "projection-discriminator"
            _fill(self, "model", replace(self.model, discriminator=discriminator))
        if self.model.discriminator_normalization is None:
            # spectral norm is what the projection discriminator was published with (Miyato & Koyama 2018);
            # layer norm is what Gulrajani et al. recommend for the critic.
            normalization: NormalizationName = "layer" if self.model.discriminator == "wgan-critic" else "spectral"
            _fill(self, "model", replace(self.model, discriminator_normalization=normalization))
        if self.train.algorithm == "wgan-gp":
            if self.model.discriminator != "wgan-critic":
                raise ValueError(f"algorithm 'wgan-gp' needs model.discriminator = 'wgan-critic', not {self.model.discriminator!r}")
            if self.model.discriminator_normalization == "batch":
                raise ValueError("a WGAN-GP critic cannot use batch normalization (the gradient penalty is per sample)")
        if self.train.r1_gamma > 0 and self.model.discriminator_normalization == "batch":
            raise ValueError(
                "train.r1_gamma needs a discriminator without batch normalization (the R1 gradient is per sample): "
                "set model.discriminator_normalization to 'none', 'spectral', 'layer' or 'instance'"
            )
