"""Where and in what precision training runs: device auto-detection and the mixed-precision policy.

Mixed precision (``mixed_precision`` in a recipe): ``auto`` is bfloat16 autocast on a CUDA GPU that
supports it (no loss scaling needed: bf16 has float32's exponent range), float16 autocast with a
``GradScaler`` on older GPUs, and full float32 on the CPU (CPU autocast is rarely faster, and float32
keeps the CPU run bit-reproducible). ``bf16``, ``fp16`` and ``off`` force a choice. Weights, optimiser
states and losses stay float32 in every case.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import StrEnum

import torch

from augmentor.errors import AugmentorError, did_you_mean


class MixedPrecision(StrEnum):
    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    OFF = "off"


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``None`` or "auto": the first CUDA GPU if there is one, else the CPU; otherwise the named device."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        valid = ["auto", "cpu", "cuda", "cuda:0", "mps"]
        raise AugmentorError(f"unknown device {name!r}{did_you_mean(name, valid)}; try one of: {', '.join(valid)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AugmentorError(f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise AugmentorError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AugmentorError(f"device {name!r} asked for, but MPS is not available; use --device cpu")
    return device


@dataclass(frozen=True)
class Precision:
    """The resolved mixed-precision policy for one device."""

    device_type: str
    dtype: torch.dtype | None  # autocast dtype; None: float32 throughout

    @property
    def needs_loss_scaling(self) -> bool:
        return self.dtype is torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled only for float16 (disabled, it passes losses and steps through)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_loss_scaling)

    def describe(self) -> str:
        return "float32" if self.dtype is None else f"{str(self.dtype).removeprefix('torch.')} autocast"


def resolve_precision(mode: str, device: torch.device) -> Precision:
    """Turn a recipe's ``mixed_precision`` value into a :class:`Precision` for ``device``."""
    choice = MixedPrecision(mode)
    if choice is MixedPrecision.OFF:
        return Precision(device.type, None)
    if choice is MixedPrecision.AUTO:
        if device.type != "cuda":
            return Precision(device.type, None)
        return Precision("cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if choice is MixedPrecision.FP16:
        if device.type != "cuda":
            raise AugmentorError(f"mixed_precision 'fp16' needs a CUDA GPU (device is {device}); use 'bf16' or 'off'")
        return Precision("cuda", torch.float16)
    return Precision(device.type, torch.bfloat16)
