"""Adversarial losses as pure functions of logits (the networks return raw logits; the losses own the activation).

All losses are computed in float32 (logits from a bf16/fp16 autocast region are upcast first) and return
scalar tensors (means over the batch).

- non-saturating (Goodfellow et al. 2014): D minimises ``softplus(-D(x)) + softplus(D(G(z)))``, i.e. the
  binary cross-entropy on logits; G minimises ``softplus(-D(G(z)))``.
- hinge (Lim & Ye 2017; Miyato et al. 2018): D minimises ``relu(1 - D(x)) + relu(1 + D(G(z)))``;
  G minimises ``-D(G(z))``.
- least-squares (Mao et al. 2017; CycleGAN's default): D minimises ``((D(x) - 1)^2 + D(G(z))^2) / 2``;
  G minimises ``(D(G(z)) - 1)^2`` (the halving of D's loss and none on G's, as CycleGAN's code does).
  Logits may be patch maps (B, 1, h, w): the mean runs over every patch.
- wasserstein (Arjovsky et al. 2017): the critic minimises ``D(G(z)) - D(x)``; G minimises ``-D(G(z))``.
- gradient penalty (Gulrajani et al. 2017, eq. 3): ``E[(||grad_x̂ D(x̂)||_2 - 1)^2]`` with
  ``x̂ = ε x + (1 - ε) G(z)``, ε ~ U[0, 1] per sample.
- R1 penalty (Mescheder et al. 2018, eq. 9): ``E_x[||grad_x D(x)||_2^2]`` on real samples; the caller
  weighs it by γ/2. It shares the input-gradient code (:func:`input_gradients`) with the gradient penalty.
- LeCam regulariser (Tseng et al. 2021, eq. 3): ``E_x[(D(x) - α_F)^2] + E_z[(D(G(z)) - α_R)^2]`` with α_R,
  α_F exponential moving averages of D's real and fake logits (the anchors, kept by the algorithm).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import torch
import torch.nn.functional as F


class AdversarialLoss(StrEnum):
    NON_SATURATING = "non-saturating"
    HINGE = "hinge"
    LEAST_SQUARES = "least-squares"
    WASSERSTEIN = "wasserstein"


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: AdversarialLoss | str) -> torch.Tensor:
    """The discriminator's (or critic's) loss for one batch of real and one of fake logits."""
    real, fake = real_logits.float(), fake_logits.float()
    loss = AdversarialLoss(kind)
    if loss is AdversarialLoss.NON_SATURATING:
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if loss is AdversarialLoss.HINGE:
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if loss is AdversarialLoss.LEAST_SQUARES:
        return 0.5 * ((real - 1.0).square().mean() + fake.square().mean())
    return fake.mean() - real.mean()


def generator_loss(fake_logits: torch.Tensor, kind: AdversarialLoss | str) -> torch.Tensor:
    """The generator's loss given the discriminator's logits on its samples."""
    fake = fake_logits.float()
    loss = AdversarialLoss(kind)
    if loss is AdversarialLoss.NON_SATURATING:
        return F.softplus(-fake).mean()
    if loss is AdversarialLoss.LEAST_SQUARES:
        return (fake - 1.0).square().mean()
    return -fake.mean()  # hinge and wasserstein


def interpolate(real: torch.Tensor, fake: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """``ε real + (1 - ε) fake`` with ε of shape (B, 1, 1, 1) (broadcast over each sample).

    Under autocast the fakes may be bf16/fp16 and the reals float32; the result has the wider type.
    """
    dtype = torch.promote_types(real.dtype, fake.dtype)
    return torch.lerp(fake.to(dtype), real.to(dtype), epsilon.to(dtype))


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    epsilon: torch.Tensor,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """Gulrajani et al.'s two-sided penalty on random interpolates of real and fake samples.

    Args:
        critic: maps a batch of inputs to (B,) scores (e.g. ``lambda x: critic(x, labels)``).
        real: (B, C, H, W) real samples (as the critic sees them).
        fake: (B, C, H, W) generated samples, detached from the generator.
        epsilon: (B, 1, 1, 1) interpolation weights drawn from U[0, 1].
        scaler: the critic's loss scaler. Under float16 autocast the inner gradient is taken of the scaled
            scores, so that small gradients do not underflow in half precision, and unscaled before the norm
            (PyTorch's AMP examples, "gradient penalty"); the scale factor stays on the device (no host sync).

    Returns:
        The scalar penalty (not yet multiplied by λ); differentiable w.r.t. the critic's parameters.
    """
    gradients = input_gradients(critic, interpolate(real.detach(), fake.detach(), epsilon), scaler)
    # The epsilon inside the root keeps the penalty's own gradient finite where the gradient is zero.
    norms = torch.sqrt(gradients.flatten(1).square().sum(dim=1) + 1e-12)
    return (norms - 1.0).square().mean()


def input_gradients(
    critic: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, scaler: torch.amp.GradScaler | None = None
) -> torch.Tensor:
    """``grad_x sum_b critic(x)_b`` at ``x = inputs`` (detached), float32, differentiable w.r.t. the critic's parameters.

    Row b is the gradient of the summed scores w.r.t. sample b: ``grad D(x_b)`` when each score depends on its own
    sample only (no batch normalisation; a minibatch-std layer adds the other samples' share, as in StyleGAN). Under
    float16 autocast the gradient is taken of the scores times the scaler's factor, so that small gradients do
    not underflow in half precision, and divided by it afterwards (PyTorch's AMP examples, "gradient penalty");
    the factor stays on the device (no host sync).
    """
    points = inputs.detach().requires_grad_(True)
    scores = critic(points)
    if scaler is not None and scaler.is_enabled():
        factor = scaler.scale(torch.ones((), device=scores.device))
        (gradients,) = torch.autograd.grad(scores.float().sum() * factor, points, create_graph=True)
        return gradients.float() / factor
    (gradients,) = torch.autograd.grad(scores.float().sum(), points, create_graph=True)
    return gradients.float()


def r1_penalty(
    discriminator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, scaler: torch.amp.GradScaler | None = None
) -> torch.Tensor:
    """Mescheder et al.'s R1 penalty ``E_x[||grad_x D(x)||^2]`` on real samples (not yet multiplied by γ/2).

    Args:
        discriminator: maps a batch of inputs to (B,) logits (e.g. ``partial(discriminator, labels=labels)``).
        real: (B, C, H, W) real samples, as the discriminator sees them.
        scaler: the discriminator's loss scaler (float16: see :func:`input_gradients`).

    Returns:
        The scalar penalty; differentiable w.r.t. the discriminator's parameters.
    """
    return input_gradients(discriminator, real, scaler).flatten(1).square().sum(dim=1).mean()


def lecam_penalty(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, real_anchor: torch.Tensor, fake_anchor: torch.Tensor
) -> torch.Tensor:
    """Tseng et al.'s LeCam regulariser ``E[(D(x) - α_F)^2] + E[(D(G(z)) - α_R)^2]`` (not yet weighted).

    Args:
        real_logits, fake_logits: (B,) logits of a real and a fake batch.
        real_anchor, fake_anchor: scalar moving averages of the real and fake logits (no gradient flows to them).

    Returns:
        The scalar penalty. (The paper's eq. 3; its code clips each term one-sidedly with a ReLU, not done here.)
    """
    real, fake = real_logits.float(), fake_logits.float()
    return (real - fake_anchor.detach()).square().mean() + (fake - real_anchor.detach()).square().mean()
