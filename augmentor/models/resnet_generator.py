"""The ResNet image-to-image generator of CycleGAN (Zhu et al. 2017, after Johnson et al. 2016).

A 7x7 convolution, ``downsamplings`` stride-2 convolutions (width doubling each time), ``residual_blocks``
residual blocks at the lowest resolution, as many x2 upsamplings back, and a 7x7 convolution to the output
through ``tanh``. Instance normalisation without affine parameters and reflection padding, as published.
Upsampling is either the published transposed convolution or a nearest-neighbour resize followed by a
convolution ("resize-conv", Odena et al. 2016, "Deconvolution and checkerboard artifacts"), which cannot
make the checkerboard pattern transposed convolutions are prone to -- a high-frequency pattern is exactly
where a CycleGAN can hide its source image (Chu et al. 2017).

Single-channel HU windowed to [-1, 1] in and out. The network is fully convolutional: an input whose
sides are not multiples of ``2 ** downsamplings`` is reflection-padded up to the next multiple and the
output cropped back, so any size (from ``2 ** downsamplings`` pixels up) translates at its own size.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from augmentor.errors import did_you_mean
from augmentor.models.dcgan import _check_positive, dcgan_init


class Upsampling(StrEnum):
    TRANSPOSED = "transposed"  # ConvTranspose2d(3, stride 2), as published
    RESIZE_CONV = "resize-conv"  # nearest x2 then a 3x3 convolution (Odena et al. 2016)


def parse_upsampling(name: str) -> Upsampling:
    try:
        return Upsampling(name)
    except ValueError:
        valid = [u.value for u in Upsampling]
        raise ValueError(f"unknown upsampling {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}") from None


def pad_to_multiple(images: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflection-pad (B, C, H, W) on the bottom and right up to multiples of ``multiple``.

    Returns:
        (padded images, (H, W) of the input) -- crop the output back with ``[..., :H, :W]``.
    """
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        # reflection needs a pad smaller than the side; replicate covers the tiny sizes where it is not
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
    return images, (height, width)


class ResidualBlock(nn.Module):
    """x + (pad, conv3x3, IN, ReLU, pad, conv3x3, IN)(x): the CycleGAN residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.body(features)


class ResnetGenerator(nn.Module):
    """Image -> image of the same size, values in [-1, 1].

    Args:
        in_channels: input channels (1 for CT).
        out_channels: output channels (1 for CT).
        base_channels: width of the first and last layers (64 published); the lowest resolution has
            ``base_channels * 2 ** downsamplings``.
        residual_blocks: residual blocks at the lowest resolution (9 published for 256x256, 6 for 128x128).
        downsamplings: stride-2 stages (2 published).
        upsampling: "transposed" (published) or "resize-conv".
    """

    family: ClassVar[str] = "resnet-generator"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 64,
        residual_blocks: int = 9,
        downsamplings: int = 2,
        upsampling: str = Upsampling.TRANSPOSED.value,
    ) -> None:
        super().__init__()
        _check_positive(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels)
        if residual_blocks < 0 or downsamplings < 0:
            raise ValueError(f"residual_blocks and downsamplings must be >= 0, got {residual_blocks} and {downsamplings}")
        mode = parse_upsampling(upsampling)
        self.config: dict[str, Any] = {
            "in_channels": in_channels, "out_channels": out_channels, "base_channels": base_channels,
            "residual_blocks": residual_blocks, "downsamplings": downsamplings, "upsampling": mode.value,
        }
        self.size_multiple = 2**downsamplings
        layers: list[nn.Module] = [  # (B, in, H, W) -> (B, base, H, W)
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, base_channels, 7), nn.InstanceNorm2d(base_channels), nn.ReLU(inplace=True),
        ]
        width = base_channels
        for _ in range(downsamplings):  # (B, w, s, s) -> (B, 2w, s/2, s/2)
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * width), nn.ReLU(inplace=True)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(residual_blocks)]  # (B, w, s, s) unchanged
        for _ in range(downsamplings):  # (B, w, s, s) -> (B, w/2, 2s, 2s)
            if mode is Upsampling.TRANSPOSED:
                layers.append(nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1))
            else:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(width, width // 2, 3)]
            layers += [nn.InstanceNorm2d(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]  # (B, base, H, W) -> (B, out, H, W)
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)  # N(0, 0.02), as CycleGAN's "normal" initialisation

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) in [-1, 1] -> (B, out_channels, H, W) in [-1, 1]."""
        padded, (height, width) = pad_to_multiple(images, self.size_multiple)
        return self.main(padded)[..., :height, :width]
