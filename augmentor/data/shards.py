"""Join shards (files written by separate processes or ranks) into one file via HDF5 virtual datasets.

The joined file holds no sample data: its ``images``, ``masks``, ``labels``, ``patient_ids`` and
``extras/*`` are virtual datasets mapping onto the shards in order, so joining 60 000 samples costs
milliseconds. Keep the shards next to the joined file (paths are stored relative to it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py

from augmentor.data import schema
from augmentor.data.reader import read_info
from augmentor.data.writer import check_output, temporary_path
from augmentor.errors import AugmentorError, SchemaError


def join_shards(shards: Sequence[str | Path], out: str | Path, overwrite: bool = False) -> Path:
    """Write ``out`` as the concatenation of ``shards`` (same schema, classes, shapes, source).

    Returns:
        The joined file's path.
    """
    if not shards:
        raise AugmentorError("no shards to join")
    final = check_output(out, overwrite)
    infos = [read_info(path) for path in shards]
    first = infos[0]
    for info in infos[1:]:
        for field in ("image_shape", "class_names", "source", "mask_label_names", "hu_window", "has_patient_ids", "extras"):
            if getattr(info, field) != getattr(first, field):
                raise SchemaError(
                    f"{info.path}: {field} {getattr(info, field)!r} differs from {first.path}'s {getattr(first, field)!r}; cannot join"
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
        for info in infos:
            relative = os.path.relpath(info.path.resolve(), final.parent.resolve())
            for name in names:
                shape = (info.num_samples, *layouts[name].shape[1:])
                layouts[name][offset : offset + info.num_samples] = h5py.VirtualSource(relative, name, shape=shape)
            offset += info.num_samples
        with h5py.File(temporary, "w") as joined:
            for name in names:
                joined.create_virtual_dataset(name, layouts[name])
            for key, value in attrs.items():
                joined.attrs[key] = value
            provenance = dict(first.provenance)
            provenance["shards"] = [os.path.relpath(info.path.resolve(), final.parent.resolve()) for info in infos]
            joined.attrs["provenance"] = json.dumps(provenance, default=str)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return final
