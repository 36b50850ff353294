"""``augment ingest --whole-slices``: the user's CT as a whole-slice domain (tiny DICOM and NIfTI made here)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from ingest_inputs import PATIENT_ID, PATIENT_NAME, STUDY_DATE, assert_not_in_bytes, disk, write_ct_series
from typer.testing import CliRunner

from augmentor.data.ingest.whole_slices import ingest_whole_slices
from augmentor.data.reader import H5File
from cli import app
from tests.one_line import assert_one_line_error

runner = CliRunner()


def _body_volume(slices: int, size: int, padding_hu: float = -1000.0) -> np.ndarray:
    """(Z, H, W) HU: a water-like body (40 + 10 z HU) in air, scanner padding outside the field's circle."""
    volume = np.full((slices, size, size), -1000.0)
    body = disk((size, size), ((size - 1) / 2, (size - 1) / 2), size * 0.35)
    outside = ~disk((size, size), ((size - 1) / 2, (size - 1) / 2), size * 0.5)
    for z in range(slices):
        volume[z][body] = 40.0 + 10.0 * z
        volume[z][outside] = padding_hu
    return volume


def test_dicom_series_without_mask_becomes_whole_slices(tmp_path: Path) -> None:
    source = tmp_path / "source"
    series_folder = source / f"{PATIENT_NAME}_{STUDY_DATE}"  # a folder named after the patient: never stored
    hu = _body_volume(3, 64, padding_hu=-3024.0)
    write_ct_series(series_folder, hu, spacing=(0.7, 0.7), slope=1.0, intercept=-3072.0)
    out = ingest_whole_slices(source, tmp_path / "ct.h5", size=32, spacing_mm=1.4, salt="s", progress=False)

    file = H5File(out)
    images, masks, labels = file.read(np.arange(len(file)))
    assert file.info.image_shape == (1, 32, 32) and len(file) == 3
    assert file.info.pixel_spacing_mm == (1.4, 1.4) and file.info.source.value == "real"
    assert file.info.mask_label_names == ("background", "labelled") and not masks.any() and not labels.any()
    # Display order (inferior to superior) and HU kept: the body's centre reads 40, 50, 60 HU.
    assert images[:, 0, 14:18, 14:18].mean(axis=(1, 2)).tolist() == [40.0, 50.0, 60.0]
    assert file.extra("slice").tolist() == [0, 1, 2]
    # The -3024 HU padding outside the field's circle became air before resampling: no ring below air.
    assert images.min() >= -1024 and images[:, 0, 0, 0].tolist() == [-1024, -1024, -1024]
    ids = set(file.patient_ids().astype(str))
    assert len(ids) == 1 and PATIENT_ID not in next(iter(ids))
    with h5py.File(out, "r") as handle:
        provenance = json.loads(handle.attrs["provenance"])
    assert provenance["command"].startswith("augment ingest SOURCE --out ct.h5 --format dicom --whole-slices --size 32 --spacing 1.4")
    assert provenance["details"]["ingest"]["whole_slices"] is True
    assert_not_in_bytes(out, [PATIENT_NAME, PATIENT_ID, STUDY_DATE, str(tmp_path)])


def _nifti(path: Path, hu_zyx: np.ndarray, spacing_mm: float) -> None:
    """Write (Z, H, W) display-order HU as a RAS NIfTI (x, y, z) of ``spacing_mm`` pixels."""
    data = hu_zyx[:, ::-1, ::-1].transpose(2, 1, 0).astype(np.int16)  # inverse of the display transform
    nib.Nifti1Image(np.ascontiguousarray(data), np.diag([spacing_mm, spacing_mm, 3.0, 1.0])).to_filename(path)


def test_nifti_volumes_with_and_without_labels_fit_their_field_to_size(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    hu = _body_volume(2, 96)
    _nifti(source / "p1__venous.nii.gz", hu, 0.5)
    labels = np.zeros((2, 96, 96), dtype=np.uint8)
    labels[:, 40:56, 40:56] = 3  # an organ label (unnamed: kept as "labelled")
    _nifti(source / "p1__venous_label.nii.gz", labels, 0.5)
    _nifti(source / "p2.nii.gz", hu + 5.0, 0.5)  # no label map at all
    out = ingest_whole_slices(source, tmp_path / "ct.h5", size=48, salt="s", progress=False)

    file = H5File(out)
    images, masks, _labels = file.read(np.arange(len(file)))
    assert len(file) == 4 and file.info.pixel_spacing_mm == (1.0, 1.0)  # 96 x 0.5 mm fitted to 48 pixels
    assert masks[:2, 20:28, 20:28].all() and masks[:2].max() == 1 and masks[:2].sum() == 2 * 8 * 8
    assert not masks[2:].any()
    assert images[:2, 0, 22:26, 22:26].mean() == pytest.approx(45.0, abs=0.6)
    assert images[2:, 0, 22:26, 22:26].mean() == pytest.approx(50.0, abs=0.6)
    assert len(set(file.patient_ids().astype(str))) == 2
    # Spacing given: 1.0 mm pixels put the 48 mm field in the middle of a 64-pixel slice, air around it.
    padded = H5File(ingest_whole_slices(source, tmp_path / "padded.h5", size=64, spacing_mm=1.0, salt="s", progress=False))
    image = padded.read(np.arange(1))[0][0, 0]
    assert image[:8].max() == -1024 and image[32, 32] == pytest.approx(40, abs=1)


def test_whole_slice_errors_are_one_line_and_leave_no_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    _nifti(source / "a.nii.gz", _body_volume(1, 64), 0.5)
    _nifti(source / "b.nii.gz", _body_volume(1, 64), 0.8)  # another field of view
    out = tmp_path / "ct.h5"
    different = runner.invoke(app, ["ingest", str(source), "--out", str(out), "--whole-slices", "--size", "32", "--salt", "s"])
    assert_one_line_error(different, "field of view", "--spacing")
    assert not out.exists() and not list(tmp_path.glob("*.h5*"))
    done = runner.invoke(app, ["ingest", str(source), "--out", str(out), "--whole-slices", "--size", "32", "--spacing", "1.0", "--salt", "s"])
    assert done.exit_code == 0, done.output
    assert H5File(out).info.image_shape == (1, 32, 32)
    assert_one_line_error(runner.invoke(app, ["ingest", str(source), "--out", str(tmp_path / "x.h5"), "--whole-slices", "--size", "8"]), "--size")
    assert_one_line_error(runner.invoke(app, ["ingest", str(source), "--out", str(tmp_path / "x.h5"), "--whole-slices", "--class-names", "a,b"]),
                          "no classes")
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(pngs / "p.png")
    assert_one_line_error(runner.invoke(app, ["ingest", str(pngs), "--out", str(tmp_path / "x.h5"), "--whole-slices"]), "DICOM series or NIfTI")
    assert not (tmp_path / "x.h5").exists()
