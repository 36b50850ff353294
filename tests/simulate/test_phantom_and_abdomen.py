"""The phantom file and the abdomen-ct cohort: contract, determinism, disjoint patients."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from augmentor.data.reader import read_info
from augmentor.errors import AugmentorError, OutputExistsError
from augmentor.simulate.abdomen import build_abdomen_ct
from augmentor.simulate.phantom import write_phantoms
from augmentor.simulate.tissues import LABEL_NAMES, NOMINAL_HU, Tissue


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {name: handle[name][...] for name in ("images", "masks", "labels", "patient_ids")}


def test_phantom_file_is_flat_per_tissue_with_label_names(tmp_path: Path) -> None:
    out = write_phantoms(tmp_path / "phantoms.h5", 2, seed=1, slices_per_patient=2, size=64, progress=False)
    info = read_info(out)
    assert info.source.value == "phantom" and info.num_samples == 4
    assert info.mask_label_names == LABEL_NAMES
    assert info.pixel_spacing_mm == pytest.approx((5.6, 5.6))
    arrays = _arrays(out)
    images, masks = arrays["images"][:, 0], arrays["masks"]
    for label in np.unique(masks):
        values = np.unique(images[masks == label])
        assert values.size == 1 and values[0] == round(NOMINAL_HU[int(label)])  # flat intensity per tissue
    assert Tissue.LIVER in masks
    assert sorted(set(arrays["patient_ids"].astype(str))) == ["phantom-0000", "phantom-0001"]


def test_phantom_same_seed_same_bytes_and_refuses_overwrite(tmp_path: Path) -> None:
    created = "2025-01-01T00:00:00+00:00"
    first = write_phantoms(tmp_path / "a.h5", 1, seed=2, slices_per_patient=2, size=48, progress=False, created=created)
    second = write_phantoms(tmp_path / "b.h5", 1, seed=2, slices_per_patient=2, size=48, progress=False, created=created)
    assert first.read_bytes() == second.read_bytes()
    with pytest.raises(OutputExistsError):
        write_phantoms(first, 1, size=48, progress=False)
    with pytest.raises(AugmentorError, match="n-patients"):
        write_phantoms(tmp_path / "c.h5", 0, size=48, progress=False)


def test_abdomen_cohort_is_deterministic_for_any_worker_count_and_disjoint(tmp_path: Path) -> None:
    def build(folder: str, workers: int) -> dict[str, Path]:
        return build_abdomen_ct(tmp_path / folder, seed=3, train_size=3, test_size=2, slices_per_patient=2, size=48,
                                progress=False, workers=workers, scan_size=96)

    single, double = build("one", 1), build("two", 2)
    for split in ("train", "test"):
        a, b = _arrays(single[split]), _arrays(double[split])
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
        info = read_info(single[split])
        assert info.source.value == "real" and info.mask_label_names == LABEL_NAMES
    train, test = _arrays(single["train"]), _arrays(single["test"])
    assert len(train["images"]) == 3 and len(test["images"]) == 2
    assert not set(train["patient_ids"].astype(str)) & set(test["patient_ids"].astype(str))
    phantom = write_phantoms(tmp_path / "ph.h5", 2, seed=3, slices_per_patient=1, size=48, progress=False)
    assert not set(_arrays(phantom)["patient_ids"].astype(str)) & set(train["patient_ids"].astype(str))
    # Scanned, not flat: CT noise inside the body, air around it.
    body = train["masks"][0] > 0
    assert train["images"][0, 0][body].std() > 30.0
    assert train["images"][0, 0][0:4, 0:4].mean() < -900


def test_phantom_command_writes_patients(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    out = tmp_path / "phantoms.h5"
    result = runner.invoke(app, ["phantom", "--n-patients", "1", "--slices", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 phantom slices" in result.output and out.exists()
    again = runner.invoke(app, ["phantom", "--n-patients", "1", "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
