"""Direct chunk reads (augmentor.data.chunks): the same values and the same damage detection as HDF5."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from augmentor.data.chunks import ChunkRows, fletcher32_matches
from augmentor.data.dataset import H5Dataset, collate
from augmentor.data.reader import H5File
from augmentor.data.writer import H5Writer

SHAPE = (2, 17, 13)  # odd row sizes: uint8 mask rows of 221 bytes exercise the odd-byte checksum rule


def write(path: Path, images: np.ndarray, masks: np.ndarray, **options: object) -> Path:
    with H5Writer(path, class_names=["a"], image_shape=SHAPE, **options) as writer:  # type: ignore[arg-type]
        for start in range(0, len(images), 50):
            stop = min(start + 50, len(images))
            writer.append(images[start:stop], masks[start:stop], np.zeros(stop - start, dtype=int), ["p"] * (stop - start))
    return path


def samples(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    images = generator.normal(40, 30, size=(count, *SHAPE)).astype(np.int16)
    images[: count // 4] = 5  # chunks that compress to almost nothing next to ones that barely do
    masks = (generator.random((count, *SHAPE[1:])) > 0.8).astype(np.uint8)
    return images, masks


def fletcher32_reference(data: bytes) -> int:
    """HDF5's H5_checksum_fletcher32, line by line."""
    remaining, sum1, sum2, i = len(data) // 2, 0, 0, 0
    while remaining:
        block = min(remaining, 360)
        remaining -= block
        for _ in range(block):
            sum1 += (data[i] << 8) | data[i + 1]
            sum2 += sum1
            i += 2
        sum1, sum2 = (sum1 & 0xFFFF) + (sum1 >> 16), (sum2 & 0xFFFF) + (sum2 >> 16)
    if len(data) % 2:
        sum1 += data[i] << 8
        sum2 += sum1
        sum1, sum2 = (sum1 & 0xFFFF) + (sum1 >> 16), (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1, sum2 = (sum1 & 0xFFFF) + (sum1 >> 16), (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


@pytest.mark.parametrize("compression", ["lzf", "gzip", "none"])
@pytest.mark.parametrize("block_size", [1, 16])
def test_direct_reads_equal_hdf5(tmp_path: Path, compression: str, block_size: int) -> None:
    images, masks = samples(203)
    path = write(tmp_path / "a.h5", images, masks, compression=compression, block_size=block_size)
    generator = np.random.default_rng(1)
    with h5py.File(path, "r") as handle:
        fd = handle.id.get_vfd_handle()
        for name, expected in (("images", images), ("masks", masks)):
            rows = ChunkRows.of(handle, name)
            assert rows is not None, name
            assert np.array_equal(rows.read(fd, np.arange(len(expected))), expected)
            for _ in range(10):
                wanted = np.unique(generator.integers(0, len(expected), size=generator.integers(1, 40)))
                assert np.array_equal(rows.read(fd, wanted), handle[name][wanted])


def test_lzf_chunks_that_did_not_compress_are_read_as_stored(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).integers(-32768, 32767, size=(40, *SHAPE)).astype(np.int16)
    noise[::2] = 0
    path = tmp_path / "noise.h5"
    with h5py.File(path, "w", libver="latest") as handle:
        handle.create_dataset("x", data=noise, chunks=(1, *SHAPE), compression="lzf", fletcher32=True)
    with h5py.File(path, "r") as handle:
        rows = ChunkRows.of(handle, "x")
        assert rows is not None and 0 < rows.uncompressed.sum() < len(noise)
        assert np.array_equal(rows.read(handle.id.get_vfd_handle(), np.arange(len(noise))), noise)


@pytest.mark.parametrize("compression", ["lzf", "gzip", "none"])
def test_a_damaged_chunk_is_an_error_and_its_neighbours_still_read(tmp_path: Path, flip_sample_bytes, compression: str) -> None:
    images, masks = samples(30)
    path = write(tmp_path / "a.h5", images, masks, compression=compression)
    flip_sample_bytes(path, 7)
    with h5py.File(path, "r") as handle:
        rows, fd = ChunkRows.of(handle, "images"), handle.id.get_vfd_handle()
        assert rows is not None
        with pytest.raises(OSError, match="Fletcher32 checksum failed"):
            rows.read(fd, np.array([3, 7, 9]))
        assert np.array_equal(rows.read(fd, np.array([3, 6, 8, 9])), images[[3, 6, 8, 9]])


def test_an_lzf_chunk_that_does_not_decode_is_an_error(tmp_path: Path) -> None:
    """Files without checksums: the decoder's own bounds checks catch a chunk that is not LZF."""
    images, _ = samples(12)
    path = tmp_path / "old.h5"
    with h5py.File(path, "w", libver="latest") as handle:
        handle.create_dataset("images", data=images, chunks=(1, *SHAPE), compression="lzf")
    with h5py.File(path, "r+") as handle:
        handle["images"].id.write_direct_chunk((5, 0, 0, 0), b"\xff" * 40)
    with h5py.File(path, "r") as handle:
        rows = ChunkRows.of(handle, "images")
        assert rows is not None and not rows.checksum
        with pytest.raises(OSError, match="LZF"):
            rows.read(handle.id.get_vfd_handle(), np.array([4, 5]))


def test_fletcher32_matches_hdf5s_checksum() -> None:
    generator = np.random.default_rng(3)
    # odd lengths, all-0xFF rows (sums that fold to 65535, not 0), and rows past one 2**16-word block
    lengths = np.array([1, 2, 221, 4096, 8192, 140_001, 140_001])
    width = int(lengths.max()) + 1
    slots = np.zeros((len(lengths), width), dtype=np.uint8)
    stored = np.zeros(len(lengths), dtype="<u4")
    for k, length in enumerate(lengths):
        row = np.full(length, 0xFF, dtype=np.uint8) if k == len(lengths) - 1 else generator.integers(0, 256, length, dtype=np.uint8)
        slots[k, :length] = row
        stored[k] = fletcher32_reference(row.tobytes())
    assert fletcher32_matches(slots, lengths, stored).all()
    swapped = stored.byteswap()  # as HDF5 < 1.6.3 stored it; HDF5 still accepts it
    assert fletcher32_matches(slots, lengths, swapped).all()
    slots[2, 100] ^= 0x01
    assert fletcher32_matches(slots, lengths, stored).tolist() == [True, True, False, True, True, True, True]


def test_layouts_it_cannot_decode_are_left_to_hdf5(tmp_path: Path) -> None:
    images, _ = samples(20)
    path = tmp_path / "other.h5"
    with h5py.File(path, "w", libver="latest") as handle:
        handle.create_dataset("big_endian", data=images.astype(">i2"), chunks=(1, *SHAPE))
        handle.create_dataset("contiguous", data=images)
        handle.create_dataset("scaleoffset", data=images, chunks=(1, *SHAPE), scaleoffset=0)
        partial = handle.create_dataset("unallocated", shape=images.shape, dtype=np.int16, chunks=(1, *SHAPE))
        partial[:10] = images[:10]
        layout = h5py.VirtualLayout(shape=images.shape, dtype=np.int16)
        layout[:] = h5py.VirtualSource(handle["contiguous"])
        handle.create_virtual_dataset("virtual", layout)
    with h5py.File(path, "r") as handle:
        for name in ("big_endian", "contiguous", "scaleoffset", "unallocated", "virtual"):
            assert ChunkRows.of(handle, name) is None, name


def test_a_file_replaced_under_the_same_path_is_indexed_again(tmp_path: Path) -> None:
    """A worker that opens the path after the file was rewritten must not use the old chunk positions."""
    images, masks = samples(30)
    path = write(tmp_path / "a.h5", images, masks)
    file = H5File(path)
    file.index_chunks()  # as H5Dataset does before DataLoader workers start
    write(path, images[::-1].copy(), masks[::-1].copy(), overwrite=True, compression="none")
    worker = pickle.loads(pickle.dumps(file))  # what a spawned worker gets: positions, no handle
    read_images, read_masks, _ = worker.read([0, 29, 3])
    assert np.array_equal(read_images, images[::-1][[0, 29, 3]]) and np.array_equal(read_masks, masks[::-1][[0, 29, 3]])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_lazy_reads_in_dataloader_workers_equal_the_file_held_in_memory(tiny_file, context: str) -> None:
    path = tiny_file(count=23)
    lazy, cached = H5Dataset(path, cache=False), H5Dataset(path)
    assert lazy.files[0]._chunks is not None  # indexed once, before the workers start
    loader = DataLoader(lazy, batch_size=5, shuffle=True, num_workers=2, multiprocessing_context=context, collate_fn=collate)
    seen = 0
    for batch in loader:
        expected = collate(cached.__getitems__(batch["index"].tolist()))
        assert torch.equal(batch["image"], expected["image"]) and torch.equal(batch["mask"], expected["mask"])
        assert batch["patient_id"] == expected["patient_id"]
        seen += len(batch["index"])
    assert seen == 23
