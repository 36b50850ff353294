"""A damaged file never reads as valid: flipped bytes in a sample are a one-line error naming the file and
the sample, in ``inspect``, ``export-dicom`` and the plug-in dataset, never a traceback or wrong HU."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from augmentor.data.dataset import H5Dataset
from augmentor.data.reader import H5File, read_info
from augmentor.errors import SchemaError
from cli import app
from tests.one_line import assert_one_line_error

runner = CliRunner()


def test_flipped_bytes_in_a_sample_are_one_line_errors(tiny_file, flip_sample_bytes, tmp_path: Path) -> None:
    path = tiny_file("damaged.h5", count=12)
    flip_sample_bytes(path, 7)
    message = f"{path}: sample 7 of 'images' cannot be read"
    assert_one_line_error(runner.invoke(app, ["inspect", str(path), "--no-grid"]), message, "the file is damaged")
    assert_one_line_error(runner.invoke(app, ["export-dicom", str(path), str(tmp_path / "dicom")]), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.h5"]  # no export folder, no temporary left
    lazy = H5Dataset(path, cache=False)
    assert int(lazy[6]["label"]) == 0  # the samples around it still read
    with pytest.raises(SchemaError, match="sample 7 of 'images' cannot be read"):
        lazy[7]
    with pytest.raises(SchemaError, match="sample 7 of 'images' cannot be read"):
        lazy.__getitems__([2, 7, 9])
    with pytest.raises(SchemaError, match="sample 7 of 'images' cannot be read"):
        H5Dataset(path)  # small files are read into memory when the dataset is made


def test_flipped_bytes_in_the_masks_and_labels_too(tiny_file, flip_sample_bytes) -> None:
    path = tiny_file("masks.h5", count=12)
    flip_sample_bytes(path, 3, "masks")
    with pytest.raises(SchemaError, match="sample 3 of 'masks' cannot be read"):
        H5File(path).read([1, 3])
    labelled = tiny_file("labels.h5", count=12)
    flip_sample_bytes(labelled, 0, "labels")
    with pytest.raises(SchemaError, match=f"{labelled}: its structure or labels cannot be read"):
        read_info(labelled)


def test_undecodable_chunk_in_a_file_without_checksums(tiny_file, tmp_path: Path) -> None:
    """Files written before chunks carried checksums: a chunk that no longer decodes is the same one line."""
    written = tiny_file("new.h5", count=12)
    path = tmp_path / "old.h5"
    with h5py.File(written, "r") as source, h5py.File(path, "w", libver="latest") as target:
        for key, value in source.attrs.items():
            target.attrs[key] = value
        for name in ("images", "masks", "labels", "patient_ids"):
            dataset = source[name]
            compression = {"compression": "lzf"} if name in ("images", "masks") else {}
            target.create_dataset(name, data=dataset[...], chunks=dataset.chunks, maxshape=dataset.maxshape, **compression)
    with h5py.File(path, "r+") as handle:
        handle["images"].id.write_direct_chunk((5, 0, 0, 0), b"\xff" * 40)
    assert_one_line_error(runner.invoke(app, ["inspect", str(path), "--no-grid"]), f"{path}: sample 5 of 'images' cannot be read")
