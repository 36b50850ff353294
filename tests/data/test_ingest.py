"""Ingest: every format into the HDF5 contract, exact HU, spacing, classes, ROI centring, pseudonyms,
and one-line errors that leave the output path untouched."""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from ingest_inputs import (
    PATIENT_ID,
    PATIENT_NAME,
    STUDY_DATE,
    assert_not_in_bytes,
    disk,
    hu_pattern,
    nifti_affine_for_series,
    write_ct_series,
)
from PIL import Image
from typer.testing import CliRunner

from augmentor.data.ingest import ingest
from augmentor.data.ingest.roi import extract_rois
from augmentor.data.reader import H5File
from cli import app

runner = CliRunner()


def read_all(path: Path) -> tuple[H5File, np.ndarray, np.ndarray, np.ndarray]:
    file = H5File(path)
    images, masks, labels = file.read(np.arange(len(file)))
    return file, images, masks, labels


def mask_centre(mask: np.ndarray) -> tuple[float, float]:
    rows, columns = np.nonzero(mask)
    return float(rows.mean()), float(columns.mean())


def volume_with_lesions(shape: tuple[int, int, int], lesions: list[tuple[int, tuple[float, float], float]]) -> np.ndarray:
    """(Z, H, W) uint8 label map with a disk per (slice, centre, radius)."""
    label = np.zeros(shape, dtype=np.uint8)
    for z, centre, radius in lesions:
        label[z][disk(shape[1:], centre, radius)] = 1
    return label


# --- DICOM ----------------------------------------------------------------------------------------


def write_dicom_source(root: Path) -> dict[str, object]:
    """Three patients: a mask series (referenced), a mask.npy, and a label NIfTI with its own axis order."""
    secrets: list[str] = [PATIENT_NAME, PATIENT_ID, STUDY_DATE, "19500101", "DOE_JOHN"]
    hu_a = hu_pattern((5, 96, 96), seed=1)
    label_a = volume_with_lesions(hu_a.shape, [(z, (40, 55), 5) for z in (1, 2, 3)])
    _paths, series_a = write_ct_series(root / "cyst" / "DOE_JOHN", hu_a, study_uid="1.2.3.4.5.6.7.1")
    write_ct_series(
        root / "cyst" / "DOE_JOHN", label_a, is_mask=True, referenced_series_uid=series_a, prefix="mask", study_uid="1.2.3.4.5.6.7.1"
    )
    secrets += ["1.2.3.4.5.6.7.1", series_a]

    hu_b = hu_pattern((4, 96, 96), seed=2)
    label_b = volume_with_lesions(hu_b.shape, [(0, (70, 30), 4), (1, (70, 30), 4)])
    _, series_b = write_ct_series(root / "metastasis" / "case2", hu_b, patient_name="ROE^JANE", patient_id="MRN-67890")
    np.save(root / "metastasis" / "case2" / "mask.npy", label_b)
    secrets += ["ROE^JANE", "MRN-67890", series_b]

    hu_c = hu_pattern((3, 96, 96), seed=3)
    label_c = volume_with_lesions(hu_c.shape, [(2, (20, 75), 3)])
    _, series_c = write_ct_series(root / "metastasis" / "case3", hu_c, patient_name="POE^EDGAR", patient_id="MRN-55555")
    # The label as a converter would store it: indexed [column, row, slice], affine in RAS.
    nib.Nifti1Image(label_c.transpose(2, 1, 0), nifti_affine_for_series((0.7, 0.7), 2.5)).to_filename(
        root / "metastasis" / "case3" / "mask.nii.gz"
    )
    secrets += ["POE^EDGAR", "MRN-55555", series_c]
    return {"hu": (hu_a, hu_b, hu_c), "secrets": secrets}


def test_dicom_series_to_rois_with_hu_spacing_classes_and_pseudonyms(tmp_path: Path) -> None:
    source = tmp_path / "source"
    written = write_dicom_source(source)
    hu_a, hu_b, hu_c = written["hu"]  # type: ignore[misc]
    out = ingest(source, tmp_path / "real.h5", salt="pepper", progress=False)

    file, images, masks, labels = read_all(out)
    info = file.info
    assert info.source.value == "real" and info.modality == "CT"
    assert info.class_names == ("cyst", "metastasis")
    assert info.pixel_spacing_mm == pytest.approx((0.7, 0.7))
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert file.extra("slice").tolist() == [1, 2, 3, 0, 1, 2]  # sorted by position, not by file name
    # HU = stored x 0.5 - 1024, exactly; the ROI is centred on the lesion, shifted in at the borders.
    expected = [hu_a[z, 8:72, 23:87] for z in (1, 2, 3)] + [hu_b[z, 32:96, 0:64] for z in (0, 1)] + [hu_c[2, 0:64, 32:96]]
    for index, crop in enumerate(expected):
        np.testing.assert_array_equal(images[index, 0], crop)
    assert mask_centre(masks[0]) == pytest.approx((32.0, 32.0))
    assert mask_centre(masks[3]) == pytest.approx((38.0, 30.0))  # clamped at the bottom-left border
    assert mask_centre(masks[5]) == pytest.approx((20.0, 43.0))  # from the NIfTI label on the DICOM grid
    assert set(np.unique(masks)) == {0, 1}

    ids = file.patient_ids()
    assert len(set(ids[:3])) == 1 and len(set(ids)) == 3 and all(i.startswith("P") and len(i) == 17 for i in ids)
    file.close()
    assert_not_in_bytes(out, written["secrets"])  # type: ignore[arg-type]
    assert "pepper" not in out.read_bytes().decode("latin-1")

    again = ingest(source, tmp_path / "again.h5", salt="pepper", slices="largest", progress=False)
    other = ingest(source, tmp_path / "other.h5", salt="salt", progress=False)
    again_file, other_file = H5File(again), H5File(other)
    assert len(again_file) == 3  # one slice per lesion
    assert set(again_file.patient_ids()) == set(ids)  # same salt, same pseudonyms
    assert not set(other_file.patient_ids()) & set(ids)


def test_largest_slice_and_lesion_numbering() -> None:
    label = volume_with_lesions((3, 80, 80), [(0, (15, 15), 3), (1, (15, 15), 6), (2, (15, 15), 4), (1, (60, 60), 5)])
    image = np.zeros(label.shape, dtype=np.float32)
    rois = list(extract_rois(image, label, roi_size=32, slices="largest"))
    assert [(roi.lesion, roi.slice_index) for roi in rois] == [(1, 1), (2, 1)]
    all_rois = list(extract_rois(image, label, roi_size=32))
    assert [(roi.lesion, roi.slice_index) for roi in all_rois] == [(1, 0), (1, 1), (1, 2), (2, 1)]


# --- NIfTI ----------------------------------------------------------------------------------------


def write_nifti_case(folder: Path, name: str = "p7__arterial") -> np.ndarray:
    """An int16 NIfTI with scl_slope/inter (HU = 0.5 x stored - 1024) and a label stored x-flipped."""
    folder.mkdir(parents=True, exist_ok=True)
    hu = hu_pattern((80, 72, 4), seed=4)  # (x, y, z) RAS
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    image = nib.Nifti1Image(((hu.astype(np.int32) + 1024) * 2).astype(np.int16), affine)
    image.header.set_slope_inter(0.5, -1024)
    image.to_filename(folder / f"{name}.nii.gz")
    label = np.zeros(hu.shape, dtype=np.uint8)
    for z, radius in ((1, 4), (2, 2)):
        label[:, :, z][disk((80, 72), (20, 30), radius)] = 1
    flipped_affine = affine.copy()
    flipped_affine[:3, 3] += affine[:3, 0] * 79
    flipped_affine[:3, 0] *= -1
    nib.Nifti1Image(label[::-1].copy(), flipped_affine).to_filename(folder / f"{name}_label.nii.gz")
    return hu


def test_nifti_volume_in_display_orientation(tmp_path: Path) -> None:
    hu = write_nifti_case(tmp_path / "source" / "hemangioma")
    out = ingest(tmp_path / "source", tmp_path / "nifti.h5", progress=False)
    file, images, masks, _labels = read_all(out)
    assert file.info.class_names == ("hemangioma",) and file.info.pixel_spacing_mm == pytest.approx((0.8, 0.8))
    display = hu.transpose(2, 1, 0)[:, ::-1, ::-1]  # rows anterior->posterior, columns right->left
    # voxel (x=20, y=30) is displayed at row 71-30=41, column 79-20=59; the ROI is clamped inside.
    np.testing.assert_array_equal(images[0, 0], display[1, 8:72, 16:80])
    assert mask_centre(masks[0]) == pytest.approx((41 - 8, 59 - 16))
    assert file.extra("slice").tolist() == [1, 2]

    resampled = ingest(tmp_path / "source", tmp_path / "resampled.h5", spacing_mm=1.6, roi_size=16, progress=False)
    info = H5File(resampled).info
    assert info.pixel_spacing_mm == (1.6, 1.6) and info.image_shape == (1, 16, 16)


# --- PNG / TIFF -----------------------------------------------------------------------------------


def test_png_and_tiff_slices(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "cyst").mkdir(parents=True)
    (source / "hemangioma").mkdir()
    hu_png = hu_pattern((1, 80, 80), seed=5)[0]
    Image.fromarray((hu_png.astype(np.int32) + 32768).astype(np.uint16)).save(source / "cyst" / "p001__s1.png")
    Image.fromarray(disk((80, 80), (40, 40), 5).astype(np.uint8) * 255).save(source / "cyst" / "p001__s1_mask.png")
    import tifffile

    hu_tiff = hu_pattern((1, 80, 80), seed=6)[0]
    tifffile.imwrite(source / "cyst" / "p001__s2.tif", hu_tiff)
    tifffile.imwrite(source / "cyst" / "p001__s2_mask.tif", disk((80, 80), (50, 20), 4).astype(np.uint8))
    ready = hu_pattern((1, 64, 64), seed=7)[0]  # already an ROI: taken whole, lesion off-centre
    Image.fromarray((ready.astype(np.int32) + 32768).astype(np.uint16)).save(source / "hemangioma" / "p002.png")
    Image.fromarray(disk((64, 64), (10, 50), 3).astype(np.uint8) * 255).save(source / "hemangioma" / "p002_mask.png")

    out = ingest(source, tmp_path / "slices.h5", progress=False)
    file, images, masks, labels = read_all(out)
    assert file.info.class_names == ("cyst", "hemangioma") and labels.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(images[0, 0], hu_png[8:72, 8:72])
    np.testing.assert_array_equal(images[1, 0], hu_tiff[16:80, 0:64])
    np.testing.assert_array_equal(images[2, 0], ready)
    np.testing.assert_array_equal(masks[2], disk((64, 64), (10, 50), 3).astype(np.uint8))
    ids = file.patient_ids()
    assert ids[0] == ids[1] != ids[2]  # p001__s1 and p001__s2 are one patient
    assert file.info.provenance["details"]["ingest"]["pixel_spacing"].startswith("pixel spacing not recorded")


def test_8_bit_png_maps_back_onto_its_window(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    display = np.full((64, 64), 255, dtype=np.uint8)
    display[:32] = 0
    Image.fromarray(display).save(source / "a.png")
    Image.fromarray(disk((64, 64), (32, 32), 4).astype(np.uint8)).save(source / "a_mask.png")
    out = ingest(source, tmp_path / "a.h5", hu_window=(-100.0, 300.0), progress=False)
    _, images, _, _ = read_all(out)
    assert images[0, 0, 0, 0] == -100 and images[0, 0, 63, 0] == 300


# --- npz --------------------------------------------------------------------------------------------


def test_npz_volume_and_sample_archives(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    volume = hu_pattern((2, 70, 70), seed=8).astype(np.float32)
    np.savez(
        source / "a.npz", image=volume, mask=volume_with_lesions(volume.shape, [(1, (35, 35), 5)]),
        spacing_mm=np.array([3.0, 0.9, 0.9]), patient_id=np.array("MRN-999"), **{"class": np.array("cyst")},
    )
    samples = hu_pattern((3, 64, 64), seed=9)[:, np.newaxis]
    sample_masks = np.stack([disk((64, 64), (32, 32), r) for r in (3, 4, 5)]).astype(np.uint8)
    np.savez(
        source / "b.npz", images=samples, masks=sample_masks, classes=np.array(["cyst", "metastasis", "cyst"]),
        patient_ids=np.array(["MRN-999", "MRN-2", "MRN-3"]), pixel_spacing_mm=np.array([0.9, 0.9]),
    )
    out = ingest(source, tmp_path / "npz.h5", progress=False)
    file, images, _masks, labels = read_all(out)
    assert file.info.class_names == ("cyst", "metastasis") and labels.tolist() == [0, 0, 1, 0]
    np.testing.assert_array_equal(images[0, 0], volume[1, 3:67, 3:67].astype(np.int16))
    np.testing.assert_array_equal(images[1:, 0], samples[:, 0])
    ids = file.patient_ids()
    assert ids[0] == ids[1] and len(set(ids)) == 3
    assert file.extra("lesion").tolist() == [1, 2, 1, 1]  # MRN-999's lesions numbered across its files
    file.close()
    assert_not_in_bytes(out, ["MRN-999", "MRN-2", "MRN-3"])


def test_classes_from_csv_per_lesion(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    two = volume_with_lesions((1, 80, 80), [(0, (15, 20), 4), (0, (60, 60), 4)])
    np.savez(source / "one.npz", image=hu_pattern((1, 80, 80)), mask=two, patient_id=np.array("PAT-1"))
    np.savez(source / "two.npz", image=hu_pattern((1, 80, 80)), mask=two[:, ::-1], patient_id=np.array("PAT-2"))
    table = tmp_path / "classes.csv"
    with open(table, "w", newline="") as stream:
        csv.writer(stream).writerows([["patient", "lesion", "class"], ["PAT-1", "1", "cyst"], ["PAT-1", "2", "metastasis"], ["PAT-2", "*", "hemangioma"]])
    out = ingest(source, tmp_path / "csv.h5", classes_csv=table, progress=False)
    file = H5File(out)
    assert file.info.class_names == ("cyst", "hemangioma", "metastasis")
    assert [file.info.class_names[i] for i in file.labels()] == ["cyst", "metastasis", "hemangioma", "hemangioma"]
    ordered = ingest(source, tmp_path / "ordered.h5", classes_csv=table, class_names=["metastasis", "cyst", "hemangioma"], progress=False)
    assert H5File(ordered).labels().tolist() == [1, 0, 2, 2]


# --- one-line errors through the CLI; nothing written or changed ------------------------------------


def assert_refused(result: object, *fragments: str) -> None:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 2, output  # type: ignore[attr-defined]
    assert output.startswith("error: ") and output.strip().count("\n") == 0, output
    for fragment in fragments:
        assert fragment in output, (fragment, output)


def run_ingest(source: Path, out: Path, *options: str) -> object:
    before = sorted(p.name for p in out.parent.iterdir())
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out), *options])
    if result.exit_code != 0:
        assert sorted(p.name for p in out.parent.iterdir()) == before  # no output, no temporary left
    return result


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_truncated_dicom(tmp_path: Path, outdir: Path) -> None:
    paths, series = write_ct_series(tmp_path / "src", hu_pattern((3, 32, 32)))
    write_ct_series(tmp_path / "src", volume_with_lesions((3, 32, 32), [(1, (16, 16), 3)]), is_mask=True, referenced_series_uid=series, prefix="m")
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 300])
    assert_refused(run_ingest(tmp_path / "src", outdir / "x.h5", "--roi-size", "16"), str(paths[1]), "truncated")
    paths[1].write_bytes(data[:400])
    assert_refused(run_ingest(tmp_path / "src", outdir / "x.h5", "--roi-size", "16"), str(paths[1]), "truncated")


def test_mixed_series_sizes(tmp_path: Path, outdir: Path) -> None:
    _paths, series = write_ct_series(tmp_path / "src", hu_pattern((2, 32, 32)))
    odd, _ = write_ct_series(tmp_path / "src", hu_pattern((1, 40, 40)), series_uid=series, prefix="odd")
    assert_refused(run_ingest(tmp_path / "src", outdir / "x.h5"), str(odd[0]), "mixed series sizes")


def test_mask_shape_differs_from_image(tmp_path: Path, outdir: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    Image.fromarray(np.full((80, 80), 33000, dtype=np.uint16)).save(source / "a.png")
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(source / "a_mask.png")
    assert_refused(run_ingest(source, outdir / "x.h5"), str(source / "a_mask.png"), "mask shape (40, 40) does not match image shape (80, 80)")
    nifti_source = tmp_path / "nifti"
    nifti_source.mkdir()
    nib.Nifti1Image(np.zeros((80, 80, 3), np.int16), np.eye(4)).to_filename(nifti_source / "b.nii.gz")
    nib.Nifti1Image(np.zeros((80, 70, 3), np.uint8), np.eye(4)).to_filename(nifti_source / "b_label.nii.gz")
    assert_refused(run_ingest(nifti_source, outdir / "x.h5"), "b_label.nii.gz", "mask shape (80, 70, 3)")


def test_nan_in_image(tmp_path: Path, outdir: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    image = np.zeros((70, 70, 2), np.float32)
    image[3, 4, 1] = np.nan
    nib.Nifti1Image(image, np.eye(4)).to_filename(source / "c.nii.gz")
    nib.Nifti1Image(np.ones((70, 70, 2), np.uint8), np.eye(4)).to_filename(source / "c_mask.nii.gz")
    assert_refused(run_ingest(source, outdir / "x.h5"), str(source / "c.nii.gz"), "NaN")


def test_unknown_class_and_missing_csv_row(tmp_path: Path, outdir: Path) -> None:
    source = tmp_path / "src"
    (source / "metastasis").mkdir(parents=True)
    np.savez(source / "metastasis" / "p.npz", image=np.zeros((64, 64)), mask=disk((64, 64), (32, 32), 4))
    assert_refused(
        run_ingest(source, outdir / "x.h5", "--class-names", "cyst,metastases"),
        "unknown class 'metastasis' (did you mean 'metastases'?)",
    )
    table = tmp_path / "classes.csv"
    table.write_text("patient,lesion,class\nsomeone-else,*,cyst\n")
    assert_refused(run_ingest(source, outdir / "x.h5", "--classes", str(table)), str(table), "no class for lesion 1 of patient 'p'")


def test_pickled_npz_is_refused(tmp_path: Path, outdir: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    np.savez(source / "evil.npz", image=np.zeros((64, 64)), mask=np.zeros((64, 64)), patient_id=np.array([{"a": 1}], dtype=object))
    assert_refused(run_ingest(source, outdir / "x.h5"), str(source / "evil.npz"), "refusing to unpickle")


def test_8_bit_png_needs_a_window_and_formats_must_not_mix(tmp_path: Path, outdir: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(source / "a.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(source / "a_mask.png")
    assert_refused(run_ingest(source, outdir / "x.h5"), str(source / "a.png"), "--hu-window")
    np.savez(source / "b.npz", image=np.zeros((64, 64)), mask=np.zeros((64, 64)))
    assert_refused(run_ingest(source, outdir / "x.h5"), "mixes formats", "--format")
    assert_refused(run_ingest(source, outdir / "x.h5", "--format", "dicm"), "unknown format 'dicm' (did you mean 'dicom'?)")


def test_existing_output_is_kept_byte_identical(tmp_path: Path, outdir: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    np.savez(source / "p.npz", image=np.zeros((64, 64)), mask=disk((64, 64), (32, 32), 4))
    out = outdir / "real.h5"
    first = runner.invoke(app, ["ingest", str(source), "--out", str(out)])
    assert first.exit_code == 0 and first.output.startswith(f"wrote {out}: 1 samples"), first.output
    before = out.read_bytes()
    assert_refused(run_ingest(source, out), f"{out} exists; pass --overwrite to replace it")
    assert out.read_bytes() == before
    bad = np.zeros((64, 64))
    bad[0, 0] = np.nan
    np.savez(source / "p.npz", image=bad, mask=disk((64, 64), (32, 32), 4))
    assert_refused(run_ingest(source, out, "--overwrite"), "NaN")  # a failed overwrite keeps the old file
    assert out.read_bytes() == before


# A UID component with a leading zero ("...007") is invalid DICOM that real scanners write; pydicom warns
# about it on every read (two lines each on stderr).
ODD_UID = "1.2.826.0.1.3680043.2.1143.007"


def augment_process(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``augment`` in a process of its own: its stderr is exactly what a user sees (no test harness capturing warnings)."""
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-c", "import sys; from cli import app; sys.exit(app())", *arguments],
        cwd=root, capture_output=True, text=True, timeout=300,
    )


def test_pydicom_warnings_fold_into_one_line(tmp_path: Path, outdir: Path) -> None:
    source = tmp_path / "src"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when writing the odd UID too
        _, series = write_ct_series(source / "cyst" / "p1", hu_pattern((3, 32, 32)), series_uid=ODD_UID)
    failed = augment_process("ingest", str(source), "--out", str(outdir / "x.h5"), "--salt", "s", "--roi-size", "16")
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: "), failed.stderr
    assert "series has no mask" in failed.stderr
    assert f"(pydicom also warned: Invalid value for VR UI: '{ODD_UID}')" in failed.stderr
    assert list(outdir.iterdir()) == []

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_ct_series(
            source / "cyst" / "p1", volume_with_lesions((3, 32, 32), [(1, (16, 16), 3)]), is_mask=True, referenced_series_uid=series, prefix="m"
        )
    done = augment_process("ingest", str(source), "--out", str(outdir / "x.h5"), "--salt", "s", "--roi-size", "16")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {outdir / 'x.h5'}: 1 samples"), done.stdout
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("warning: ") and f"pydicom warned: Invalid value for VR UI: '{ODD_UID}'" in done.stderr
