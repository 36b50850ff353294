"""export-dicom: CT images + mask series, marked synthetic, HU through slope/intercept, read back by ingest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from augmentor.data.export_dicom import export_dicom
from augmentor.data.ingest import ingest
from augmentor.data.reader import H5File
from augmentor.data.writer import H5Writer
from cli import app

runner = CliRunner()


def samples_by_content(path: Path) -> list[tuple[str, bytes, bytes]]:
    """(class, image bytes, mask bytes) per sample, sorted: compares files regardless of sample order."""
    file = H5File(path)
    images, masks, labels = file.read(np.arange(len(file)))
    return sorted((file.info.class_names[label], images[i].tobytes(), masks[i].tobytes()) for i, label in enumerate(labels))


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_round_trip_export_then_ingest(tiny_file: Callable[..., Path], tmp_path: Path, source: str) -> None:
    original = tiny_file(count=9, size=16, source=source, pixel_spacing_mm=(0.8, 0.8), hu_window=(-100.0, 200.0))
    exported = export_dicom(original, tmp_path / "dicom", progress=False)
    assert exported == 9
    back = ingest(tmp_path / "dicom", tmp_path / "back.h5", roi_size=16, hu_window=(-100.0, 200.0), progress=False)
    before, after = H5File(original).info, H5File(back).info
    assert after.class_names == before.class_names  # names and their order
    assert after.source == before.source and after.mask_label_names == before.mask_label_names
    assert after.pixel_spacing_mm == pytest.approx(before.pixel_spacing_mm)
    assert samples_by_content(back) == samples_by_content(original)  # same HU, masks and classes
    assert len(set(H5File(back).patient_ids())) == len(set(H5File(original).patient_ids()))


def test_round_trip_keeps_extreme_hu_and_named_mask_labels(tmp_path: Path) -> None:
    images = np.zeros((2, 1, 8, 8), dtype=np.int16)
    images[0, 0, 0, :2] = (-32768, 31000)  # 31000 + 1024 would overflow int16: intercept 0 then
    images[1, 0, 0, :2] = (-3000, 3000)
    masks = np.zeros((2, 8, 8), dtype=np.uint8)
    masks[:, 2:4, 2:4], masks[:, 5:7, 5:7] = 1, 2
    original = tmp_path / "organs.h5"
    with H5Writer(original, class_names=["phantom slice"], image_shape=(1, 8, 8), source="phantom",
                  mask_label_names=["background", "liver", "spleen"]) as writer:
        writer.append(images, masks, [0, 0], ["vp-1", "vp-2"])
    export_dicom(original, tmp_path / "dicom", progress=False)
    back = ingest(tmp_path / "dicom", tmp_path / "back.h5", roi_size=8, progress=False)
    info = H5File(back).info
    assert info.source.value == "phantom" and info.mask_label_names == ("background", "liver", "spleen")
    assert info.class_names == ("phantom slice",)
    assert samples_by_content(back) == samples_by_content(original)


def test_dicom_attributes(tiny_file: Callable[..., Path], tmp_path: Path) -> None:
    original = tiny_file("s.h5", count=3, size=16, source="synthetic", pixel_spacing_mm=(0.8, 0.7))
    export_dicom(original, tmp_path / "dicom", progress=False)
    file = H5File(original)
    images, masks, _ = file.read([0])
    image = pydicom.dcmread(tmp_path / "dicom" / "cyst" / "000000.dcm")
    mask = pydicom.dcmread(tmp_path / "dicom" / "cyst" / "000000_mask.dcm")
    assert image.SOPClassUID == pydicom.uid.CTImageStorage and image.Modality == "CT"
    assert image.SyntheticData == "YES" and mask.SyntheticData == "YES"
    assert list(image.ImageType)[:2] == ["DERIVED", "SECONDARY"] and image.SeriesDescription.startswith("SYNTHETIC")
    assert "augmentor class: cyst" in image.ImageComments
    assert float(image.RescaleSlope) == 1 and float(image.RescaleIntercept) == -1024
    hu = image.pixel_array.astype(np.int32) * int(image.RescaleSlope) + int(image.RescaleIntercept)
    np.testing.assert_array_equal(hu, images[0, 0])
    assert [float(v) for v in image.PixelSpacing] == [0.8, 0.7]
    np.testing.assert_array_equal(mask.pixel_array, masks[0])
    assert mask.ReferencedSeriesSequence[0].SeriesInstanceUID == image.SeriesInstanceUID
    assert mask.StudyInstanceUID == image.StudyInstanceUID and mask.SeriesInstanceUID != image.SeriesInstanceUID
    assert image.PatientID == file.patient_ids()[0]

    real = tiny_file("r.h5", count=1, size=16, source="real")
    export_dicom(real, tmp_path / "real", progress=False)
    real_image = pydicom.dcmread(tmp_path / "real" / "cyst" / "000000.dcm")
    assert real_image.SyntheticData == "NO" and "SYNTHETIC" not in real_image.SeriesDescription


def test_cli_refuses_a_non_empty_folder_and_keeps_it(tiny_file: Callable[..., Path], tmp_path: Path) -> None:
    original = tiny_file("t.h5", count=2, size=16)
    out = tmp_path / "dicom"
    out.mkdir()
    keep = out / "notes.txt"
    keep.write_text("mine")
    result = runner.invoke(app, ["export-dicom", str(original), str(out)])
    assert result.exit_code == 2 and result.output.strip() == f"error: {out} exists and is not empty; pass --overwrite to replace it"
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and keep.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dicom", "t.h5"]  # no temporary folder left

    replaced = runner.invoke(app, ["export-dicom", str(original), str(out), "--overwrite"])
    assert replaced.exit_code == 0 and replaced.output.strip() == f"wrote 2 samples to {out} (4 DICOM files)"
    assert not keep.exists() and len(list(out.rglob("*.dcm"))) == 4
    missing = runner.invoke(app, ["export-dicom", str(tmp_path / "nope.h5"), str(tmp_path / "x")])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1 and "file not found" in missing.output
    assert not (tmp_path / "x").exists()
