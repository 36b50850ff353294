"""Join shards (files written by separate processes or ranks) into one file via HDF5 virtual datasets.

The joined file holds no sample data: its ``images``, ``masks``, ``labels``, ``patient_ids`` and
``extras/*`` are virtual datasets mapping onto the shards in order, so no sample is copied (joining
costs one read of the shards, to hash them). Keep the shards next to the joined file (paths are stored
relative to it).

The joined file's provenance lists the shards in order (``shards``: path, sample count, byte size,
SHA-256 and each shard's own provenance), and opening the file checks them
(:func:`augmentor.data.schema.check_shards`): a missing, truncated or altered shard is an error, not
zeros. Shards of different models (weights SHA-256) are refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import h5py

from augmentor.atomic import temporary_path
from augmentor.data import schema
from augmentor.data.provenance import command_line, sha256_file
from augmentor.data.reader import read_info
from augmentor.data.writer import check_output
from augmentor.errors import AugmentorError, SchemaError

# What each shard keeps of its own provenance in the joined file's (the recipe is the model's: shared).
SHARD_PROVENANCE_KEYS = ("tool_version", "command", "created", "seed", "model", "inputs", "details")


def _weights_sha256(info: schema.DatasetInfo) -> str | None:
    model = info.provenance.get("model")
    return str(model.get("weights_sha256")) if isinstance(model, dict) and model.get("weights_sha256") else None


def join_shards(shards: Sequence[str | Path], out: str | Path, overwrite: bool = False) -> Path:
    """Write ``out`` as the concatenation of ``shards`` (same schema, classes, shapes, source).

    Returns:
        The joined file's path.
    """
    if not shards:
        raise AugmentorError("no shards to join")
    final = check_output(out, overwrite)
    seen: set[Path] = set()
    for path in shards:
        if Path(path).resolve() in seen:
            raise AugmentorError(f"{path}: given twice; each shard joins once")
        seen.add(Path(path).resolve())
    infos = [read_info(path) for path in shards]
    first = infos[0]
    for info in infos[1:]:
        for field in ("image_shape", "class_names", "source", "mask_label_names", "hu_window", "has_patient_ids", "extras"):
            if getattr(info, field) != getattr(first, field):
                raise SchemaError(
                    f"{info.path}: {field} {getattr(info, field)!r} differs from {first.path}'s {getattr(first, field)!r}; cannot join"
                )
        if _weights_sha256(info) != _weights_sha256(first):
            raise SchemaError(
                f"{info.path}: made by model weights {str(_weights_sha256(info))[:12]}, {first.path} by {str(_weights_sha256(first))[:12]}; "
                "shards of different models cannot be joined"
            )
    total = sum(info.num_samples for info in infos)
    names = [schema.IMAGES, schema.MASKS, schema.LABELS]
    if first.has_patient_ids:
        names.append(schema.PATIENT_IDS)
    names += [f"{schema.EXTRAS}/{extra}" for extra in first.extras]

    temporary = temporary_path(final)
    try:
        with h5py.File(shards[0], "r") as handle:
            layouts = {}
            for name in names:
                dataset = handle[name]
                layouts[name] = h5py.VirtualLayout(shape=(total, *dataset.shape[1:]), dtype=dataset.dtype)
            attrs = dict(handle.attrs)
        offset = 0
        records = []
        for info in infos:
            relative = os.path.relpath(info.path.resolve(), final.parent.resolve())
            for name in names:
                shape = (info.num_samples, *layouts[name].shape[1:])
                layouts[name][offset : offset + info.num_samples] = h5py.VirtualSource(relative, name, shape=shape)
            offset += info.num_samples
            records.append(
                {
                    "path": relative,
                    "samples": info.num_samples,
                    "bytes": info.path.stat().st_size,
                    "sha256": sha256_file(info.path),
                    "provenance": {key: info.provenance[key] for key in SHARD_PROVENANCE_KEYS if key in info.provenance},
                }
            )
        # libver="latest": attributes over 64 KiB (the provenance of many shards) are stored densely.
        with h5py.File(temporary, "w", libver="latest") as joined:
            for name in names:
                joined.create_virtual_dataset(name, layouts[name])
            for key, value in attrs.items():
                joined.attrs[key] = value
            provenance = dict(first.provenance)
            seeds = {info.provenance.get("seed") for info in infos}
            provenance.update(
                command=command_line(),
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                seed=seeds.pop() if len(seeds) == 1 else None,
            )
            provenance[schema.SHARDS] = records
            joined.attrs["provenance"] = json.dumps(provenance, default=str)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return final
