"""Reading augmentor HDF5 files: validate on open, open lazily per process."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from augmentor.data import schema
from augmentor.data.chunks import ChunkRows
from augmentor.errors import AugmentorError, SchemaError

# Chunk cache per open file: large enough to keep the chunks of a DataLoader batch (a chunk of
# 16 samples of 64x64 int16 is 128 KiB) so that neighbouring reads do not decode a chunk twice.
CHUNK_CACHE_BYTES = 64 << 20


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise AugmentorError(f"{path}: file not found")
    if path.is_dir():
        raise AugmentorError(f"{path}: is a directory, expected an .h5 file")
    try:
        return h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=10007)
    except OSError as error:
        reason = str(error).split(";")[0].split("(")[0].strip() or "unreadable"
        raise SchemaError(f"{path}: not a readable HDF5 file ({reason})") from None


# What h5py raises when the bytes of a file are damaged: a chunk that fails to decode or fails its
# checksum (OSError), an object header that does not parse (KeyError, RuntimeError).
_READ_ERRORS = (OSError, KeyError, RuntimeError)


def _reason(error: BaseException) -> str:
    """HDF5's own words: "Can't read data (filter returned failure during read)" -> the part in brackets."""
    text = " ".join(str(error).split()).strip("'\"") or type(error).__name__
    inner = re.search(r"\(([^()]+)\)$", text)
    text = inner.group(1) if inner else text
    return text if len(text) <= 120 else text[:117] + "..."


def _damaged(path: Path, what: str, error: BaseException) -> SchemaError:
    return SchemaError(f"{path}: {what} cannot be read (HDF5: {_reason(error)}); the file is damaged: make or copy it again")


def _read_or_explain(path: Path, dataset: h5py.Dataset, rows: np.ndarray, read: Callable[[], np.ndarray]) -> np.ndarray:
    """``read()``, or a one-line SchemaError naming the samples among ``rows`` that cannot be read.

    On failure each row is read on its own, so the message names the damaged samples, not the batch.
    """
    try:
        return read()
    except _READ_ERRORS as error:
        bad = []
        for row in rows.tolist():
            try:
                dataset[row]
            except _READ_ERRORS:
                bad.append(row)
        where = rows if not bad else np.asarray(bad)
        first, last = int(where.min()), int(where.max())
        count = f" ({len(bad)} of them)" if len(bad) not in (0, last - first + 1) else ""
        samples = f"sample {first}" if first == last else f"samples {first}-{last}{count}"
        raise _damaged(path, f"{samples} of {dataset.name.lstrip('/')!r}", error) from None


def read_info(path: str | Path, check_labels: bool = True) -> schema.DatasetInfo:
    """Open, validate and describe a file (then close it).

    Raises:
        AugmentorError: missing or unreadable file; SchemaError for contract violations, missing or
            changed shards of a joined file, and damaged bytes.
    """
    file_path = Path(path)
    with _open(file_path) as handle:
        try:
            return schema.validate(handle, file_path, check_labels=check_labels)
        except _READ_ERRORS as error:
            raise _damaged(file_path, "its structure or labels", error) from None


class H5File:
    """A validated augmentor file whose HDF5 handle opens lazily, once per process.

    The object pickles without its handle, so it crosses into DataLoader workers under both
    ``fork`` and ``spawn``; each worker opens its own handle on first access (h5py handles must
    not be shared across processes).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.info = read_info(self.path)
        self._handle: h5py.File | None = None
        self._pid = -1
        self._label_cache: np.ndarray | None = None
        self._id_cache: np.ndarray | None = None
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        # (file identity, {dataset: its chunk positions or None}); a file property, so it is pickled
        # into workers with the object, and rebuilt if the path now holds another file.
        self._chunks: tuple[tuple[int, ...], dict[str, ChunkRows | None]] | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._datasets_of: h5py.File | None = None

    def __len__(self) -> int:
        return self.info.num_samples

    @property
    def handle(self) -> h5py.File:
        if self._handle is None or self._pid != os.getpid():
            handle = _open(self.path)
            try:  # a shard deleted since validation would read as zeros: look again (presence and size only)
                schema.check_shards(handle, self.path, self.info.provenance, hashes=False)
            except BaseException:
                handle.close()
                raise
            self._handle = handle
            self._pid = os.getpid()
        return self._handle

    def _column(self, name: str) -> np.ndarray:
        """A whole dataset (``labels``, ``patient_ids``, ``extras/...``), or a one-line error if damaged."""
        dataset = self.handle[name]
        return _read_or_explain(self.path, dataset, np.arange(len(self)), lambda: dataset[...])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_pid"] = -1
        state["_label_cache"] = None
        state["_id_cache"] = None
        state["_arrays"] = None  # a spawned worker reloads rather than receiving a pickled copy
        state["_datasets"] = {}
        state["_datasets_of"] = None
        state["_load_on_open"] = self._arrays is not None
        return state

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    @property
    def decoded_bytes(self) -> int:
        """Size of images + masks once decompressed."""
        channels, height, width = self.info.image_shape
        return len(self) * height * width * (2 * channels + 1)

    def load(self) -> None:
        """Read images and masks into memory (one sequential read), for small files read many times.

        Loaded in the main process before DataLoader workers fork, the arrays are shared by the
        workers copy-on-write; a spawned worker loads its own copy on first access.
        """
        if self._arrays is None:
            self._arrays = (self._column(schema.IMAGES), self._column(schema.MASKS))

    def labels(self) -> np.ndarray:
        """All class labels, (N,) int64."""
        return self._labels().copy()

    def _labels(self) -> np.ndarray:
        # Labels (and ids) are tiny: read once per process and keep.
        if self._label_cache is None or self._pid != os.getpid():
            self._label_cache = self._column(schema.LABELS).astype(np.int64)
        return self._label_cache

    def patient_ids(self) -> np.ndarray:
        """All patient ids as str, (N,); ``"<file stem>"`` for files without them."""
        if not self.info.has_patient_ids:
            return np.full(len(self), self.path.stem, dtype=object)
        if self._id_cache is None or self._pid != os.getpid():
            self._id_cache = np.char.decode(self._column(schema.PATIENT_IDS), "ascii").astype(object)
        return self._id_cache

    def extra(self, name: str) -> np.ndarray:
        if name not in self.info.extras:
            raise AugmentorError(f"{self.path}: no extra column {name!r}; has {list(self.info.extras)}")
        return self._column(f"{schema.EXTRAS}/{name}")

    def read(self, indices: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read samples by index, in the order given.

        Reads each needed sample once in increasing order, then restores the requested order.
        Chunks that :mod:`augmentor.data.chunks` can decode are read straight from the file; others
        one HDF5 read per run of consecutive indices.

        Returns:
            images (B, C, H, W) int16, masks (B, H, W) uint8, labels (B,) int64.
        """
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"sample index out of range for {len(self)} samples")
        if self._arrays is None and self.__dict__.get("_load_on_open"):
            self.load()
        if self._arrays is not None:
            images_all, masks_all = self._arrays
            return images_all[index], masks_all[index], self._labels()[index]
        order = np.argsort(index, kind="stable")
        unique, inverse = np.unique(index[order], return_inverse=True)
        images = _read_or_explain(self.path, self._dataset(schema.IMAGES), unique, lambda: self._rows(schema.IMAGES, unique))
        masks = _read_or_explain(self.path, self._dataset(schema.MASKS), unique, lambda: self._rows(schema.MASKS, unique))
        labels = self._labels()[unique]
        restore = np.empty_like(order)
        restore[order] = np.arange(order.size)
        take = inverse[restore]
        return images[take], masks[take], labels[take]

    def index_chunks(self) -> None:
        """Find where every image and mask chunk lies in the file, for lazy reads that skip HDF5's
        per-read cost. Done on first lazy read anyway; done before DataLoader workers start, it is
        done once rather than in every worker."""
        fd = self.handle.id.get_vfd_handle()
        stat = os.fstat(fd)
        identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._chunks is None or self._chunks[0] != identity:
            self._chunks = (identity, {name: ChunkRows.of(self.handle, name) for name in (schema.IMAGES, schema.MASKS)})

    def _rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Sorted unique ``rows`` of images or masks, read lazily."""
        self.index_chunks()
        assert self._chunks is not None
        direct = self._chunks[1][name]
        if direct is None:
            return _read_rows(self._dataset(name), rows)
        return direct.read(self.handle.id.get_vfd_handle(), rows)

    def _dataset(self, name: str) -> h5py.Dataset:
        """``handle[name]``, kept while the handle is: h5py's lookup costs about as much as reading a
        sample, and lazy reads need two per batch."""
        handle = self.handle
        if self._datasets_of is not handle:
            self._datasets, self._datasets_of = {}, handle
        if name not in self._datasets:
            self._datasets[name] = handle[name]
        return self._datasets[name]


def _read_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Read sorted unique rows, one low-level read per contiguous run.

    h5py's high-level slicing costs tens of microseconds of Python per call; selecting the hyperslab
    on the dataspace and reading through ``DatasetID.read`` directly is 2-3x faster, which is what
    random access from a DataLoader is bound by (``bench/dataset.py``).
    """
    out = np.empty((rows.size, *dataset.shape[1:]), dtype=dataset.dtype)
    if rows.size == 0:
        return out
    trailing = tuple(dataset.shape[1:])
    zeros = (0,) * len(trailing)
    file_space = dataset.id.get_space()
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    start = 0
    for stop in [*breaks.tolist(), rows.size]:
        count = stop - start
        file_space.select_hyperslab((int(rows[start]), *zeros), (count, *trailing))
        memory_space = h5py.h5s.create_simple((count, *trailing))
        dataset.id.read(memory_space, file_space, out[start:stop])
        start = stop
    return out
