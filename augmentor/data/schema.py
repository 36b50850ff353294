"""The augmentor HDF5 dataset contract (schema version 1).

One schema serves real, synthetic, phantom and translated data. A file holds N samples:

Datasets
    ``images``       (N, C, H, W) int16 -- physical units: Hounsfield units for CT (C = 1 for CT).
                     Chunked by blocks of samples (``(block, C, H, W)``) and compressed.
    ``masks``        (N, H, W) uint8 -- lesion or organ labels; 0 is background, the names of the
                     non-zero values are in the ``mask_label_names`` attribute.
    ``labels``       (N,) int16 -- class index into ``class_names``.
    ``patient_ids``  (N,) fixed-length ASCII -- (virtual or pseudonymised) patient id, optional;
                     needed for patient-level splits and leakage checks.
    ``extras/<name>`` (N,) numeric -- optional per-sample metadata (e.g. ``diameter_mm``), or (N, ...)
                     float32 for a per-sample array (e.g. a translated file's ensemble disagreement map).

File attributes
    ``schema_version``   int, 1.
    ``modality``         "CT" (or "MR", "XR", ...).
    ``source``           "real" | "synthetic" | "phantom" | "translated".
    ``class_names``      JSON list of str, ordered; ``labels`` index into it.
    ``mask_label_names`` JSON list of str; entry 0 is "background".
    ``pixel_spacing_mm`` JSON [row, column] spacing in mm.
    ``hu_window``        JSON [low, high]: the intensity window used to normalise images for
                         training (values are clipped to it and mapped to [-1, 1]).
    ``provenance``       JSON object: ``tool_version``, ``command`` (paths reduced to file names),
                         ``created`` (UTC ISO 8601), ``seed``, ``recipe`` (resolved), ``inputs``
                         ({file name: SHA-256}), ``model`` ({name, weights_sha256, trained_on_sha256,
                         trained_on_patients_sha256, trained_on_path (a file name)} for synthetic
                         data), ``patient_ids`` (how the ids were made: {kind "pseudonymised" |
                         "virtual", method, salt_fingerprint (pseudonyms only)}; null: of unknown
                         origin, treated as identifying), and free-form ``details``. A joined file (see
                         :mod:`augmentor.data.shards`) adds ``shards``: one record per shard, in
                         order, ``{path (relative to the joined file), samples, bytes, sha256,
                         provenance}``.

Joined files
    Their datasets are HDF5 virtual datasets over shard files. HDF5 reads a missing shard as fill
    values (zeros: label 0), so validation checks that every source exists and, where the join
    recorded them, that each shard still has its size and SHA-256.

Writers never leave a half-written file at the final path; readers validate on open and open the
file lazily in each process so they work inside DataLoader workers (fork or spawn).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.data.provenance import sha256_file
from augmentor.errors import SchemaError

SCHEMA_VERSION = 1
IMAGES = "images"
MASKS = "masks"
LABELS = "labels"
PATIENT_IDS = "patient_ids"
EXTRAS = "extras"
SHARDS = "shards"  # provenance key of a joined file

IMAGE_DTYPE = np.dtype(np.int16)
MASK_DTYPE = np.dtype(np.uint8)
LABEL_DTYPE = np.dtype(np.int16)
PATIENT_ID_LENGTH = 48
PATIENT_ID_DTYPE = np.dtype(f"S{PATIENT_ID_LENGTH}")

INT16_MIN, INT16_MAX = int(np.iinfo(np.int16).min), int(np.iinfo(np.int16).max)


class Source(StrEnum):
    """Where the samples of a file come from."""

    REAL = "real"
    SYNTHETIC = "synthetic"
    PHANTOM = "phantom"
    TRANSLATED = "translated"


class SampleKey(StrEnum):
    """The fixed keys of a sample dict, end to end (MONAI-style)."""

    IMAGE = "image"
    MASK = "mask"
    LABEL = "label"
    SOURCE = "source"
    PATIENT_ID = "patient_id"
    INDEX = "index"


@dataclass(frozen=True)
class DatasetInfo:
    """What a validated file holds (everything but the arrays)."""

    path: Path
    num_samples: int
    image_shape: tuple[int, int, int]
    modality: str
    source: Source
    class_names: tuple[str, ...]
    mask_label_names: tuple[str, ...]
    pixel_spacing_mm: tuple[float, float]
    hu_window: tuple[float, float]
    provenance: dict[str, Any] = field(default_factory=dict)
    has_patient_ids: bool = False
    extras: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _json_attr(attrs: Any, name: str, path: Path) -> Any:
    if name not in attrs:
        raise SchemaError(f"{path}: missing attribute {name!r}; not an augmentor dataset file")
    raw = attrs[name]
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        return json.loads(raw)
    except (TypeError, json.JSONDecodeError) as error:
        raise SchemaError(f"{path}: attribute {name!r} is not valid JSON ({error})") from None


def _pair(value: Any, name: str, path: Path) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value)):
        raise SchemaError(f"{path}: attribute {name!r} must be a pair of numbers, got {value!r}")
    return float(value[0]), float(value[1])


def validate(handle: Any, path: Path, check_labels: bool = True) -> DatasetInfo:
    """Validate an open ``h5py.File`` against the contract and describe it.

    Args:
        handle: an open h5py file (or group).
        path: its path, for messages.
        check_labels: also read ``labels`` to check they index ``class_names`` (reads N small ints).

    Returns:
        The file's :class:`DatasetInfo`.

    Raises:
        SchemaError: one line naming the first thing that is wrong.
    """
    attrs = handle.attrs
    if "schema_version" not in attrs:
        raise SchemaError(f"{path}: missing attribute 'schema_version'; not an augmentor dataset file")
    version = int(attrs["schema_version"])
    if version != SCHEMA_VERSION:
        raise SchemaError(f"{path}: schema version {version} is not supported (this augmentor reads {SCHEMA_VERSION})")
    for name in (IMAGES, MASKS, LABELS):
        if name not in handle:
            raise SchemaError(f"{path}: dataset {name!r} is missing")
    images, masks, labels = handle[IMAGES], handle[MASKS], handle[LABELS]
    if images.ndim != 4:
        raise SchemaError(f"{path}: 'images' must be (N, C, H, W), got shape {images.shape}")
    if images.dtype != IMAGE_DTYPE:
        raise SchemaError(f"{path}: 'images' must be int16, got {images.dtype}")
    count, channels, height, width = images.shape
    if masks.dtype != MASK_DTYPE:
        raise SchemaError(f"{path}: 'masks' must be uint8, got {masks.dtype}")
    if masks.shape != (count, height, width):
        raise SchemaError(f"{path}: 'masks' shape {masks.shape} does not match images {images.shape} (expected {(count, height, width)})")
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise SchemaError(f"{path}: 'labels' must be ({count},) integers, got {labels.shape} {labels.dtype}")
    has_ids = PATIENT_IDS in handle
    if has_ids and handle[PATIENT_IDS].shape != (count,):
        raise SchemaError(f"{path}: 'patient_ids' shape {handle[PATIENT_IDS].shape} does not match {count} samples")
    extras: tuple[str, ...] = ()
    if EXTRAS in handle:
        extras = tuple(sorted(handle[EXTRAS].keys()))
        for key in extras:
            if handle[EXTRAS][key].shape[:1] != (count,):
                raise SchemaError(f"{path}: 'extras/{key}' has {handle[EXTRAS][key].shape[0]} rows, expected {count}")

    class_names = _json_attr(attrs, "class_names", path)
    if not (isinstance(class_names, list) and class_names and all(isinstance(c, str) and c for c in class_names)):
        raise SchemaError(f"{path}: 'class_names' must be a non-empty list of names, got {class_names!r}")
    if len(set(class_names)) != len(class_names):
        raise SchemaError(f"{path}: 'class_names' has duplicates: {class_names}")
    mask_names = _json_attr(attrs, "mask_label_names", path)
    if not (isinstance(mask_names, list) and mask_names and all(isinstance(c, str) for c in mask_names)):
        raise SchemaError(f"{path}: 'mask_label_names' must be a non-empty list of names")
    source_text = attrs.get("source", "")
    source_text = source_text.decode() if isinstance(source_text, bytes) else str(source_text)
    if source_text not in {s.value for s in Source}:
        raise SchemaError(f"{path}: attribute 'source' is {source_text!r}; expected one of {[s.value for s in Source]}")
    spacing = _pair(_json_attr(attrs, "pixel_spacing_mm", path), "pixel_spacing_mm", path)
    window = _pair(_json_attr(attrs, "hu_window", path), "hu_window", path)
    if not window[0] < window[1]:
        raise SchemaError(f"{path}: 'hu_window' low {window[0]} must be below high {window[1]}")
    provenance = _json_attr(attrs, "provenance", path)
    if not isinstance(provenance, dict):
        raise SchemaError(f"{path}: 'provenance' must be a JSON object")
    modality = attrs.get("modality", "CT")
    modality = modality.decode() if isinstance(modality, bytes) else str(modality)

    check_shards(handle, path, provenance)
    if check_labels and count:
        values = labels[...]
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= len(class_names):
            bad = low if low < 0 else high
            raise SchemaError(f"{path}: label {bad} is out of range for {len(class_names)} classes {class_names}")
    return DatasetInfo(
        path=path,
        num_samples=int(count),
        image_shape=(int(channels), int(height), int(width)),
        modality=modality,
        source=Source(source_text),
        class_names=tuple(class_names),
        mask_label_names=tuple(mask_names),
        pixel_spacing_mm=spacing,
        hu_window=window,
        provenance=provenance,
        has_patient_ids=has_ids,
        extras=extras,
    )


# SHA-256 of shard files already checked in this process, by (path, size, mtime, inode): a file opened
# many times (every DataLoader worker, every command step) is hashed once while it is unchanged.
_CHECKED_SHARDS: dict[tuple[str, int, int, int], str] = {}


def _shard_sha256(location: Path) -> str:
    status = location.stat()
    key = (str(location.resolve()), status.st_size, status.st_mtime_ns, status.st_ino)
    if key not in _CHECKED_SHARDS:
        _CHECKED_SHARDS[key] = sha256_file(location)
    return _CHECKED_SHARDS[key]


def _virtual_sources(handle: Any) -> dict[str, tuple[int, int]]:
    """``{source file as stored: (first, last) sample}`` over every virtual dataset of a file."""
    names = [name for name in (IMAGES, MASKS, LABELS, PATIENT_IDS) if name in handle]
    if EXTRAS in handle:
        names += [f"{EXTRAS}/{key}" for key in handle[EXTRAS]]
    sources: dict[str, tuple[int, int]] = {}
    for name in names:
        dataset = handle[name]
        if not dataset.is_virtual:
            continue
        for source in dataset.virtual_sources():
            first, last = source.vspace.get_select_bounds()
            low, high = sources.get(source.file_name, (first[0], last[0]))
            sources[source.file_name] = (min(low, first[0]), max(high, last[0]))
    return sources


def _check_joined_shard(location: Path, joined: Path, hashes: bool) -> None:
    """A shard that is itself a joined file (a join of joins): its own shards must be there too."""
    import h5py

    try:
        with h5py.File(location, "r") as shard:
            if not _virtual_sources(shard):
                return
            raw = shard.attrs.get("provenance", "{}")
            provenance = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            check_shards(shard, location, provenance if isinstance(provenance, dict) else {}, hashes)
    except SchemaError as error:
        raise SchemaError(f"{joined}: {error}") from None
    except (OSError, KeyError, ValueError):
        return  # an unreadable shard is reported when its samples are read (or by its changed SHA-256)


def check_shards(handle: Any, path: Path, provenance: dict[str, Any], hashes: bool = True) -> None:
    """Check that a joined file's shards are there and unchanged (no-op for ordinary files).

    Args:
        handle: the open file.
        path: its path; relative shard paths are relative to its folder.
        provenance: its provenance record (``shards`` holds what the join recorded).
        hashes: also compare each shard's SHA-256 with the join's (read once per process while the
            shard is unchanged); False checks presence and size only.

    Raises:
        SchemaError: naming the shard and the joined file's samples it holds.
    """
    sources = _virtual_sources(handle)
    if not sources:
        return
    folder = path.parent
    for name, (first, last) in sources.items():
        if name != "." and not (folder / name).is_file():
            raise SchemaError(
                f"{path}: shard {name} (samples {first}-{last}) is missing; keep the shards next to the joined file or join them again"
            )
    for name in sources:
        if name != ".":
            _check_joined_shard(folder / name, path, hashes)
    records = provenance.get(SHARDS)
    if not isinstance(records, list):
        return
    start = 0
    for record in records:
        if not isinstance(record, dict):  # files joined before shards were recorded: paths only
            continue
        count = int(record.get("samples", 0))
        where = f"shard {record.get('path')} (samples {start}-{start + count - 1})"
        start += count
        location = folder / str(record.get("path"))
        size = os.path.getsize(location) if location.is_file() else None
        if size is None:
            raise SchemaError(f"{path}: {where} is missing; keep the shards next to the joined file or join them again")
        if "bytes" in record and size != int(record["bytes"]):
            raise SchemaError(f"{path}: {where} has changed since the join ({size} bytes, was {record['bytes']}); join the shards again")
        if hashes and record.get("sha256") and _shard_sha256(location) != record["sha256"]:
            raise SchemaError(f"{path}: {where} has changed since the join (SHA-256 differs); join the shards again")
