"""Shared fixtures: tiny augmentor files made in the test, never real data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from augmentor.data.provenance import make_provenance
from augmentor.data.writer import H5Writer

torch.set_num_threads(1)


def write_tiny(
    path: Path,
    count: int = 12,
    size: int = 16,
    class_names: tuple[str, ...] = ("cyst", "metastasis", "hemangioma"),
    source: str = "real",
    patients: int = 4,
    seed: int = 0,
    patient_prefix: str = "p",
    **writer_options: object,
) -> Path:
    """Write a tiny valid file: a bright disc (class-dependent HU) on noise, its mask, patient ids."""
    generator = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.arange(count) % len(class_names)
    masks = np.zeros((count, size, size), dtype=np.uint8)
    images = generator.normal(60.0, 15.0, size=(count, 1, size, size))
    for i in range(count):
        radius = 2 + (i % 3)
        disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2
        masks[i][disc] = 1
        images[i, 0][disc] = 10.0 + 40.0 * labels[i]
    ids = [f"{patient_prefix}{i % patients:03d}" for i in range(count)]
    with H5Writer(
        path,
        class_names=class_names,
        image_shape=(1, size, size),
        source=source,
        provenance=make_provenance(seed=seed, details={"made_by": "tests"}),
        **writer_options,  # type: ignore[arg-type]
    ) as writer:
        for start in range(0, count, 5):
            stop = min(start + 5, count)
            writer.append(images[start:stop], masks[start:stop], labels[start:stop], ids[start:stop])
    return path


@pytest.fixture
def tiny_file(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tiny_file("name.h5", count=..., ...)`` writes a tiny valid file under tmp_path."""

    def make(name: str = "tiny.h5", **options: object) -> Path:
        return write_tiny(tmp_path / name, **options)  # type: ignore[arg-type]

    return make


def flip_bytes_of_sample(path: Path, index: int, name: str = "images") -> None:
    """Damage a file: flip a few bytes in the middle of the stored chunk of sample ``index`` of dataset
    ``name`` (the writer stores one sample per chunk)."""
    import h5py

    with h5py.File(path, "r") as handle:
        dataset = handle[name]
        chunk = dataset.id.get_chunk_info_by_coord((index,) + (0,) * (dataset.ndim - 1))
    data = bytearray(path.read_bytes())
    for offset in range(chunk.size // 2, chunk.size // 2 + 4):
        data[chunk.byte_offset + offset] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.fixture
def flip_sample_bytes() -> Callable[..., None]:
    """``flip_sample_bytes(path, index, name="images")``: see :func:`flip_bytes_of_sample`."""
    return flip_bytes_of_sample
