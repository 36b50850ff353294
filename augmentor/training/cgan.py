"""The conditional GAN update rule (Frid-Adar et al. 2018 trained a class-conditional DCGAN).

One step: draw latents for the batch's classes, update the discriminator on the real batch and the
detached fakes, then update the generator through the (frozen) discriminator on the same fakes, as in
PyTorch's DCGAN example. Losses: non-saturating (default) or hinge (:mod:`augmentor.training.losses`).
DiffAugment, when on, augments everything the discriminator sees.

Data-parallel: the fakes and the discriminator's loss go through the DDP wrappers (their gradients are
averaged across ranks); the generator's loss goes through the plain, frozen discriminator, since only
the generator's gradients are wanted from it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from augmentor.training.algorithm import AdversarialAlgorithm, Batch, image_mask_pairs
from augmentor.training.losses import AdversarialLoss, discriminator_loss, generator_loss


class ConditionalGAN(AdversarialAlgorithm):
    """Class-conditional GAN training.

    Args:
        generator, discriminator: the networks (the discriminator returns raw logits).
        loss: "non-saturating" (default) or "hinge".
        **settings: learning rates, betas, augment, precision, seed, device (see
            :class:`~augmentor.training.algorithm.AdversarialAlgorithm`).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, loss: str = "non-saturating", **settings: Any) -> None:
        self.loss = AdversarialLoss(loss)
        if self.loss is AdversarialLoss.WASSERSTEIN:
            raise ValueError("the Wasserstein loss needs a Lipschitz constraint: use WassersteinGP")
        super().__init__(generator, discriminator, **settings)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        real, labels = image_mask_pairs(batch)
        latents = self.draw_latents(real.shape[0])
        with self.precision.autocast():
            fake = self.generator_replica(latents, labels)
            real_logits = self.discriminator_replica(self.augmented(real), labels)
            fake_logits = self.discriminator_replica(self.augmented(fake.detach()), labels)
            loss_d = discriminator_loss(real_logits, fake_logits, self.loss)
        self.optimise(loss_d, self.discriminator_optimizer, self.discriminator_scaler)

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
        }
