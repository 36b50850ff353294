"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A training state is a nested structure of dicts, lists, tuples, scalars and tensors (network and
optimiser state dicts, loss-scaler settings, RNG states as uint8 tensors). :func:`split_state` moves its
tensors into a flat ``{dotted.key: tensor}`` dict (one safetensors file) and leaves a JSON skeleton
with ``{"__tensor__": key}`` placeholders; :func:`join_state` reverses it exactly (dict key types and
tuples are kept, float values round-trip through JSON's shortest repr).

On disk, ``checkpoints/step-00001000.safetensors`` is written first, then ``step-00001000.json``
(skeleton, SHA-256 of the tensors file and the caller's metadata), each to a temporary file renamed into
place. The JSON is the commit marker: a checkpoint without it, or whose tensors do not match its hash,
does not exist as far as :func:`latest_checkpoint` is concerned.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from augmentor.data.provenance import sha256_file
from augmentor.errors import AugmentorError
from augmentor.models.card import write_json_atomic, write_safetensors_atomic

CHECKPOINT_FORMAT = "augmentor-checkpoint"
_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"
_NAME = re.compile(r"^step-(\d+)\.json$")


def split_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into (flat tensors on the CPU, JSON-serialisable skeleton)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, key: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().to("cpu").contiguous().clone()
            return {_TENSOR: key}
        if isinstance(value, Mapping):
            items = [(k, walk(v, f"{key}.{k}" if key else str(k))) for k, v in value.items()]
            if all(isinstance(k, str) and k not in (_TENSOR, _TUPLE, _ITEMS) for k, _ in items):
                return dict(items)
            return {_ITEMS: [[k, v] for k, v in items]}  # non-string keys (optimiser state is keyed by int)
        if isinstance(value, tuple):
            return {_TUPLE: [walk(v, f"{key}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(value)]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"cannot store a {type(value).__name__} at {key!r} in a checkpoint")

    return tensors, walk(state, prefix)


def join_state(tensors: Mapping[str, torch.Tensor], skeleton: Any) -> Any:
    """Rebuild the nested state that :func:`split_state` split."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {_TENSOR}:
            return tensors[skeleton[_TENSOR]]
        if set(skeleton) == {_TUPLE}:
            return tuple(join_state(tensors, v) for v in skeleton[_TUPLE])
        if set(skeleton) == {_ITEMS}:
            return {k: join_state(tensors, v) for k, v in skeleton[_ITEMS]}
        return {k: join_state(tensors, v) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [join_state(tensors, v) for v in skeleton]
    return skeleton


def global_rng_state() -> dict[str, Any]:
    """The process-wide generators: torch (CPU and CUDA), NumPy's legacy global, Python's ``random``."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["internal"].tolist()), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(directory: str | Path, step: int, state: Any, metadata: Mapping[str, Any]) -> Path:
    """Write ``state`` at ``step`` (tensors, then the JSON marker; each atomically). Returns the JSON path."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, skeleton = split_state(state)
    tensors_path = folder / f"{checkpoint_name(step)}.safetensors"
    json_path = folder / f"{checkpoint_name(step)}.json"
    record = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "tensors": tensors_path.name,
        "tensors_sha256": write_safetensors_atomic(tensors_path, tensors),
        "metadata": dict(metadata),
        "state": skeleton,
    }
    write_json_atomic(json_path, record)  # last: the commit marker
    return json_path


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, JSON path) of the committed checkpoints in ``directory``, oldest first."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in folder.iterdir() if (m := _NAME.match(path.name))]
    return sorted(found)


def read_checkpoint_record(path: str | Path) -> dict[str, Any]:
    """The JSON part of a checkpoint (step, metadata, skeleton), checked for format."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AugmentorError(f"{path}: unreadable checkpoint ({error})") from None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise AugmentorError(f"{path}: not an augmentor checkpoint")
    return record


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The newest committed checkpoint whose tensors file is intact, or None."""
    for _, path in reversed(list_checkpoints(directory)):
        try:
            record = read_checkpoint_record(path)
        except AugmentorError:
            continue
        tensors = path.with_name(record["tensors"])
        if tensors.is_file() and sha256_file(tensors) == record["tensors_sha256"]:
            return path
    return None


def load_checkpoint(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read a checkpoint. Returns (state, record without the skeleton: step, metadata, ...)."""
    record = read_checkpoint_record(path)
    tensors_path = Path(path).with_name(record["tensors"])
    if not tensors_path.is_file() or sha256_file(tensors_path) != record["tensors_sha256"]:
        raise AugmentorError(f"{tensors_path}: missing or does not match its checkpoint's SHA-256")
    try:
        tensors = load_file(str(tensors_path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise AugmentorError(f"{tensors_path}: cannot read checkpoint tensors ({error})") from None
    state = join_state(tensors, record.pop("state"))
    return state, record


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (JSON marker first, so none is ever half-present)."""
    for _, path in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        tensors = path.with_suffix(".safetensors")
        path.unlink(missing_ok=True)
        tensors.unlink(missing_ok=True)
