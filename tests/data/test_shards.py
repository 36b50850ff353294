from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from augmentor.data.reader import H5File, read_info
from augmentor.data.shards import join_shards
from augmentor.errors import SchemaError


def test_join_concatenates_shards_in_order(tiny_file, tmp_path: Path, monkeypatch) -> None:
    first = tiny_file("a.h5", count=7, seed=1)
    second = tiny_file("b.h5", count=5, seed=2, patient_prefix="q")
    joined = join_shards([first, second], tmp_path / "joined.h5")
    info = read_info(joined)
    assert info.num_samples == 12
    assert info.provenance["shards"] == ["a.h5", "b.h5"]
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
