"""The WGAN-GP critic (Gulrajani et al. 2017), conditioned by projection (Miyato & Koyama 2018).

The same strided-convolution trunk as :class:`~augmentor.models.dcgan.ProjectionDiscriminator`, with
layer normalisation by default and batch normalisation refused: the gradient penalty constrains the
critic's gradient per sample, which batch statistics would couple across the batch. It returns an
unbounded score per sample (no sigmoid).
"""

from __future__ import annotations

from typing import ClassVar

from augmentor.models.dcgan import ProjectionDiscriminator
from augmentor.models.normalization import Normalization


class WassersteinCritic(ProjectionDiscriminator):
    """(image, mask) pair + class -> one unbounded score per sample.

    Args:
        num_classes: number of classes.
        image_size: input height and width (a power of two >= 8).
        base_channels: width of the first layer; later layers are 2x, 4x, ... up to 8x wider.
        in_channels: image channels + mask channel (2 for CT).
        normalization: "layer" (default), "instance", "spectral" or "none"; "batch" is refused.
    """

    family: ClassVar[str] = "wgan-critic"
    default_normalization: ClassVar[str] = Normalization.LAYER.value

    def _check_normalization(self, norm: Normalization) -> None:
        if norm is Normalization.BATCH:
            raise ValueError(
                "a WGAN-GP critic cannot use batch normalization (the gradient penalty is per sample); "
                "use 'layer', 'instance', 'spectral' or 'none'"
            )
