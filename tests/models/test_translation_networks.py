"""The translation networks: ResNet generator, PatchGAN discriminator (MONAI's), UNet segmenter."""

from __future__ import annotations

import json

import pytest
import torch

from augmentor.errors import AugmentorError
from augmentor.models import (
    PatchGANDiscriminator,
    ResnetGenerator,
    UNetSegmenter,
    build_network,
    network_spec,
)
from augmentor.models.patchgan import receptive_field


@pytest.mark.parametrize("upsampling", ["transposed", "resize-conv"])
@pytest.mark.parametrize("size", [(32, 32), (30, 30), (36, 44), (6, 10)])
def test_generator_translates_any_size_into_the_window(upsampling: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    generator = ResnetGenerator(base_channels=4, residual_blocks=2, upsampling=upsampling).eval()
    images = torch.rand(2, 1, *size) * 2 - 1
    with torch.no_grad():
        output = generator(images)
    assert output.shape == images.shape
    assert output.abs().max() <= 1.0
    with torch.no_grad():  # fully convolutional: no mixing across the batch (instance norm)
        torch.testing.assert_close(generator(images[1:]), output[1:], rtol=0, atol=1e-5)


def test_published_generator_has_instance_norm_and_reflection_padding() -> None:
    generator = ResnetGenerator()  # 9 blocks, 64 channels
    kinds = [type(m) for m in generator.modules()]
    assert kinds.count(torch.nn.InstanceNorm2d) == 2 + 2 * 9 + 1 + 2 and torch.nn.ReflectionPad2d in kinds
    assert not any(issubclass(kind, torch.nn.modules.batchnorm._BatchNorm) for kind in kinds)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in generator.modules()) == 2
    # the reference implementation's count (11.378 M for 3 channels in and out; 11.366 M for one)
    assert sum(p.numel() for p in generator.parameters()) == 11_365_633


def test_patchgan_is_the_70x70_discriminator_and_returns_patch_logits() -> None:
    assert receptive_field(3) == 70
    discriminator = PatchGANDiscriminator(base_channels=4)
    logits = discriminator(torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 1, 6, 6)  # 64 / 8 - 2 patches a side
    widths = [m.out_channels for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [4, 8, 16, 32, 1]
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in discriminator.modules())


@pytest.mark.parametrize(("family", "config", "inputs"), [
    ("resnet-generator", {"base_channels": 4, "residual_blocks": 1, "upsampling": "resize-conv"}, (1, 1, 20, 20)),
    ("patchgan-discriminator", {"base_channels": 4}, (1, 1, 32, 32)),
    ("unet-segmenter", {"num_labels": 3, "channels": [4, 8, 16], "residual_units": 0}, (1, 1, 18, 22)),
])
def test_translation_networks_rebuild_from_their_card(family: str, config: dict, inputs: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    network = build_network(family, **config).eval()
    spec = json.loads(json.dumps(network_spec(network)))
    rebuilt = build_network(spec["family"], **spec["config"]).eval()
    rebuilt.load_state_dict(network.state_dict())
    images = torch.rand(*inputs)
    with torch.no_grad():
        assert torch.equal(network(images), rebuilt(images))
    if family == "unet-segmenter":
        assert network(images).shape == (1, 3, 18, 22)  # any size: padded in, cropped out


def test_bad_translation_network_arguments_are_one_line() -> None:
    with pytest.raises(AugmentorError, match="did you mean 'resize-conv'"):
        build_network("resnet-generator", upsampling="resize_conv")
    with pytest.raises(AugmentorError, match="'instance', 'batch' or 'none'"):
        build_network("patchgan-discriminator", normalization="spectral")
    with pytest.raises(AugmentorError, match="two positive widths"):
        build_network(UNetSegmenter.family, channels=[8])
