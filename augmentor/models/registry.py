"""The registry of network families: name -> builder, and rebuilding a network from its recorded arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from augmentor.errors import AugmentorError, look_up_option
from augmentor.models.dcgan import ConditionalDCGANGenerator, ProjectionDiscriminator
from augmentor.models.patchgan import PatchGANDiscriminator
from augmentor.models.resnet_generator import ResnetGenerator
from augmentor.models.segmenter import UNetSegmenter
from augmentor.models.wgan_critic import WassersteinCritic

# Explicit registry: family name -> builder. Add a family by adding a line here.
NETWORKS: dict[str, Callable[..., nn.Module]] = {
    ConditionalDCGANGenerator.family: ConditionalDCGANGenerator,
    ProjectionDiscriminator.family: ProjectionDiscriminator,
    WassersteinCritic.family: WassersteinCritic,
    ResnetGenerator.family: ResnetGenerator,
    PatchGANDiscriminator.family: PatchGANDiscriminator,
    UNetSegmenter.family: UNetSegmenter,
}


def network_families() -> list[str]:
    """The registered network family names."""
    return list(NETWORKS)


def build_network(family: str, **config: Any) -> nn.Module:
    """Build a network of ``family`` from its recorded constructor arguments.

    Args:
        family: a registered family name (see :data:`NETWORKS`).
        **config: the constructor arguments, as recorded in ``network.config``.

    Returns:
        The freshly initialised network.

    Raises:
        AugmentorError: unknown family (listing the valid ones) or invalid arguments.
    """
    builder = NETWORKS[look_up_option(family, NETWORKS, what="network family")]
    try:
        return builder(**config)
    except (TypeError, ValueError) as error:
        raise AugmentorError(f"cannot build a {family!r} network: {error}") from None


def network_spec(network: nn.Module) -> dict[str, Any]:
    """``{"family": ..., "config": {...}}``: what a card stores to rebuild ``network``."""
    family, config = getattr(network, "family", None), getattr(network, "config", None)
    if not isinstance(family, str) or not isinstance(config, dict):
        raise TypeError(f"{type(network).__name__} does not record its family and config; it cannot go in a card")
    return {"family": family, "config": dict(config)}

