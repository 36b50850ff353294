"""Normalisation choices shared by the discriminators and critics.

``batch``: BatchNorm (DCGAN, Radford et al. 2016). ``spectral``: spectral normalisation of every weight
(Miyato et al. 2018; what Miyato & Koyama's projection discriminator used). ``layer``: layer
normalisation over (C, H, W) per sample, implemented as ``GroupNorm(1, C)`` (what Gulrajani et al. 2017
recommend for a WGAN-GP critic: batch norm makes the gradient penalty depend on the other samples of
the batch). ``instance``: InstanceNorm with an affine map. ``none``: plain convolutions.
"""

from __future__ import annotations

from enum import StrEnum

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from augmentor.errors import did_you_mean


class Normalization(StrEnum):
    BATCH = "batch"
    SPECTRAL = "spectral"
    LAYER = "layer"
    INSTANCE = "instance"
    NONE = "none"


def parse_normalization(name: str) -> Normalization:
    """The :class:`Normalization` called ``name``; ValueError listing the valid ones otherwise."""
    try:
        return Normalization(name)
    except ValueError:
        valid = [n.value for n in Normalization]
        raise ValueError(f"unknown normalization {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}") from None


def feature_normalization(kind: Normalization, channels: int) -> nn.Module:
    """The activation normalisation layer after a convolution (identity for ``spectral`` and ``none``)."""
    if kind is Normalization.BATCH:
        return nn.BatchNorm2d(channels)
    if kind is Normalization.LAYER:
        return nn.GroupNorm(1, channels)
    if kind is Normalization.INSTANCE:
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def weight_normalization(kind: Normalization, layer: nn.Module) -> nn.Module:
    """``layer`` with spectral normalisation applied to its weight when ``kind`` is ``spectral``."""
    return spectral_norm(layer) if kind is Normalization.SPECTRAL else layer
