"""HU windowing: the one mapping between stored physical units and network inputs in [-1, 1]."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

ArrayLike = TypeVar("ArrayLike", np.ndarray, "torch.Tensor")


def normalise(hu: ArrayLike, window: tuple[float, float]) -> ArrayLike:
    """Clip HU to ``window`` = (low, high) and map it linearly to [-1, 1]."""
    low, high = window
    if isinstance(hu, np.ndarray | np.generic):
        return np.clip((hu - low) * (2.0 / (high - low)) - 1.0, -1.0, 1.0)
    # A torch tensor (torch is imported only by callers that use it); an integer one becomes float32.
    # One new tensor, then in place: this runs on every batch a DataLoader worker reads.
    return (hu - low).mul_(2.0 / (high - low)).sub_(1.0).clamp_(-1.0, 1.0)


def denormalise(values: ArrayLike, window: tuple[float, float]) -> ArrayLike:
    """Inverse of :func:`normalise` for values in [-1, 1] (HU, float)."""
    low, high = window
    return (values + 1.0) * ((high - low) / 2.0) + low
