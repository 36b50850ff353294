"""Losses: known values, the direction they push, and the gradient penalty of known critics."""

from __future__ import annotations

import math

import pytest
import torch

from augmentor.training.losses import discriminator_loss, generator_loss, gradient_penalty, interpolate


def test_non_saturating_values() -> None:
    zeros = torch.zeros(4)
    assert discriminator_loss(zeros, zeros, "non-saturating").item() == pytest.approx(2 * math.log(2))
    assert generator_loss(zeros, "non-saturating").item() == pytest.approx(math.log(2))
    confident = discriminator_loss(torch.full((4,), 10.0), torch.full((4,), -10.0), "non-saturating")
    assert confident.item() < 1e-3


def test_hinge_and_wasserstein_values() -> None:
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    assert discriminator_loss(real, fake, "hinge").item() == pytest.approx(0.5 + 0.75)
    assert generator_loss(fake, "hinge").item() == pytest.approx(0.75)
    assert discriminator_loss(real, fake, "wasserstein").item() == pytest.approx(-0.75 - 1.0)


@pytest.mark.parametrize("kind", ["non-saturating", "hinge", "wasserstein"])
def test_generator_loss_falls_as_the_discriminator_is_fooled(kind: str) -> None:
    assert generator_loss(torch.full((3,), 1.0), kind) < generator_loss(torch.full((3,), -1.0), kind)


def test_losses_upcast_low_precision_logits() -> None:
    logits = torch.zeros(4, dtype=torch.bfloat16)
    assert discriminator_loss(logits, logits, "non-saturating").dtype == torch.float32


def test_gradient_penalty_of_linear_critics() -> None:
    real, fake = torch.rand(5, 2, 4, 4), torch.rand(5, 2, 4, 4)
    epsilon = torch.rand(5, 1, 1, 1)
    direction = torch.randn(2 * 4 * 4)
    unit = direction / direction.norm()

    def critic_with(weight: torch.Tensor):
        return lambda x: x.flatten(1) @ weight

    assert gradient_penalty(critic_with(unit), real, fake, epsilon).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_penalty(critic_with(2 * unit), real, fake, epsilon).item() == pytest.approx(1.0, rel=1e-5)


def test_gradient_penalty_reaches_the_critic_parameters() -> None:
    weight = torch.randn(8, requires_grad=True)
    penalty = gradient_penalty(lambda x: x.flatten(1) @ weight, torch.rand(3, 2, 2, 2), torch.rand(3, 2, 2, 2), torch.rand(3, 1, 1, 1))
    penalty.backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_gradient_penalty_with_loss_scaling_is_the_unscaled_penalty() -> None:
    """The fp16 path scales the inner gradient (here by 2**16, enabled on the CPU to run it) and unscales it."""
    weight = torch.randn(8, requires_grad=True)
    inputs = torch.rand(3, 2, 2, 2), torch.rand(3, 2, 2, 2), torch.rand(3, 1, 1, 1)
    plain = gradient_penalty(lambda x: torch.tanh(x.flatten(1) @ weight), *inputs)
    (plain_gradient,) = torch.autograd.grad(plain, weight)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaled = gradient_penalty(lambda x: torch.tanh(x.flatten(1) @ weight), *inputs, scaler=scaler)
    (scaled_gradient,) = torch.autograd.grad(scaled, weight)
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-5)
    torch.testing.assert_close(scaled_gradient, plain_gradient, rtol=1e-5, atol=1e-7)


def test_interpolate_endpoints() -> None:
    real, fake = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    mixed = interpolate(real, fake, torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
    assert torch.equal(mixed[0], real[0]) and torch.equal(mixed[1], fake[1])
