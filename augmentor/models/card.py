"""Model directories: ``model.safetensors`` (weights) + ``model.json`` (the card). Nothing is unpickled.

The card is a JSON object; the keys every card has:

``format`` ("augmentor-model"), ``format_version`` (1), ``name``, ``tool_version``, ``created``,
``architecture`` (``{"family", "config"}``: rebuilt with :func:`augmentor.models.registry.build_network`),
``weights_sha256`` (of ``model.safetensors``), ``weights_dtype``, and ``class_names`` (ordered; label i is
``class_names[i]``).

A card written by :func:`augmentor.training.run.train` also has: ``hu_window`` ([low, high]: image values
in [-1, 1] map back to HU through it), ``image_size``, ``image_channels``, ``modality``,
``pixel_spacing_mm``, ``mask_label_names``, ``latent_dim``, ``latent_distribution``, ``outputs`` (how to
read the generator's channels: image(s) through tanh, then the mask as a tanh output or a logit; lesion
where mask > 0 either way), ``algorithm``,
``recipe`` (resolved), ``training_data`` (``path``: the file's name only, ``sha256`` of the file, ``patients_sha256`` of the set of
patient ids, counts), ``steps``, ``wall_time_s``, ``final_losses``, ``device``, ``precision``, ``command`` (paths reduced to file names).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from torch import nn

from augmentor import __version__
from augmentor.atomic import write_bytes_atomic
from augmentor.data.provenance import sha256_file
from augmentor.errors import AugmentorError
from augmentor.models.registry import build_network, network_spec

MODEL_WEIGHTS = "model.safetensors"
MODEL_CARD = "model.json"
CARD_FORMAT = "augmentor-model"
CARD_FORMAT_VERSION = 1


def _storage_tensors(network: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state dict on the CPU, floating tensors cast to ``dtype``, each with its own storage."""
    tensors = {}
    for key, tensor in network.state_dict().items():
        value = tensor.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous().clone()
    return tensors


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to a temporary sibling, then rename it onto ``path``."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def write_safetensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write tensors as safetensors atomically. Returns the file's SHA-256."""
    data = save_tensors(tensors, metadata=metadata)
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def save_model(
    directory: str | Path, network: nn.Module, card: Mapping[str, Any], *, dtype: torch.dtype = torch.float16
) -> Path:
    """Write ``network`` and its card into ``directory`` (weights first, card last; each atomically).

    Args:
        directory: the model directory (created if needed).
        network: a registered network (it records ``family`` and ``config``).
        card: the card's other fields (class names, HU window, recipe, ...).
        dtype: storage dtype of floating tensors (float16 halves the size; loading casts back).

    Returns:
        The path of the card.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / MODEL_WEIGHTS
    digest = write_safetensors_atomic(weights, _storage_tensors(network, dtype), metadata={"format": CARD_FORMAT})
    full_card = {
        "format": CARD_FORMAT,
        "format_version": CARD_FORMAT_VERSION,
        "name": folder.resolve().name,
        "tool_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **dict(card),
        "architecture": network_spec(network),
        "weights_sha256": digest,
        "weights_dtype": str(dtype).removeprefix("torch."),
    }
    write_json_atomic(folder / MODEL_CARD, full_card)
    return folder / MODEL_CARD


def read_card(directory: str | Path) -> dict[str, Any]:
    """Read and check a model directory's card (without loading weights)."""
    folder = Path(directory)
    path = folder / MODEL_CARD
    if not folder.is_dir():
        raise AugmentorError(f"{folder}: model directory not found")
    if not path.is_file():
        raise AugmentorError(f"{folder}: no {MODEL_CARD}; not a model directory")
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AugmentorError(f"{path}: unreadable model card ({error})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise AugmentorError(f"{path}: not an augmentor model card")
    if card.get("format_version") != CARD_FORMAT_VERSION:
        raise AugmentorError(f"{path}: card format version {card.get('format_version')!r} is not supported (this augmentor reads {CARD_FORMAT_VERSION})")
    for key in ("architecture", "weights_sha256", "class_names"):
        if key not in card:
            raise AugmentorError(f"{path}: model card lacks {key!r}")
    return card


def load_generator(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model directory's network from its card and load its checked weights.

    Args:
        directory: a directory with ``model.json`` and ``model.safetensors``.
        device: where to put the network.

    Returns:
        (network in eval mode with gradients off, card dict).

    Raises:
        AugmentorError: one line, for a missing, corrupt or mismatched (SHA-256) weights file, or a card
            that does not describe the weights.
    """
    card = read_card(directory)
    weights = Path(directory) / MODEL_WEIGHTS
    if not weights.is_file():
        raise AugmentorError(f"{weights}: weights file missing")
    digest = sha256_file(weights)
    if digest != card["weights_sha256"]:
        raise AugmentorError(
            f"{weights}: SHA-256 {digest[:12]}… does not match the card's {str(card['weights_sha256'])[:12]}…; "
            "the weights are corrupt or belong to another model"
        )
    architecture = card["architecture"]
    network = build_network(architecture["family"], **architecture["config"])
    try:
        tensors = load_file(str(weights), device="cpu")
        network.load_state_dict(tensors, strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AugmentorError(f"{weights}: cannot load weights ({reason})") from None
    network.eval().requires_grad_(False)
    return network.to(device), card
