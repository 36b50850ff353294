"""The PatchGAN discriminator (Isola et al. 2017; CycleGAN's 70x70 discriminator), built on MONAI's.

MONAI's :class:`monai.networks.nets.PatchDiscriminator` with ``num_layers_d = 3`` and 4x4 kernels is
pix2pix's ``n_layers = 3`` discriminator: C64-C128-C256-C512 (three stride-2 convolutions, one stride-1)
and a stride-1 convolution to one channel, i.e. one logit per 70x70 patch. This wrapper records its
arguments (so a card can rebuild it), uses instance normalisation by default (as CycleGAN does) and
returns only the last output, a (B, 1, h, w) map of raw patch logits; the loss owns the activation.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import nn

from augmentor.models.dcgan import _check_positive
from augmentor.models.normalization import Normalization, parse_normalization

KERNEL_SIZE = 4
_MONAI_NORM = {Normalization.INSTANCE: "INSTANCE", Normalization.BATCH: "BATCH"}


def receptive_field(num_layers: int, kernel_size: int = KERNEL_SIZE) -> int:
    """Side of the input patch one output logit sees (70 for three layers of 4x4 kernels)."""
    strides = [2] + [2] * (num_layers - 1) + [1] + [1]  # initial, stride-2 layers, stride-1 layer, final
    field = 1
    for stride in reversed(strides):
        field = (field - 1) * stride + kernel_size
    return field


class PatchGANDiscriminator(nn.Module):
    """Image -> (B, 1, h, w) raw logits, one per overlapping patch.

    Args:
        in_channels: image channels (1 for CT).
        base_channels: width of the first layer (64 published); each later layer doubles it.
        num_layers: normalised layers (3 published: 70x70 patches).
        normalization: "instance" (published for CycleGAN), "batch" or "none".
    """

    family: ClassVar[str] = "patchgan-discriminator"

    def __init__(self, in_channels: int = 1, base_channels: int = 64, num_layers: int = 3, normalization: str = "instance") -> None:
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        _check_positive(in_channels=in_channels, base_channels=base_channels, num_layers=num_layers)
        norm = parse_normalization(normalization)
        if norm not in (Normalization.INSTANCE, Normalization.BATCH, Normalization.NONE):
            raise ValueError(f"a PatchGAN discriminator takes 'instance', 'batch' or 'none' normalization, not {norm.value!r}")
        self.config: dict[str, Any] = {
            "in_channels": in_channels, "base_channels": base_channels, "num_layers": num_layers, "normalization": norm.value,
        }
        self.receptive_field = receptive_field(num_layers)
        # MONAI's Convolution takes norm=None for no normalisation (its signature says str | tuple)
        self.network = PatchDiscriminator(
            spatial_dims=2, channels=base_channels, in_channels=in_channels, out_channels=1, num_layers_d=num_layers,
            kernel_size=KERNEL_SIZE, norm=cast(str, _MONAI_NORM.get(norm)), bias=norm is not Normalization.BATCH, padding=1,
            last_conv_kernel_size=KERNEL_SIZE,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, 1, h, w) patch logits (h = H/8 - 2 for three layers)."""
        return self.network(images)[-1]
