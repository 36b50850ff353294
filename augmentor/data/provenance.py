"""Provenance: what made an artifact, recorded in every HDF5 file, model card and report.

Paths: artifacts travel (model cards, synthetic files and reports are shared), and the folders above an
input often name a patient (a PACS export is ``DOE_JOHN_19500101/CT_ABDOMEN/...``). So no artifact
stores a directory: every writer passes paths through :func:`stored_path` (a file name, or a path
relative to the artifact's own folder) and records the command through :func:`command_line`, which
reduces every path argument the same way. Inputs are identified by their SHA-256, not by where they were.

Patient ids: the ``patient_ids`` record says how a file's patient ids were made (see
:data:`PATIENT_ID_KINDS`); a file without it holds ids of unknown origin, which are treated as identifying.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from augmentor import __version__

_HASH_BLOCK = 1 << 20
_SEPARATORS = re.compile(r"[\\/]")

# How a file's patient ids were made (provenance ``patient_ids.kind``):
PSEUDONYMISED = "pseudonymised"  # keyed hashes of real patient ids (augment ingest); never the ids themselves
VIRTUAL = "virtual"  # ids of the simulator's virtual patients: no real person behind them
PATIENT_ID_KINDS = (PSEUDONYMISED, VIRTUAL)


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


def stored_path(path: str | Path, relative_to: str | Path | None = None) -> str:
    """What an artifact may record of a path: its file name.

    Args:
        path: any path (``/data/DOE_JOHN_19500101/real.h5``, ``C:\\exports\\real.h5``, ``real.h5``).
        relative_to: a folder the artifact owns (a report folder): a path inside it is kept relative to
            it (``inputs/synthetic.h5``), since those folder names are the tool's own.

    Returns:
        ``real.h5``; or the path below ``relative_to`` in POSIX form.
    """
    if relative_to is not None:
        try:
            return Path(path).resolve().relative_to(Path(relative_to).resolve()).as_posix()
        except ValueError:
            pass
    text = str(path)
    parts = [part for part in _SEPARATORS.split(text) if part]
    return parts[-1] if parts else text


def _stored_run(text: str) -> str:
    """``/a/b.h5`` -> ``b.h5``; ``key=/a/b.h5`` -> ``key=b.h5`` (keys, as in ``--set data.train=...``, are kept)."""
    if not _SEPARATORS.search(text):
        return text
    key, equals, value = text.partition("=")
    if equals and not _SEPARATORS.search(key):
        return f"{key}{equals}{_stored_run(value)}"
    return stored_path(text)


def _stored_word(word: str) -> str:
    """One command-line word with its paths reduced: ``--data=/a/b.h5`` -> ``--data=b.h5``,
    ``data.train=["/a/b.h5", "/c/d.h5"]`` -> ``data.train=["b.h5", "d.h5"]``."""
    # A value may list several paths (comma-separated, or a TOML list): reduce each run between delimiters.
    return re.sub(r"[^,\[\]\"' ]+", lambda match: _stored_run(match.group(0)), word)


def stored_command(argv: Sequence[str] | str) -> str:
    """A command line as a shell would show it, every path in it reduced by :func:`stored_path`.

    Args:
        argv: the words (``sys.argv``) or a command already joined into one string.
    """
    if isinstance(argv, str):
        try:
            words = shlex.split(argv)
        except ValueError:  # unbalanced quotes: reduce word by word
            words = argv.split()
        if not any(_SEPARATORS.search(word) for word in words):
            return argv  # nothing to reduce: keep the text as written
    else:
        words = list(argv)
    program = stored_path(words[0]) if words and words[0] else "python"
    return shlex.join([program, *(_stored_word(word) for word in words[1:])])


def command_line() -> str:
    """The command that is running, as a shell would show it, with paths reduced to file names."""
    return stored_command(sys.argv)


def make_provenance(
    *,
    seed: int | None = None,
    recipe: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str] | None = None,
    model: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    command: str | None = None,
    patient_ids: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the provenance record stored in an artifact.

    Args:
        seed: the seed of every random draw that made the artifact.
        recipe: the resolved recipe (plain dict).
        inputs: ``{name: SHA-256}`` of every input file (paths are reduced to file names).
        model: for synthetic data, ``{name, weights_sha256, trained_on_sha256, ...}``.
        details: anything else worth keeping (simulator version, cohort name, ...).
        command: the command line (paths reduced, see :func:`stored_command`); defaults to the running one.
        patient_ids: how the file's patient ids were made: ``{"kind": "pseudonymised" | "virtual",
            "method": text, "salt_fingerprint": hex}`` (the fingerprint for pseudonyms only); None
            when the ids are of unknown origin (treated as identifying, e.g. by ``export-dicom``).

    Returns:
        A JSON-serialisable dict.
    """
    if patient_ids is not None and patient_ids.get("kind") not in PATIENT_ID_KINDS:
        raise ValueError(f"patient_ids kind must be one of {PATIENT_ID_KINDS}, got {patient_ids.get('kind')!r}")
    return {
        "tool": "augmentor",
        "tool_version": __version__,
        "command": stored_command(command) if command is not None else command_line(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "recipe": dict(recipe) if recipe is not None else None,
        "inputs": {stored_path(name): digest for name, digest in (inputs or {}).items()},
        "model": dict(model) if model is not None else None,
        "details": dict(details or {}),
        "patient_ids": dict(patient_ids) if patient_ids is not None else None,
    }


def stored_provenance(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a file's provenance fit to store in another artifact (a report): the command, input
    names and ``model.trained_on_path`` reduced as :func:`make_provenance` does, also for files written
    before it did."""
    copy = dict(provenance)
    if isinstance(copy.get("command"), str):
        copy["command"] = stored_command(copy["command"])
    if isinstance(copy.get("inputs"), Mapping):
        copy["inputs"] = {stored_path(name): digest for name, digest in copy["inputs"].items()}
    model = copy.get("model")
    if isinstance(model, Mapping) and model.get("trained_on_path"):
        copy["model"] = {**model, "trained_on_path": stored_path(str(model["trained_on_path"]))}
    return copy


def virtual_patient_ids(made_by: str) -> dict[str, str]:
    """The ``patient_ids`` record of simulated data, e.g. ``virtual_patient_ids("augmentor's simulator")``."""
    return {"kind": VIRTUAL, "method": f"virtual patients of {made_by}: no real person behind the ids"}


def patient_id_kind(provenance: Mapping[str, Any]) -> str | None:
    """How a file's patient ids were made: "pseudonymised", "virtual", or None (unknown: identifying)."""
    record = provenance.get("patient_ids")
    kind = record.get("kind") if isinstance(record, Mapping) else None
    return kind if kind in PATIENT_ID_KINDS else None


def salt_fingerprint(provenance: Mapping[str, Any]) -> str | None:
    """The fingerprint of the salt a file's pseudonyms were made with (None: not pseudonymised by ingest)."""
    record = provenance.get("patient_ids")
    value = record.get("salt_fingerprint") if isinstance(record, Mapping) else None
    return str(value) if value else None
