"""A registered segmentation network: the MONAI UNet of :func:`evaluation.models.build_segmenter`.

CycleGAN training uses it twice, for different jobs: as the *judge* behind the hallucination score (trained
on labelled domain-B slices only, never on translations, so it is independent of the generator it judges;
Cohen et al. 2018) and as the segmenter of the optional structure-consistency term (Zhang et al. 2018).
Registered so that a model card rebuilds it; an input whose sides are not multiples of the UNet's total
stride is reflection-padded and the output cropped back, so it segments any size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from augmentor.models.dcgan import _check_positive
from augmentor.models.resnet_generator import pad_to_multiple


class UNetSegmenter(nn.Module):
    """Image -> (B, num_labels, H, W) logits (label 0 is background).

    Args:
        in_channels: image channels (1 for CT).
        num_labels: mask labels including background.
        channels: widths per level; each level below the first halves the resolution.
        residual_units: residual units per block (0: plain convolutions).
    """

    family: ClassVar[str] = "unet-segmenter"

    def __init__(self, in_channels: int = 1, num_labels: int = 2, channels: Sequence[int] = (16, 32, 64), residual_units: int = 1) -> None:
        super().__init__()
        from evaluation.models import build_segmenter

        _check_positive(in_channels=in_channels, num_labels=num_labels)
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels must list at least two positive widths, got {list(channels)}")
        self.config: dict[str, Any] = {
            "in_channels": in_channels, "num_labels": num_labels, "channels": [int(c) for c in channels],
            "residual_units": residual_units,
        }
        self.num_labels = num_labels
        self.size_multiple = 2 ** (len(channels) - 1)
        self.network = build_segmenter(in_channels=in_channels, num_labels=num_labels, channels=channels, residual_units=residual_units)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) in [-1, 1] -> (B, num_labels, H, W) logits."""
        padded, (height, width) = pad_to_multiple(images, self.size_multiple)
        return self.network(padded)[..., :height, :width]
