"""Provenance: what made an artifact, recorded in every HDF5 file, model card and report."""

from __future__ import annotations

import hashlib
import shlex
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from augmentor import __version__

_HASH_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(values: Iterable[str]) -> str:
    """SHA-256 of a sorted set of strings (e.g. the patient ids a model was trained on)."""
    digest = hashlib.sha256()
    for value in sorted(set(values)):
        digest.update(value.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def command_line() -> str:
    """The command that is running, as a shell would show it."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return shlex.join([program, *sys.argv[1:]])


def make_provenance(
    *,
    seed: int | None = None,
    recipe: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str] | None = None,
    model: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Build the provenance record stored in an artifact.

    Args:
        seed: the seed of every random draw that made the artifact.
        recipe: the resolved recipe (plain dict).
        inputs: ``{name or path: SHA-256}`` of every input file.
        model: for synthetic data, ``{name, weights_sha256, trained_on_sha256, ...}``.
        details: anything else worth keeping (simulator version, cohort name, ...).
        command: the command line; defaults to the running one.

    Returns:
        A JSON-serialisable dict.
    """
    return {
        "tool": "augmentor",
        "tool_version": __version__,
        "command": command if command is not None else command_line(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "recipe": dict(recipe) if recipe is not None else None,
        "inputs": dict(inputs or {}),
        "model": dict(model) if model is not None else None,
        "details": dict(details or {}),
    }
