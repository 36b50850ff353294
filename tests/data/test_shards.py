from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from augmentor.data.dataset import H5Dataset
from augmentor.data.provenance import sha256_file
from augmentor.data.reader import H5File, read_info
from augmentor.data.shards import join_shards
from augmentor.errors import AugmentorError, SchemaError
from cli import app
from tests.one_line import assert_one_line_error

runner = CliRunner()


def test_join_concatenates_shards_in_order(tiny_file, tmp_path: Path, monkeypatch) -> None:
    first = tiny_file("a.h5", count=7, seed=1)
    second = tiny_file("b.h5", count=5, seed=2, patient_prefix="q")
    joined = join_shards([first, second], tmp_path / "joined.h5")
    info = read_info(joined)
    assert info.num_samples == 12
    records = info.provenance["shards"]
    assert [(r["path"], r["samples"]) for r in records] == [("a.h5", 7), ("b.h5", 5)]
    assert [r["bytes"] for r in records] == [first.stat().st_size, second.stat().st_size]
    assert [r["sha256"] for r in records] == [sha256_file(first), sha256_file(second)]
    assert [r["provenance"]["seed"] for r in records] == [1, 2]  # each shard keeps its own provenance
    assert info.provenance["seed"] is None  # the shards' seeds differ
    monkeypatch.chdir(os.sep)  # sources resolve relative to the joined file, not the working directory
    images, _, labels = H5File(joined).read(list(range(12)))
    expected_first, _, labels_first = H5File(first).read(list(range(7)))
    expected_second, _, labels_second = H5File(second).read(list(range(5)))
    np.testing.assert_array_equal(images, np.concatenate([expected_first, expected_second]))
    np.testing.assert_array_equal(labels, np.concatenate([labels_first, labels_second]))
    assert list(H5File(joined).patient_ids()[-2:]) == ["q003", "q000"]


def test_join_refuses_mismatched_shards(tiny_file, tmp_path: Path) -> None:
    first = tiny_file("a.h5")
    other = tiny_file("b.h5", class_names=("benign", "malignant"))
    with pytest.raises(SchemaError, match="class_names"):
        join_shards([first, other], tmp_path / "joined.h5")
    assert not (tmp_path / "joined.h5").exists()


def test_a_deleted_shard_is_an_error_not_zeros(tiny_file, tmp_path: Path) -> None:
    first, second = tiny_file("a.h5", count=7, seed=1), tiny_file("b.h5", count=5, seed=2)
    joined = join_shards([first, second], tmp_path / "joined.h5")
    opened = H5File(joined)  # validated while the shard was there
    second.unlink()
    message = f"{joined}: shard b.h5 (samples 7-11) is missing"
    assert_one_line_error(runner.invoke(app, ["inspect", str(joined), "--no-grid"]), message)
    assert_one_line_error(runner.invoke(app, ["export-dicom", str(joined), str(tmp_path / "dicom")]), message)
    assert not (tmp_path / "dicom").exists()
    with pytest.raises(SchemaError, match=r"shard b\.h5 \(samples 7-11\) is missing"):
        H5Dataset(joined)
    # a process that opens its own handle (a DataLoader worker) looks again
    worker_copy = pickle.loads(pickle.dumps(opened))
    with pytest.raises(SchemaError, match="is missing"):
        worker_copy.read([8])


def test_a_changed_shard_is_refused(tiny_file, tmp_path: Path) -> None:
    first, second = tiny_file("a.h5", count=7, seed=1), tiny_file("b.h5", count=5, seed=2)
    joined = join_shards([first, second], tmp_path / "joined.h5")
    tiny_file("b.h5", count=5, seed=3, overwrite=True)  # same shape and count, other samples
    with pytest.raises(SchemaError, match=r"shard b.h5 \(samples 7-11\) has changed since the join"):
        read_info(joined)
    assert_one_line_error(runner.invoke(app, ["inspect", str(joined), "--no-grid"]), "b.h5", "join the shards again")
    data = bytearray(first.read_bytes())
    first.write_bytes(bytes(data[:-100]))
    with pytest.raises(SchemaError, match=r"shard a.h5 \(samples 0-6\) has changed since the join \(\d+ bytes, was \d+\)"):
        read_info(joined)


def set_model(path: Path, weights_sha256: str) -> Path:
    with h5py.File(path, "r+") as handle:
        provenance = json.loads(handle.attrs["provenance"])
        provenance["model"] = {"name": "m", "weights_sha256": weights_sha256}
        handle.attrs["provenance"] = json.dumps(provenance)
    return path


def test_join_refuses_shards_of_different_model_weights(tiny_file, tmp_path: Path) -> None:
    first = set_model(tiny_file("a.h5", source="synthetic"), "a" * 64)
    same = set_model(tiny_file("b.h5", source="synthetic", seed=2), "a" * 64)
    other = set_model(tiny_file("c.h5", source="synthetic", seed=3), "b" * 64)
    joined = join_shards([first, same], tmp_path / "joined.h5")
    assert read_info(joined).provenance["model"]["weights_sha256"] == "a" * 64
    with pytest.raises(SchemaError, match=r"made by model weights bbbbbbbbbbbb, .*a\.h5 by aaaaaaaaaaaa; shards of different models"):
        join_shards([first, other], tmp_path / "mixed.h5")
    assert not (tmp_path / "mixed.h5").exists()


def test_a_join_of_joins_checks_the_inner_shards_and_each_shard_joins_once(tiny_file, tmp_path: Path) -> None:
    a, b, c = tiny_file("a.h5", count=3, seed=1), tiny_file("b.h5", count=4, seed=2), tiny_file("c.h5", count=2, seed=3)
    outer = join_shards([join_shards([a, b], tmp_path / "ab.h5"), c], tmp_path / "abc.h5")
    assert read_info(outer).num_samples == 9
    b.unlink()
    with pytest.raises(SchemaError, match=r"abc\.h5: .*ab\.h5: shard b\.h5 \(samples 3-6\) is missing"):
        read_info(outer)
    with pytest.raises(AugmentorError, match=r"a\.h5: given twice; each shard joins once"):
        join_shards([a, c, tmp_path / "." / "a.h5"], tmp_path / "twice.h5")
