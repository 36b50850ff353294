"""Exponential moving average of a network's weights (the generator that ships), and standing BN statistics.

An EMA of the generator's weights (Karras et al. 2018; Yazıcı et al. 2019) gives visibly better and more
stable samples than the last iterate. The shadow copy's buffers (BatchNorm running statistics) are
copied, not averaged. Because those statistics were gathered by the training weights, a shadow is
recalibrated before it is used (:func:`recalibrate_batch_norm`: "standing statistics", as in BigGAN).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn


class ExponentialMovingAverage:
    """A shadow copy of ``network`` whose weights follow ``decay * shadow + (1 - decay) * weights``.

    Args:
        network: the network to follow (copied once; later updates read its current weights).
        decay: the long-run decay.
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after n updates, so a short run is not dominated by
            the random initial weights.
    """

    def __init__(self, network: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.shadow = copy.deepcopy(network).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """Move the shadow towards ``network`` (foreach kernels, no host synchronisation)."""
        weight = 1.0 - self.current_decay()
        shadow_parameters: list[torch.Tensor] = list(self.shadow.parameters())
        torch._foreach_lerp_(shadow_parameters, [p.detach() for p in network.parameters()], weight)
        shadow_buffers: list[torch.Tensor] = list(self.shadow.buffers())
        if shadow_buffers:
            torch._foreach_copy_(shadow_buffers, list(network.buffers()))
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow.load_state_dict(state["shadow"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])


@torch.no_grad()
def recalibrate_batch_norm(network: nn.Module, batches: Iterable[Sequence[torch.Tensor]]) -> nn.Module:
    """Recompute every BatchNorm's running statistics as the average over ``batches`` of inputs.

    Args:
        network: changed in place (only its BatchNorm buffers); left in eval mode.
        batches: argument tuples for ``network(*arguments)``.

    Returns:
        ``network``.
    """
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        momenta = [m.momentum for m in norms]
        for module in norms:
            module.reset_running_stats()
            module.momentum = None  # cumulative average over all batches
        network.train()
        for arguments in batches:
            network(*arguments)
        for module, momentum in zip(norms, momenta, strict=True):
            module.momentum = momentum
    return network.eval()
