"""The WGAN-GP update rule (Gulrajani et al. 2017, Algorithm 1; Onishi et al. 2019 used a Wasserstein GAN).

One step = ``n_critic`` critic updates, each on its own real batch and fresh fakes, with loss
``D(fake) - D(real) + λ_gp · GP``, then one generator update with loss ``-D(G(z))``. The defaults are the
paper's: n_critic 5, λ_gp 10, Adam(lr 1e-4, β = (0, 0.9)). The gradient penalty is taken on random
interpolates of the (augmented) real and fake batches the critic saw.

Data-parallel (see :mod:`augmentor.training.distributed`): the critic's Wasserstein terms go through its
DDP wrapper; the gradient penalty, which needs a double backward DDP does not support, goes through the
plain critic on this rank's rows, and joins the same backward, so DDP averages the whole gradient.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from augmentor.training.algorithm import AdversarialAlgorithm, Batch
from augmentor.training.losses import AdversarialLoss, discriminator_loss, generator_loss, gradient_penalty


class WassersteinGP(AdversarialAlgorithm):
    """Class-conditional Wasserstein GAN with gradient penalty.

    Args:
        generator, critic: the networks (the critic must not use batch normalisation).
        n_critic: critic updates per generator update; each consumes one real batch.
        lambda_gp: weight of the gradient penalty.
        **settings: learning rates, betas, augment, precision, seed, device (see
            :class:`~augmentor.training.algorithm.AdversarialAlgorithm`).
    """

    def __init__(
        self, generator: nn.Module, critic: nn.Module, *, n_critic: int = 5, lambda_gp: float = 10.0, **settings: Any
    ) -> None:
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules()):
            raise ValueError("the WGAN-GP critic must not use batch normalization (the gradient penalty is per sample)")
        super().__init__(generator, critic, **settings)
        self.n_critic = n_critic
        self.lambda_gp = lambda_gp
        self.real_batches_per_step = n_critic

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        real_all, labels_all = self.real_pairs(batch)
        critic = self.discriminator
        loss_sum = penalty_sum = distance_sum = torch.zeros((), device=self.device)
        for real, labels in zip(real_all.tensor_split(self.n_critic), labels_all.tensor_split(self.n_critic), strict=True):
            latents = self.draw_latents(real.shape[0])
            epsilon = self.draw_uniform(real.shape[0], 1, 1, 1)
            with self.precision.autocast():
                with torch.no_grad():
                    fake = self.discriminator_view(self.generator(latents, labels))
                real_seen, fake_seen = self.augmented(real), self.augmented(fake)
                real_scores = self.discriminator_replica(real_seen, labels)
                fake_scores = self.discriminator_replica(fake_seen, labels)
                penalty = gradient_penalty(partial(critic, labels=labels), real_seen, fake_seen, epsilon, self.discriminator_scaler)
                loss_c = discriminator_loss(real_scores, fake_scores, AdversarialLoss.WASSERSTEIN) + self.lambda_gp * penalty
            self.optimise(loss_c, self.discriminator_optimizer, self.discriminator_scaler)
            loss_sum = loss_sum + loss_c.detach()
            penalty_sum = penalty_sum + penalty.detach()
            distance_sum = distance_sum + (real_scores.detach().float().mean() - fake_scores.detach().float().mean())

        critic.requires_grad_(False)
        latents = self.draw_latents(real.shape[0])
        with self.precision.autocast():
            fake = self.discriminator_view(self.generator_replica(latents, labels))
            loss_g = generator_loss(critic(self.augmented(fake), labels), AdversarialLoss.WASSERSTEIN)
        self.optimise(loss_g, self.generator_optimizer, self.generator_scaler)
        critic.requires_grad_(True)
        return {
            "critic_loss": loss_sum / self.n_critic,
            "generator_loss": loss_g.detach(),
            "gradient_penalty": penalty_sum / self.n_critic,
            "wasserstein_distance": distance_sum / self.n_critic,
        }
