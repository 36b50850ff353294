"""Reading rows of a chunked HDF5 dataset straight from the file, without HDF5's per-read cost.

Random access from a DataLoader is bound by the cost of one ``H5Dread`` (~50-100 us each, two per
sample: image and mask), not by decoding. :class:`ChunkRows` pays HDF5 once, to list where every chunk
lies (``H5Dchunk_iter``), then reads a batch as positional reads of those bytes and decodes them here:
raw, lzf or deflate chunks, each with or without shuffle and a Fletcher-32 checksum, which is verified
as HDF5 verifies it. lzf is decoded by h5py's own decoder (the function its HDF5 filter calls). Any
other layout (other filters, virtual datasets, a user block, unallocated chunks, big-endian data), or
a platform without ``os.preadv``, gets ``None`` from :meth:`ChunkRows.of`, and the caller reads
through HDF5.

``bench/dataset.py`` measures what this gives.
"""

from __future__ import annotations

import ctypes
import functools
import os
import zlib
from collections.abc import Callable

import h5py
import numpy as np

_SHUFFLE = h5py.h5z.FILTER_SHUFFLE
_DEFLATE = h5py.h5z.FILTER_DEFLATE
_LZF = h5py.h5z.FILTER_LZF
_FLETCHER32 = h5py.h5z.FILTER_FLETCHER32
_CHECKSUM_BYTES = 4
_MODULUS = 65535
_BLOCK_WORDS = 1 << 16


@functools.cache
def _lzf_decompress() -> Callable[[int, int, int, int], int] | None:
    """liblzf's ``lzf_decompress(in, in_len, out, out_len) -> out bytes or 0``, as built into h5py for
    its LZF filter (which stores the bare LZF stream), or None where this h5py does not export it."""
    try:
        function = ctypes.CDLL(h5py.h5z.__file__).lzf_decompress
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_uint)
    function.restype = ctypes.c_uint
    return function


def _filters(dataset: h5py.Dataset) -> list[int]:
    plist = dataset.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def _decodable(filters: list[int]) -> bool:
    """Shuffle, one of deflate / lzf, fletcher32, in that order, each optional (h5py's own order)."""
    stages = [{_SHUFFLE}, {_DEFLATE, _LZF}, {_FLETCHER32}]
    positions = [next((i for i, stage in enumerate(stages) if f in stage), -1) for f in filters]
    if _LZF in filters and _lzf_decompress() is None:
        return False
    return -1 not in positions and positions == sorted(set(positions))


def fletcher32_matches(slots: np.ndarray, lengths: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Whether each row of ``slots`` has the Fletcher-32 checksum HDF5 stored with it.

    HDF5 (H5_checksum_fletcher32) sums big-endian 16-bit words w_0..w_{L-1} (an odd last byte counts
    as its high byte): sum1 = sum(w_i), sum2 = sum((L - i) w_i), each folded modulo 65535. Files from
    HDF5 < 1.6.3 stored it byte-swapped, which HDF5 still accepts, and so does this.

    Args:
        slots: (K, S) uint8, S even: row k holds ``lengths[k]`` bytes, then zeros (a zero pad byte is
            exactly HDF5's odd-byte rule).
        lengths: (K,) bytes of each row that were checksummed.
        stored: (K,) uint32, the checksums as stored (little-endian).

    Returns:
        (K,) bool.
    """
    words = slots.view(">u2")
    size = words.shape[1]
    sum1 = np.zeros(words.shape[0], dtype=np.int64)
    sum2 = np.zeros(words.shape[0], dtype=np.int64)
    # In blocks of 2**16 words, where float64 (BLAS) sums are exact (< 2**48), combined modulo 65535:
    # a block of n words at offset o adds (S - o - n) * sum(w) + sum((n - j) w_j) to sum((S - i) w_i).
    for offset in range(0, size, _BLOCK_WORDS):
        block = words[:, offset : offset + _BLOCK_WORDS].astype(np.float64)
        count = block.shape[1]
        block_sum = block.sum(axis=1).astype(np.int64) % _MODULUS
        block_weighted = (block @ np.arange(count, 0, -1, dtype=np.float64)).astype(np.int64) % _MODULUS
        sum1 = (sum1 + block_sum) % _MODULUS
        sum2 = (sum2 + (size - offset - count) % _MODULUS * block_sum + block_weighted) % _MODULUS
    # Row k was checksummed over its first L_k words; the zero words after them added (S - L_k) * sum1.
    sum2 = (sum2 - (size - (lengths + 1) // 2) % _MODULUS * sum1) % _MODULUS
    ok = np.zeros(stored.shape, dtype=bool)
    for value in (stored.astype(np.int64), stored.astype("<u4").byteswap().astype(np.int64)):
        ok |= ((value & 0xFFFF) % _MODULUS == sum1) & ((value >> 16) % _MODULUS == sum2)
    return ok


class ChunkRows:
    """Where each chunk of one dataset lies in its file, and how to decode it.

    The positions are a property of the file, not of a process: an instance pickles into DataLoader
    workers and each reads through its own file descriptor (``read(fd, rows)``).
    """

    def __init__(self, dataset: h5py.Dataset, filters: list[int]) -> None:
        self.name = dataset.name
        self.row_shape = tuple(int(v) for v in dataset.shape[1:])
        self.dtype = dataset.dtype
        self.rows_per_chunk = int(dataset.chunks[0])
        self.shuffle = _SHUFFLE in filters
        self.codec = next((f for f in filters if f in (_DEFLATE, _LZF)), None)
        self.checksum = _FLETCHER32 in filters
        self.chunk_bytes = self.rows_per_chunk * int(np.prod(self.row_shape)) * self.dtype.itemsize
        count = int(dataset.id.get_num_chunks())
        self.offsets = np.full(count, -1, dtype=np.int64)
        self.sizes = np.zeros(count, dtype=np.int64)
        # HDF5 stores a chunk uncompressed (and sets its filter-mask bit) where compressing it did not help.
        self.uncompressed = np.zeros(count, dtype=bool)
        codec_bit = 1 << filters.index(self.codec) if self.codec is not None else 0
        self.complete = True

        def visit(info: h5py.h5d.StoreInfo) -> None:
            chunk = info.chunk_offset[0] // self.rows_per_chunk
            if info.filter_mask & ~codec_bit or chunk >= count:
                self.complete = False
                return
            self.offsets[chunk] = info.byte_offset
            self.sizes[chunk] = info.size
            self.uncompressed[chunk] = self.codec is None or bool(info.filter_mask & codec_bit)

        dataset.id.chunk_iter(visit)
        expected = -(-int(dataset.shape[0]) // self.rows_per_chunk)
        stored_raw = self.chunk_bytes + _CHECKSUM_BYTES * self.checksum
        if count != expected or (self.offsets < 0).any() or (self.sizes[self.uncompressed] != stored_raw).any():
            self.complete = False

    @classmethod
    def of(cls, handle: h5py.File, name: str) -> ChunkRows | None:
        """The chunk positions of ``handle[name]``, or None when this module cannot read it directly."""
        dataset = handle[name]
        if (
            not hasattr(dataset.id, "chunk_iter")  # h5py < 3.8
            or not hasattr(os, "preadv")  # Windows
            or handle.driver != "sec2"  # read(fd) takes the POSIX file descriptor of this driver
            or handle.userblock_size != 0
            or dataset.is_virtual
            or dataset.chunks is None
            or dataset.dtype.byteorder not in ("=", "|", "<")
            or dataset.dtype.kind not in "iuf"
            or not _decodable(filters := _filters(dataset))
        ):
            return None
        rows = cls(dataset, filters)
        return rows if rows.complete else None

    def read(self, fd: int, rows: np.ndarray) -> np.ndarray:
        """Rows (sorted, unique) as an array (len(rows), *row_shape).

        Raises:
            OSError: a chunk that is short, fails its checksum or fails to decode (as h5py would).
        """
        chunks = np.unique(rows // self.rows_per_chunk)
        payload = self.sizes[chunks] - _CHECKSUM_BYTES * self.checksum
        width = int(payload.max()) + int(payload.max()) % 2  # even, so 16-bit words line up for the checksum
        slots = np.zeros((chunks.size, width), dtype=np.uint8)
        stored = np.zeros(chunks.size, dtype="<u4")
        slots_view, stored_view = slots.reshape(-1).data, stored.view(np.uint8).data
        for k, (offset, length) in enumerate(zip(self.offsets[chunks].tolist(), payload.tolist(), strict=True)):
            # One system call reads a chunk's bytes and its checksum, which follows them in the file.
            start, check = k * width, k * _CHECKSUM_BYTES
            buffers = [slots_view[start : start + length]]
            if self.checksum:
                buffers.append(stored_view[check : check + _CHECKSUM_BYTES])
            if os.preadv(fd, buffers, offset) != length + _CHECKSUM_BYTES * self.checksum:
                raise OSError(f"Can't read data (chunk of {self.name} is truncated)")
        if self.checksum and not fletcher32_matches(slots, payload, stored).all():
            raise OSError("Can't read data (Fletcher32 checksum failed)")
        if self.codec is None:
            decoded = slots[:, : self.chunk_bytes]  # raw chunks all have chunk_bytes (checked when indexed)
        else:
            decoded = self._decompress(slots, payload, self.uncompressed[chunks])
        if self.shuffle and self.dtype.itemsize > 1:
            # HDF5's shuffle stores byte j of every element together: planes (itemsize, n) -> (n, itemsize),
            # copied a plane at a time (a byte-wise transpose is several times slower).
            planes = decoded.reshape(chunks.size, self.dtype.itemsize, -1)
            decoded = np.empty((chunks.size, planes.shape[2], self.dtype.itemsize), dtype=np.uint8)
            for byte in range(self.dtype.itemsize):
                decoded[:, :, byte] = planes[:, byte]
        values = np.ascontiguousarray(decoded).reshape(-1).view(self.dtype).reshape(-1, *self.row_shape)
        if self.rows_per_chunk == 1:
            return values
        local = np.searchsorted(chunks, rows // self.rows_per_chunk) * self.rows_per_chunk + rows % self.rows_per_chunk
        return values[local]

    def _decompress(self, slots: np.ndarray, lengths: np.ndarray, uncompressed: np.ndarray) -> np.ndarray:
        decoded = np.empty((slots.shape[0], self.chunk_bytes), dtype=np.uint8)
        lzf = _lzf_decompress() if self.codec == _LZF else None
        source, target, width = slots.ctypes.data, decoded.ctypes.data, slots.shape[1]
        for k, (length, raw) in enumerate(zip(lengths.tolist(), uncompressed.tolist(), strict=True)):
            if raw:
                decoded[k] = slots[k, :length]
            elif lzf is not None:
                # lzf_decompress bounds-checks both buffers and returns 0 on damaged input.
                if lzf(source + k * width, length, target + k * self.chunk_bytes, self.chunk_bytes) != self.chunk_bytes:
                    raise OSError(f"Can't read data (chunk of {self.name} fails to decode as LZF)")
            else:
                try:
                    inflated = zlib.decompress(slots[k, :length].data)
                except zlib.error as error:
                    raise OSError(f"Can't read data (inflate failed: {error})") from None
                if len(inflated) != self.chunk_bytes:
                    raise OSError(f"Can't read data (chunk of {self.name} inflates to the wrong size)")
                decoded[k] = np.frombuffer(inflated, dtype=np.uint8)
        return decoded
