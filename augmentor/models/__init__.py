"""Networks (they only compute), one file per family, and the registry that rebuilds them from a card.

Every network records its constructor arguments in ``network.config`` (plain JSON values), so
``build_network(network.family, **network.config)`` rebuilds it; model cards store exactly that pair.
"""

from __future__ import annotations

from augmentor.models.card import MODEL_CARD, MODEL_WEIGHTS, load_generator, read_card, save_model
from augmentor.models.dcgan import ConditionalDCGANGenerator, ProjectionDiscriminator
from augmentor.models.patchgan import PatchGANDiscriminator
from augmentor.models.registry import NETWORKS, build_network, network_families, network_spec
from augmentor.models.resnet_generator import ResnetGenerator
from augmentor.models.segmenter import UNetSegmenter
from augmentor.models.wgan_critic import WassersteinCritic

__all__ = [
    "MODEL_CARD",
    "MODEL_WEIGHTS",
    "NETWORKS",
    "ConditionalDCGANGenerator",
    "PatchGANDiscriminator",
    "ProjectionDiscriminator",
    "ResnetGenerator",
    "UNetSegmenter",
    "WassersteinCritic",
    "build_network",
    "load_generator",
    "network_families",
    "network_spec",
    "read_card",
    "save_model",
]
