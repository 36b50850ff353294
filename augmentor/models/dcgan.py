"""The DCGAN family: a class-conditional generator of (image, mask) pairs and a projection discriminator.

Generator (Radford et al. 2016, conditioned as in Frid-Adar et al. 2018): the latent vector and a
learned class embedding are concatenated and projected to a 4x4 map, then doubled in size by strided
transposed convolutions (BatchNorm + ReLU) up to ``image_size``. It emits ``image_channels + 1``
channels, all through ``tanh``:

- channels ``0 .. image_channels-1``: the image in [-1, 1] (the HU window mapped linearly, see
  :mod:`augmentor.data.intensity`);
- the last channel: the lesion mask in [-1, 1]. ``mask > 0`` is the lesion; ``(mask + 1) / 2`` is a soft
  probability. A tanh (rather than logits) keeps both channels on the same scale for the discriminator,
  which sees real masks mapped the same way (0 -> -1, lesion -> +1).

The forward pass draws no random numbers: in ``eval()`` mode, sample i depends only on the latent vector
and class you pass, so generation can draw latents per sample index.

Discriminator (Miyato & Koyama 2018, "cGANs with projection discriminator"): strided convolutions down
to 4x4, global sum pooling to a feature vector h, and the logit ``linear(h) + <embed(y), h>``. It returns
raw logits; the loss owns the activation.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import torch
from torch import nn

from augmentor.models.normalization import (
    Normalization,
    feature_normalization,
    parse_normalization,
    weight_normalization,
)

MAX_WIDTH_MULTIPLIER = 8  # widest layer is 8 x base_channels (DCGAN's 512 for base 64)


def _num_doublings(image_size: int) -> int:
    """Number of x2 resolution steps between 4x4 and ``image_size`` (a power of two, >= 8)."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return int(math.log2(image_size)) - 2


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            nn.init.zeros_(bias)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.InstanceNorm2d) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        if isinstance(module.bias, torch.Tensor):
            nn.init.zeros_(module.bias)


class ConditionalDCGANGenerator(nn.Module):
    """Latent vector + class -> (image, mask) with ``image_channels + 1`` channels in [-1, 1].

    Args:
        num_classes: number of classes (labels are 0 .. num_classes-1).
        latent_dim: size of the latent vector.
        image_size: output height and width (a power of two >= 8; 64 and 128 are the usual sizes).
        base_channels: width of the last hidden layer; earlier layers are 2x, 4x, ... up to 8x wider.
        embedding_dim: size of the learned class embedding concatenated to the latent vector.
        image_channels: image channels (1 for CT); one mask channel is added.
    """

    family: ClassVar[str] = "dcgan-generator"

    def __init__(
        self,
        num_classes: int,
        latent_dim: int = 128,
        image_size: int = 64,
        base_channels: int = 32,
        embedding_dim: int = 32,
        image_channels: int = 1,
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, latent_dim=latent_dim, base_channels=base_channels,
                        embedding_dim=embedding_dim, image_channels=image_channels)
        doublings = _num_doublings(image_size)
        self.config: dict[str, Any] = {
            "num_classes": num_classes, "latent_dim": latent_dim, "image_size": image_size,
            "base_channels": base_channels, "embedding_dim": embedding_dim, "image_channels": image_channels,
        }
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.image_channels = image_channels
        self.out_channels = image_channels + 1
        # widths[i] is the width at resolution 4 * 2**i, e.g. 64x64 with base 32: 256, 128, 64, 32
        widths = [base_channels * min(MAX_WIDTH_MULTIPLIER, 2 ** (doublings - 1 - i)) for i in range(doublings)]
        self.class_embedding = nn.Embedding(num_classes, embedding_dim)
        layers: list[nn.Module] = [
            # (B, latent + embedding, 1, 1) -> (B, widths[0], 4, 4)
            nn.ConvTranspose2d(latent_dim + embedding_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for width_in, width_out in itertools.pairwise(widths):
            layers += [  # (B, width_in, s, s) -> (B, width_out, 2s, 2s)
                nn.ConvTranspose2d(width_in, width_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width_out),
                nn.ReLU(inplace=True),
            ]
        layers += [  # (B, widths[-1], size/2, size/2) -> (B, image_channels + 1, size, size)
            nn.ConvTranspose2d(widths[-1], self.out_channels, 4, 2, 1),
            nn.Tanh(),
        ]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, latent: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) latents and (B,) class indices -> (B, image_channels + 1, size, size)."""
        code = torch.cat([latent, self.class_embedding(labels).to(latent.dtype)], dim=1)
        return self.main(code[:, :, None, None])


class ProjectionDiscriminator(nn.Module):
    """(image, mask) pair + class -> one raw logit per sample (projection conditioning).

    Args:
        num_classes: number of classes.
        image_size: input height and width (a power of two >= 8).
        base_channels: width of the first layer; later layers are 2x, 4x, ... up to 8x wider.
        in_channels: image channels + mask channel (2 for CT).
        normalization: "spectral" (default), "batch", "layer", "instance" or "none".
    """

    family: ClassVar[str] = "projection-discriminator"
    default_normalization: ClassVar[str] = Normalization.SPECTRAL.value

    def __init__(
        self,
        num_classes: int,
        image_size: int = 64,
        base_channels: int = 32,
        in_channels: int = 2,
        normalization: str | None = None,
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, base_channels=base_channels, in_channels=in_channels)
        doublings = _num_doublings(image_size)
        norm = parse_normalization(normalization or self.default_normalization)
        self._check_normalization(norm)
        self.config: dict[str, Any] = {
            "num_classes": num_classes, "image_size": image_size, "base_channels": base_channels,
            "in_channels": in_channels, "normalization": norm.value,
        }
        self.num_classes = num_classes
        # widths[i] is the width at resolution size / 2**(i+1), e.g. 64x64 with base 32: 32, 64, 128, 256
        widths = [base_channels * min(MAX_WIDTH_MULTIPLIER, 2**i) for i in range(doublings)]
        layers: list[nn.Module] = [  # (B, in, size, size) -> (B, widths[0], size/2, size/2); no norm on the input layer
            nn.Conv2d(in_channels, widths[0], 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for width_in, width_out in itertools.pairwise(widths):
            # (B, width_in, s, s) -> (B, width_out, s/2, s/2)
            layers.append(nn.Conv2d(width_in, width_out, 4, 2, 1, bias=norm is not Normalization.BATCH))
            if norm in (Normalization.BATCH, Normalization.LAYER, Normalization.INSTANCE):
                layers.append(feature_normalization(norm, width_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.features = nn.Sequential(*layers)  # ends at (B, widths[-1], 4, 4)
        self.linear = nn.Linear(widths[-1], 1)
        self.class_embedding = nn.Embedding(num_classes, widths[-1])
        self.apply(dcgan_init)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear | nn.Embedding):
                weight_normalization(norm, module)  # in place: registers the parametrisation on module

    def _check_normalization(self, norm: Normalization) -> None:
        """Subclasses refuse normalisations that break their algorithm."""

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, size, size) pairs and (B,) class indices -> (B,) raw logits."""
        features = self.features(images).sum(dim=(2, 3))  # global sum pooling: (B, C)
        projection = (self.class_embedding(labels).to(features.dtype) * features).sum(dim=1)
        return self.linear(features).squeeze(1) + projection
