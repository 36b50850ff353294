"""Networks: shapes at 64 and 128, determinism given latents, the registry and rebuilding from a config."""

from __future__ import annotations

import json
import typing

import pytest
import torch

from augmentor.errors import AugmentorError
from augmentor.models import (
    NETWORKS,
    ConditionalDCGANGenerator,
    ProjectionDiscriminator,
    WassersteinCritic,
    build_network,
    network_spec,
)
from augmentor.training import recipe


@pytest.mark.parametrize("size", [64, 128])
def test_shapes(size: int) -> None:
    torch.manual_seed(0)
    generator = ConditionalDCGANGenerator(num_classes=3, latent_dim=16, image_size=size, base_channels=4)
    discriminator = ProjectionDiscriminator(num_classes=3, image_size=size, base_channels=4)
    critic = WassersteinCritic(num_classes=3, image_size=size, base_channels=4)
    labels = torch.tensor([0, 1, 2])
    pairs = generator(torch.randn(3, 16), labels)
    assert pairs.shape == (3, 2, size, size)
    assert pairs.abs().max() <= 1.0  # tanh on both channels
    assert discriminator(pairs, labels).shape == (3,)
    assert critic(pairs, labels).shape == (3,)


def test_sizes_must_be_powers_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        ConditionalDCGANGenerator(num_classes=2, image_size=60)


def test_generator_is_deterministic_given_latents() -> None:
    torch.manual_seed(0)
    generator = ConditionalDCGANGenerator(num_classes=2, latent_dim=8, image_size=16, base_channels=4).eval()
    latents, labels = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        batch = generator(latents, labels)
        again = generator(latents, labels)
        alone = generator(latents[2:3], labels[2:3])
    assert torch.equal(batch, again)
    torch.testing.assert_close(alone[0], batch[2], rtol=0, atol=1e-6)  # independent of batch mates


def test_projection_uses_the_class() -> None:
    torch.manual_seed(0)
    discriminator = ProjectionDiscriminator(num_classes=2, image_size=16, base_channels=4, normalization="none").eval()
    pairs = torch.rand(1, 2, 16, 16) * 2 - 1
    assert not torch.equal(discriminator(pairs, torch.tensor([0])), discriminator(pairs, torch.tensor([1])))


@pytest.mark.parametrize("family", [ConditionalDCGANGenerator.family, ProjectionDiscriminator.family, WassersteinCritic.family])
def test_network_rebuilds_from_its_recorded_config(family: str) -> None:
    torch.manual_seed(0)
    network = build_network(family, num_classes=2, image_size=16, base_channels=4)
    spec = json.loads(json.dumps(network_spec(network)))  # what a card stores
    rebuilt = build_network(spec["family"], **spec["config"])
    rebuilt.load_state_dict(network.state_dict())
    network.eval(), rebuilt.eval()
    labels = torch.tensor([0, 1])
    if family == ConditionalDCGANGenerator.family:
        inputs = torch.randn(2, network.latent_dim)
    else:
        inputs = torch.rand(2, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(network(inputs, labels), rebuilt(inputs, labels))


def test_unknown_family_is_one_line_listing_the_valid_ones() -> None:
    with pytest.raises(AugmentorError) as error:
        build_network("dcgan-generater", num_classes=2)
    message = str(error.value)
    assert "\n" not in message
    assert "did you mean 'dcgan-generator'" in message
    assert all(name in message for name in NETWORKS)


def test_bad_arguments_are_one_line() -> None:
    with pytest.raises(AugmentorError, match="cannot build"):
        build_network("projection-discriminator", num_classes=2, normalization="batchy")


def test_critic_refuses_batch_norm() -> None:
    with pytest.raises(ValueError, match="batch normalization"):
        WassersteinCritic(num_classes=2, normalization="batch")
    layers = WassersteinCritic(num_classes=2, image_size=16).modules()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in layers)


def test_recipe_names_match_the_registry() -> None:
    from augmentor.translation import recipe as translation_recipe

    names = set(typing.get_args(recipe.GeneratorFamily)) | set(typing.get_args(recipe.DiscriminatorFamily))
    model = translation_recipe.CycleGanModelSection
    names |= {model.generator, model.discriminator, "unet-segmenter"}  # the segmenters are built by name in translation.train
    assert names == set(NETWORKS)
