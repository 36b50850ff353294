"""What the GAN update rules share: devices, mixed precision, the random generator, optimiser steps.

An algorithm owns its networks, optimisers, loss scalers and one ``torch.Generator`` from which every
random draw of an update comes (latents, DiffAugment parameters, interpolation weights). Its
``update(batch)`` returns detached device tensors, so the generic loop can log without a host
synchronisation per step; ``train_step(batch)`` is the same step returning plain floats.

A batch is a dict with the sample keys of :class:`augmentor.data.schema.SampleKey`: ``image``
(B, C, H, W) in [-1, 1], ``mask`` (B, 1, H, W) labels (> 0 is lesion) and ``label`` (B,) class indices,
already on the algorithm's device.

Data-parallel training (:mod:`augmentor.training.distributed`): after :meth:`AdversarialAlgorithm.distribute`,
a batch holds this rank's rows of the global batch, losses whose parameter gradients are wanted go
through the DDP wrappers (``generator_replica``, ``discriminator_replica``), and every random draw is
made for the global batch with this rank keeping its rows. In one process the replicas are the networks
themselves and every draw is exactly what it was.

What the discriminator sees (issue #13's switches; every default is the original behaviour): real masks
as -1 / +1, or ``±(1 - mask_smoothing)`` (see :meth:`AdversarialAlgorithm.real_pairs`); with
``real_dihedral`` each real sample in one of the 8 orientations of a square
(:mod:`augmentor.training.dihedral`); a generator whose mask channel is a logit
(``mask_output="logits"``) has it shown as ``2 sigmoid(logit) - 1`` (:meth:`AdversarialAlgorithm.discriminator_view`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn

from augmentor.data.schema import SampleKey
from augmentor.training.device import Precision
from augmentor.training.diffaugment import DiffAugment
from augmentor.training.dihedral import NUM_SYMMETRIES, dihedral
from augmentor.training.distributed import SINGLE_PROCESS, Distributed, data_parallel, use_global_batch_norm

Batch = Mapping[str, torch.Tensor]


class Algorithm(Protocol):
    """The interface the generic loop (:class:`augmentor.training.trainer.Trainer`) drives."""

    #: how many batches of ``batch_size`` real samples one step consumes (WGAN-GP: n_critic)
    real_batches_per_step: int

    def update(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def train_step(self, batch: Batch) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def image_mask_pairs(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch as the generator's output space: (B, C + 1, H, W) with the mask as -1 / +1, and (B,) labels."""
    image = batch[SampleKey.IMAGE.value]
    mask = batch[SampleKey.MASK.value].gt(0).to(image.dtype) * 2.0 - 1.0
    return torch.cat([image, mask], dim=1), batch[SampleKey.LABEL.value]


def adam(network: nn.Module, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    """Adam over ``network``'s parameters; the fused kernel on CUDA (one launch for all parameters)."""
    return torch.optim.Adam(network.parameters(), lr=lr, betas=betas, fused=device.type == "cuda" or None)


class AdversarialAlgorithm(ABC):
    """Base of the generator-versus-discriminator update rules.

    Args:
        generator: maps (latent, labels) to (image, mask) pairs; has ``latent_dim``.
        discriminator: maps (pairs, labels) to (B,) logits or scores.
        generator_lr, discriminator_lr: Adam learning rates.
        betas: Adam betas for both networks.
        augment: DiffAugment applied to everything the discriminator sees (empty policy: none).
        precision: the mixed-precision policy.
        seed: seed of the algorithm's random generator.
        device: where the networks and batches live.
        mask_smoothing: ε in [0, 1): real masks are shown as ±(1 - ε) instead of ±1 (0: off).
        real_dihedral: show each real sample in a random one of the 8 flips / 90° rotations.
    """

    real_batches_per_step = 1

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        generator_lr: float,
        discriminator_lr: float,
        betas: tuple[float, float],
        augment: DiffAugment,
        precision: Precision,
        seed: int,
        device: torch.device,
        mask_smoothing: float = 0.0,
        real_dihedral: bool = False,
    ) -> None:
        if not 0.0 <= mask_smoothing < 1.0:
            raise ValueError(f"mask_smoothing must be in [0, 1), got {mask_smoothing}")
        self.device = device
        self.mask_smoothing = mask_smoothing
        self.real_dihedral = real_dihedral
        self.image_channels = int(getattr(generator, "image_channels", 1))
        self.mask_logits = str(getattr(generator, "mask_output", "tanh")) == "logits"
        # channels_last on GPUs: the layout cuDNN's convolution kernels (and tensor cores) run fastest on.
        self.generator = generator.to(device).train()
        self.discriminator = discriminator.to(device).train()
        if device.type == "cuda":
            self.generator.to(memory_format=torch.channels_last)
            self.discriminator.to(memory_format=torch.channels_last)
        self.latent_dim = int(generator.latent_dim)  # type: ignore[arg-type]
        self.augment = augment
        self.precision = precision
        self.generator_optimizer = adam(self.generator, generator_lr, betas, device)
        self.discriminator_optimizer = adam(self.discriminator, discriminator_lr, betas, device)
        self.generator_scaler = precision.grad_scaler()
        self.discriminator_scaler = precision.grad_scaler()
        self.random = torch.Generator(device=device)
        self.random.manual_seed(seed)
        self.world: Distributed = SINGLE_PROCESS
        # What the losses call when they need parameter gradients (DDP wrappers once distributed).
        self.generator_replica: nn.Module = self.generator
        self.discriminator_replica: nn.Module = self.discriminator
        # ADA's augmentation probability (a 0-d device tensor), or None: every operation on every sample.
        self.augment_probability: torch.Tensor | None = None

    def distribute(self, world: Distributed) -> None:
        """Train as one rank of ``world``: global BatchNorm statistics, DDP wrappers, per-sample draws.

        Call after anything that copies the networks (the EMA), since BatchNorm layers are swapped in place.
        """
        if not world.is_distributed:
            return
        self.world = world
        use_global_batch_norm(self.generator)
        use_global_batch_norm(self.discriminator)
        self.generator_replica = data_parallel(self.generator, world, self.device)
        self.discriminator_replica = data_parallel(self.discriminator, world, self.device)

    def draw_latents(self, count: int) -> torch.Tensor:
        """Latents for ``count`` local samples (drawn for the global batch; this rank keeps its rows)."""
        total = count * self.world.world_size
        return self.world.rows(torch.randn(total, self.latent_dim, device=self.device, generator=self.random))

    def draw_uniform(self, count: int, *shape: int) -> torch.Tensor:
        """U[0, 1) values of shape (count, *shape) for ``count`` local samples, drawn per global sample."""
        total = count * self.world.world_size
        return self.world.rows(torch.rand(total, *shape, device=self.device, generator=self.random))

    def real_pairs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The real batch as the discriminator sees it, before DiffAugment: (B, C + 1, H, W) pairs and (B,) labels.

        Masks are -1 / +1, scaled to ±(1 - ε) with ``mask_smoothing`` ε > 0: a tanh or sigmoid never reaches
        ±1, so exact ±1 masks are a cue that tells real from fake and pushes the generator into saturation
        (issue #13). This is label smoothing (Szegedy et al. 2016) of the mask, a label, on the input side.
        With ``real_dihedral`` each sample gets a symmetry drawn per global sample.
        """
        pairs, labels = image_mask_pairs(batch)
        if self.mask_smoothing:
            pairs = torch.cat([pairs[:, : self.image_channels], pairs[:, self.image_channels :] * (1.0 - self.mask_smoothing)], dim=1)
        if self.real_dihedral:
            index = (self.draw_uniform(pairs.shape[0]) * NUM_SYMMETRIES).long().clamp_(max=NUM_SYMMETRIES - 1)
            pairs = dihedral(pairs, index)
        return pairs, labels

    def discriminator_view(self, generated: torch.Tensor) -> torch.Tensor:
        """The generator's output as the discriminator sees it: unchanged, or with mask logits l shown as
        ``2 sigmoid(l) - 1`` (on the real masks' [-1, 1] scale) for a ``mask_output="logits"`` generator."""
        if not self.mask_logits:
            return generated
        image, logits = generated[:, : self.image_channels], generated[:, self.image_channels :]
        return torch.cat([image, 2.0 * torch.sigmoid(logits) - 1.0], dim=1)

    def augmented(self, pairs: torch.Tensor) -> torch.Tensor:
        probability = self.augment_probability
        if not self.world.is_distributed:
            return self.augment(pairs, self.random, probability=probability)
        return self.augment(pairs, self.random, pairs.shape[0] * self.world.world_size, self.world.rows, probability=probability)

    @staticmethod
    def optimise(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        """One optimiser step on ``loss`` (loss-scaled under float16; a pass-through otherwise)."""
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    @abstractmethod
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One update of the networks on ``batch``; returns its metrics as device tensors (no host sync)."""

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One update; returns its metrics as floats (synchronises with the device)."""
        metrics = self.update(batch)
        values = torch.stack([value.float() for value in metrics.values()]).tolist()
        return dict(zip(metrics, values, strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
            "generator_scaler": self.generator_scaler.state_dict(),
            "discriminator_scaler": self.discriminator_scaler.state_dict(),
            "random": self.random.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        if state["generator_scaler"]:
            self.generator_scaler.load_state_dict(state["generator_scaler"])
        if state["discriminator_scaler"]:
            self.discriminator_scaler.load_state_dict(state["discriminator_scaler"])
        self.random.set_state(state["random"].to("cpu", torch.uint8))
