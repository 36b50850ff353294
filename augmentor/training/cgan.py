"""The conditional GAN update rule (Frid-Adar et al. 2018 trained a class-conditional DCGAN).

One step: draw latents for the batch's classes, update the discriminator on the real batch and the
detached fakes, then update the generator through the (frozen) discriminator on the same fakes, as in
PyTorch's DCGAN example. Losses: non-saturating (default) or hinge (:mod:`augmentor.training.losses`).
DiffAugment, when on, augments everything the discriminator sees.

Regularisers of the discriminator (issue #13; off by default), added to its loss:

- R1 (Mescheder et al. 2018): ``γ/2 · E||grad_x D(x)||^2`` on the real batch as the discriminator sees it
  (after DiffAugment, as StyleGAN2-ADA does). Lazy with ``r1_every`` = k > 1: taken on every k-th update
  only and multiplied by k, as in StyleGAN2 (Karras et al. 2020, sec. 3.1), but added to that update's
  loss rather than taken as a separate optimiser step.
- LeCam (Tseng et al. 2021): anchors α_R, α_F are exponential moving averages (decay 0.99, from 0) of the
  mean real and fake logits, updated with each batch before the penalty
  ``weight · (E(D(x) - α_F)^2 + E(D(G(z)) - α_R)^2)`` is taken, as in the paper's code. The anchors and
  the update count are part of :meth:`ConditionalGAN.state_dict` (a resumed run continues exactly).

Adaptive augmentation probability (Karras et al. 2020, ADA; off by default): DiffAugment's operations apply
to each sample with probability p, which starts at 0 and every ``ADA_INTERVAL`` discriminator updates moves
by ``± ADA_INTERVAL · batch / ada_images`` towards keeping the overfitting heuristic
``r_t = E[sign D(x_real)]`` (over those updates' augmented reals) at ``ada_target`` (0.6 published): up when
the discriminator grows too sure of the reals, down when it does not. p, the running sum of signs and the
last r_t are device tensors (no host synchronisation) and part of the state (exact resume); both are logged.

Data-parallel: the fakes and the discriminator's loss go through the DDP wrappers (their gradients are
averaged across ranks); the generator's loss goes through the plain, frozen discriminator, since only
the generator's gradients are wanted from it. R1 needs a double backward DDP does not support, so, like
the WGAN-GP gradient penalty (:mod:`augmentor.training.wgan_gp`), its inner gradient is taken through
the plain discriminator on this rank's rows and its term joins the same loss and backward, where DDP
averages the total gradient. The LeCam anchors follow the global batch's mean logits (all-reduced), so
every rank holds the same anchors.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import nn

from augmentor.training.algorithm import AdversarialAlgorithm, Batch
from augmentor.training.distributed import all_ranks_mean
from augmentor.training.losses import (
    AdversarialLoss,
    discriminator_loss,
    generator_loss,
    lecam_penalty,
    r1_penalty,
)

LECAM_DECAY = 0.99  # Tseng et al. 2021's moving-average decay of the anchors
ADA_INTERVAL = 4  # discriminator updates between adjustments of the augmentation probability (Karras et al. 2020)


class ConditionalGAN(AdversarialAlgorithm):
    """Class-conditional GAN training.

    Args:
        generator, discriminator: the networks (the discriminator returns raw logits).
        loss: "non-saturating" (default) or "hinge".
        r1_gamma: γ of the R1 penalty (0: off).
        r1_every: take R1 on every k-th update only, multiplied by k (lazy regularisation).
        lecam_weight: weight of the LeCam regulariser (0: off).
        ada_target: the target of ADA's r_t (0: off, DiffAugment on every sample; 0.6 published).
        ada_images: real images over which p can move from 0 to 1 (published: 500 000).
        **settings: learning rates, betas, augment, precision, seed, device, mask_smoothing, real_dihedral
            (see :class:`~augmentor.training.algorithm.AdversarialAlgorithm`).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        loss: str = "non-saturating",
        r1_gamma: float = 0.0,
        r1_every: int = 1,
        lecam_weight: float = 0.0,
        ada_target: float = 0.0,
        ada_images: int = 100_000,
        **settings: Any,
    ) -> None:
        self.loss = AdversarialLoss(loss)
        if self.loss is AdversarialLoss.WASSERSTEIN:
            raise ValueError("the Wasserstein loss needs a Lipschitz constraint: use WassersteinGP")
        if r1_gamma < 0 or lecam_weight < 0 or r1_every < 1:
            raise ValueError(f"need r1_gamma >= 0, r1_every >= 1, lecam_weight >= 0; got {r1_gamma}, {r1_every}, {lecam_weight}")
        if not 0.0 <= ada_target < 1.0 or ada_images < 1:
            raise ValueError(f"need ada_target in [0, 1) and ada_images >= 1; got {ada_target}, {ada_images}")
        if ada_target and not settings["augment"]:
            raise ValueError("ada_target adapts the probability of DiffAugment's operations: give a diffaugment policy")
        if r1_gamma and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()):
            raise ValueError("R1 needs a discriminator without batch normalization (its gradient is per sample)")
        super().__init__(generator, discriminator, **settings)
        self.r1_gamma = r1_gamma
        self.r1_every = r1_every
        self.lecam_weight = lecam_weight
        self.updates = 0  # discriminator updates so far (the lazy R1 schedule)
        self.lecam_anchors = torch.zeros(2, device=self.device)  # (α_R, α_F)
        self.last_r1 = torch.zeros((), device=self.device)  # the latest R1 value, logged on lazy updates too
        self.ada_target = ada_target
        self.ada_images = ada_images
        if ada_target:
            self.augment_probability = torch.zeros((), device=self.device)
        self.ada_signs = torch.zeros((), device=self.device)  # sum over this interval's updates of E[sign D(real)]
        self.ada_rt = torch.zeros((), device=self.device)  # the last interval's r_t

    def r1_weight(self, update: int) -> float:
        """The factor of the R1 penalty on update ``update`` (0-based): γ/2 · k on every k-th update, else 0."""
        if not self.r1_gamma or update % self.r1_every:
            return 0.0
        return self.r1_gamma / 2.0 * self.r1_every

    def regularisation(
        self, real_seen: torch.Tensor, labels: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted R1 + LeCam terms of this update's discriminator loss, and their unweighted values."""
        total = torch.zeros((), device=self.device)
        metrics: dict[str, torch.Tensor] = {}
        weight = self.r1_weight(self.updates)
        if weight:
            # Through the plain network: DDP's reducer has no double backward (see the module docstring).
            self.last_r1 = r1_penalty(partial(self.discriminator, labels=labels), real_seen, self.discriminator_scaler)
            total = total + weight * self.last_r1
            self.last_r1 = self.last_r1.detach()
        if self.r1_gamma:
            metrics["r1_penalty"] = self.last_r1
        if self.lecam_weight:
            means = torch.stack([real_logits.detach().float().mean(), fake_logits.detach().float().mean()])
            self.lecam_anchors = torch.lerp(all_ranks_mean(means, self.world), self.lecam_anchors, LECAM_DECAY)
            penalty = lecam_penalty(real_logits, fake_logits, self.lecam_anchors[0], self.lecam_anchors[1])
            total = total + self.lecam_weight * penalty
            metrics["lecam_penalty"] = penalty.detach()
        return total, metrics

    def adapt_augmentation(self, real_logits: torch.Tensor) -> None:
        """ADA's heuristic after a discriminator update: accumulate E[sign D(real)] (over the global batch) and,
        every ``ADA_INTERVAL`` updates, move p by ``± ADA_INTERVAL · global batch / ada_images`` within [0, 1]."""
        assert self.augment_probability is not None
        self.ada_signs = self.ada_signs + all_ranks_mean(torch.sign(real_logits.detach().float()).mean(), self.world)
        if self.updates % ADA_INTERVAL:
            return
        self.ada_rt = self.ada_signs / ADA_INTERVAL
        step = ADA_INTERVAL * real_logits.shape[0] * self.world.world_size / self.ada_images
        self.augment_probability = (self.augment_probability + torch.sign(self.ada_rt - self.ada_target) * step).clamp(0.0, 1.0)
        self.ada_signs = torch.zeros_like(self.ada_signs)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        real, labels = self.real_pairs(batch)
        latents = self.draw_latents(real.shape[0])
        regularised = bool(self.r1_gamma or self.lecam_weight)
        penalties: dict[str, torch.Tensor] = {}
        with self.precision.autocast():
            fake = self.discriminator_view(self.generator_replica(latents, labels))
            real_seen = self.augmented(real)
            real_logits = self.discriminator_replica(real_seen, labels)
            fake_logits = self.discriminator_replica(self.augmented(fake.detach()), labels)
            loss_d = discriminator_loss(real_logits, fake_logits, self.loss)
            if regularised:
                extra, penalties = self.regularisation(real_seen, labels, real_logits, fake_logits)
                loss_d = loss_d + extra
        self.optimise(loss_d, self.discriminator_optimizer, self.discriminator_scaler)
        self.updates += 1
        if self.ada_target:
            self.adapt_augmentation(real_logits)
            penalties["augment_probability"] = self.augment_probability.clone()  # type: ignore[union-attr]
            penalties["ada_rt"] = self.ada_rt

        self.discriminator.requires_grad_(False)  # the generator's step does not need D's weight gradients
        with self.precision.autocast():
            loss_g = generator_loss(self.discriminator(self.augmented(fake), labels), self.loss)
        self.optimise(loss_g, self.generator_optimizer, self.generator_scaler)
        self.discriminator.requires_grad_(True)
        return {
            "discriminator_loss": loss_d.detach(),
            "generator_loss": loss_g.detach(),
            "real_logit": real_logits.detach().float().mean(),
            "fake_logit": fake_logits.detach().float().mean(),
            **penalties,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "updates": self.updates,
            "lecam_anchors": self.lecam_anchors.clone(),
            "last_r1": self.last_r1.clone(),
            **({"augment_probability": self.augment_probability.clone(), "ada_signs": self.ada_signs.clone(),
                "ada_rt": self.ada_rt.clone()} if self.augment_probability is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        # Checkpoints from before the regularisers lack these keys; they ran with both off.
        self.updates = int(state.get("updates", 0))
        if "lecam_anchors" in state:
            self.lecam_anchors = state["lecam_anchors"].to(self.device, torch.float32)
            self.last_r1 = state["last_r1"].to(self.device, torch.float32)
        if self.augment_probability is not None and "augment_probability" in state:
            self.augment_probability = state["augment_probability"].to(self.device, torch.float32)
            self.ada_signs = state["ada_signs"].to(self.device, torch.float32)
            self.ada_rt = state["ada_rt"].to(self.device, torch.float32)
