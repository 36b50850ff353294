"""The ``cyclegan`` recipe kind (``augment train --data-a A.h5 --data-b B.h5``): frozen, validated dataclasses.

Unpaired image-to-image translation (Zhu et al. 2017) from domain A (phantoms) to domain B (CT)::

    kind = "cyclegan"
    name = "cyclegan-phantom-ct"

    [model]          # the networks
    image_size = 128              # square training crops; the networks translate any size
    generator_channels = 24
    residual_blocks = 6

    [train]          # losses, optimiser, schedule, loop
    steps = 6000
    lambda_cycle = 10.0

    [data]
    hu_window = [-1000.0, 1000.0]

Every default is the published one (Zhu et al. 2017 and their code): ResNet-9-block generators and 70x70
PatchGAN discriminators with 64 channels, least-squares adversarial loss, lambda_cycle 10, lambda_identity
0.5 (relative to lambda_cycle), a 50-image history pool, Adam 2e-4 with betas (0.5, 0.999), a constant
learning rate for the first half of the steps and a linear decay to zero over the second, batch 1. The
shipped recipes slim the networks for CPUs. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from augmentor.recipes import register_recipe_kind
from augmentor.training.recipe import MixedPrecisionName

UpsamplingName = Literal["transposed", "resize-conv"]
PatchNormalizationName = Literal["instance", "batch", "none"]


@dataclass(frozen=True)
class CycleGanModelSection:
    """The two generators (A->B, B->A), the two discriminators and the segmenters."""

    generator: Literal["resnet-generator"] = "resnet-generator"
    discriminator: Literal["patchgan-discriminator"] = "patchgan-discriminator"
    image_size: int = 256  # side of the square training crops (the networks translate any size)
    generator_channels: int = 64
    residual_blocks: int = 9
    downsamplings: int = 2
    upsampling: UpsamplingName = "transposed"
    discriminator_channels: int = 64
    discriminator_layers: int = 3  # 3: 70x70 patches
    discriminator_normalization: PatchNormalizationName = "instance"
    segmenter_channels: tuple[int, ...] = (16, 32, 64, 128)  # the judge and the structure segmenter (MONAI UNet)
    segmenter_residual_units: int = 1

    def __post_init__(self) -> None:
        for name in ("generator_channels", "discriminator_channels", "discriminator_layers", "downsamplings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.residual_blocks < 0:
            raise ValueError(f"residual_blocks must be >= 0, got {self.residual_blocks}")
        if self.image_size < 2 ** (self.discriminator_layers + 2) or self.image_size % 2:
            raise ValueError(
                f"image_size must be even and at least {2 ** (self.discriminator_layers + 2)} for "
                f"{self.discriminator_layers} discriminator layers, got {self.image_size}"
            )
        if len(self.segmenter_channels) < 2 or min(self.segmenter_channels) < 1:
            raise ValueError(f"segmenter_channels must list at least two positive widths, got {list(self.segmenter_channels)}")


@dataclass(frozen=True)
class CycleGanTrainSection:
    """The losses, the optimiser, the schedule and the loop's intervals."""

    algorithm: Literal["cyclegan"] = "cyclegan"
    loss: Literal["least-squares", "non-saturating"] = "least-squares"
    steps: int = 200000
    batch_size: int = 1
    lr: float = 2e-4  # generators and discriminators
    betas: tuple[float, float] = (0.5, 0.999)
    decay_from: float = 0.5  # fraction of the steps after which the learning rate falls linearly to zero
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5  # relative to lambda_cycle, as published (0: no identity term)
    pool_size: int = 50  # image history the discriminators also see (Shrivastava et al. 2017); 0: none
    structure_consistency: bool = False  # Zhang et al. 2018 shape-consistency terms A -> B and B -> A (need labelled domain B)
    lambda_structure: float = 1.0
    judge: bool = True  # train the hallucination judge on labelled domain-B slices (skipped if B has no labels)
    checkpoint_every: int = 1000
    sample_every: int = 1000
    log_every: int = 50
    keep_checkpoints: int = 2
    seed: int = 0
    mixed_precision: MixedPrecisionName = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sample_every", "pool_size", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lambda_cycle", "lambda_identity", "lambda_structure"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {list(self.betas)}")
        if not 0.0 <= self.decay_from <= 1.0:
            raise ValueError(f"decay_from must be in [0, 1], got {self.decay_from}")


@dataclass(frozen=True)
class CycleGanDataSection:
    """The intensity window both domains are normalised with."""

    hu_window: tuple[float, float] = (-1000.0, 1000.0)  # whole slices: air to cortical bone

    def __post_init__(self) -> None:
        if not self.hu_window[0] < self.hu_window[1]:
            raise ValueError(f"hu_window low {self.hu_window[0]} must be below high {self.hu_window[1]}")


@register_recipe_kind("cyclegan")
@dataclass(frozen=True)
class CycleGanRecipe:
    """A recipe for ``augment train --data-a A.h5 --data-b B.h5``."""

    kind: Literal["cyclegan"] = "cyclegan"
    name: str = ""
    description: str = ""
    model: CycleGanModelSection = field(default_factory=CycleGanModelSection)
    train: CycleGanTrainSection = field(default_factory=CycleGanTrainSection)
    data: CycleGanDataSection = field(default_factory=CycleGanDataSection)
