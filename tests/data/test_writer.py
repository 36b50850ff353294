from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from augmentor.data import schema
from augmentor.data.reader import H5File, read_info
from augmentor.data.writer import H5Writer
from augmentor.errors import OutputExistsError, SchemaError
from cli import app


def test_written_file_validates_with_contract_dtypes_and_chunks(tiny_file) -> None:
    path = tiny_file(count=23, size=16, block_size=8)
    info = read_info(path)
    assert info.num_samples == 23
    assert info.image_shape == (1, 16, 16)
    assert info.class_names == ("cyst", "metastasis", "hemangioma")
    assert info.source is schema.Source.REAL
    assert info.provenance["details"] == {"made_by": "tests"}
    assert info.provenance["tool"] == "augmentor"
    with h5py.File(path) as handle:
        assert handle["images"].dtype == np.int16
        assert handle["masks"].dtype == np.uint8
        assert handle["images"].chunks == (8, 1, 16, 16)
        assert handle["images"].compression == "lzf"


def test_values_round_trip_in_order(tmp_path: Path) -> None:
    images = np.arange(6 * 4 * 4, dtype=np.float64).reshape(6, 1, 4, 4) - 40.4
    masks = (np.arange(6 * 16).reshape(6, 4, 4) % 3).astype(np.uint8)
    with H5Writer(tmp_path / "a.h5", class_names=["x", "y"], image_shape=(1, 4, 4)) as writer:
        writer.append(images[:2], masks[:2], [0, 1], ["a", "b"])
        writer.append(images[2:], masks[2:], [1, 1, 0, 0], ["c", "d", "e", "f"])
    file = H5File(tmp_path / "a.h5")
    got_images, got_masks, got_labels = file.read([5, 0, 3, 3])
    np.testing.assert_array_equal(got_images, np.rint(images[[5, 0, 3, 3]]).astype(np.int16))
    np.testing.assert_array_equal(got_masks, masks[[5, 0, 3, 3]])
    np.testing.assert_array_equal(got_labels, [0, 0, 1, 1])
    assert list(file.patient_ids()) == ["a", "b", "c", "d", "e", "f"]


def test_existing_output_is_refused_and_untouched(tiny_file) -> None:
    path = tiny_file()
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        H5Writer(path, class_names=["a"], image_shape=(1, 4, 4))
    assert path.read_bytes() == before


def test_overwrite_replaces_only_on_success(tiny_file, tmp_path: Path) -> None:
    path = tiny_file()
    before = path.read_bytes()
    with pytest.raises(RuntimeError), H5Writer(path, class_names=["a"], image_shape=(1, 4, 4), overwrite=True) as writer:
        writer.append(np.zeros((1, 1, 4, 4)), np.zeros((1, 4, 4)), [0], ["p"])
        raise RuntimeError("interrupted")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "temporary file left behind"
    with H5Writer(path, class_names=["a"], image_shape=(1, 4, 4), overwrite=True) as writer:
        writer.append(np.zeros((1, 1, 4, 4)), np.zeros((1, 4, 4)), [0], ["p"])
    assert read_info(path).num_samples == 1


@pytest.mark.parametrize(
    ("images", "masks", "labels", "message"),
    [
        (np.full((1, 1, 4, 4), np.nan), np.zeros((1, 4, 4)), [0], "NaN"),
        (np.zeros((1, 1, 5, 4)), np.zeros((1, 5, 4)), [0], "image batch shape"),
        (np.zeros((1, 1, 4, 4)), np.zeros((1, 4, 3)), [0], "mask batch shape"),
        (np.zeros((1, 1, 4, 4)), np.zeros((1, 4, 4)), [2], "labels must be in 0..1"),
        (np.zeros((2, 1, 4, 4)), np.zeros((2, 4, 4)), [0], "got 1 labels for 2 images"),
    ],
)
def test_bad_batches_are_one_line_errors_and_leave_no_file(tmp_path: Path, images, masks, labels, message) -> None:
    out = tmp_path / "bad.h5"
    with pytest.raises(SchemaError, match=message) as caught, H5Writer(out, class_names=["a", "b"], image_shape=(1, 4, 4)) as writer:
        writer.append(images, masks, labels, ["p"] * len(images))
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_kill_9_leaves_no_file_at_final_path(tmp_path: Path) -> None:
    out = tmp_path / "killed.h5"
    script = textwrap.dedent(
        f"""
        import numpy as np, sys
        from augmentor.data.writer import H5Writer
        with H5Writer({str(out)!r}, class_names=["a"], image_shape=(1, 32, 32)) as writer:
            print("started", flush=True)
            while True:
                writer.append(np.zeros((64, 1, 32, 32)), np.zeros((64, 32, 32)), [0] * 64, ["p"] * 64)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started"
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    (left,) = tmp_path.glob(".killed.h5.*.tmp")  # a killed process cannot clean up after itself
    assert left.stat().st_size > 0
    # the next write to the same path (here `augment ingest`) removes what the killed one left
    source = tmp_path / "source"
    source.mkdir()
    mask = np.zeros((32, 32))
    mask[10:20, 10:20] = 1
    np.savez(source / "p.npz", image=np.zeros((32, 32)), mask=mask)
    result = CliRunner().invoke(app, ["ingest", str(source), "--out", str(out), "--roi-size", "16"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.h5", "source"]


def test_reader_names_what_is_wrong(tiny_file, tmp_path: Path) -> None:
    path = tiny_file()
    with h5py.File(path, "r+") as handle:
        handle.attrs["class_names"] = json.dumps(["only"])
    with pytest.raises(SchemaError, match="label 2 is out of range for 1 classes"):
        read_info(path)
    with h5py.File(path, "r+") as handle:
        handle.attrs["schema_version"] = 99
    with pytest.raises(SchemaError, match="schema version 99 is not supported"):
        read_info(path)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(SchemaError, match="not a readable HDF5 file"):
        read_info(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle.create_dataset("x", data=[1])
    with pytest.raises(SchemaError, match="missing attribute 'schema_version'"):
        read_info(other)
