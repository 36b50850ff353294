"""Tiny labelled inputs written by the tests themselves (DICOM built in memory with pydicom); imported by
test_ingest.py and test_export_dicom.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Identifiers that must never reach an ingested file.
PATIENT_NAME = "DOE^JOHN"
PATIENT_ID = "MRN-12345"
STUDY_DATE = "20240102"


def hu_pattern(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Distinct, reproducible integer HU values (so that any misplaced pixel shows)."""
    generator = np.random.default_rng(seed)
    return generator.integers(-150, 250, size=shape).astype(np.int16)


def disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 <= radius**2


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    *,
    patient_name: str = PATIENT_NAME,
    patient_id: str = PATIENT_ID,
    spacing: tuple[float, float] = (0.7, 0.7),
    slice_step: float = 2.5,
    slope: float = 0.5,
    intercept: float = -1024.0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    is_mask: bool = False,
    referenced_series_uid: str | None = None,
    prefix: str = "",
) -> tuple[list[Path], str]:
    """Write a (Z, H, W) volume as one single-frame DICOM file per slice, the way a scanner does.

    CT slices store unsigned integers; HU = stored * slope + intercept. File names run against the
    slice positions (``<prefix>0.dcm`` is the top slice) so that only ImagePositionPatient orders them.
    Masks are written as uint8 label images with SeriesDescription "lesion mask".

    Returns:
        (paths in slice order, the series UID).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    paths = []
    count = hu.shape[0]
    for z in range(count):
        sop_class = SecondaryCaptureImageStorage if is_mask else CTImageStorage
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SOPClassUID = sop_class
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.PatientName = patient_name
        dataset.PatientID = patient_id
        dataset.PatientBirthDate = "19500101"
        dataset.StudyDate = STUDY_DATE
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = frame_uid
        dataset.Modality = "OT" if is_mask else "CT"
        dataset.SeriesDescription = "lesion mask" if is_mask else "abdomen portal venous"
        dataset.InstanceNumber = z + 1
        dataset.ImagePositionPatient = [-100.0, -80.0, 10.0 + z * slice_step]
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.PixelSpacing = [spacing[0], spacing[1]]
        dataset.SliceThickness = slice_step
        if referenced_series_uid:
            reference = Dataset()
            reference.SeriesInstanceUID = referenced_series_uid
            dataset.ReferencedSeriesSequence = [reference]
        if is_mask:
            dataset.set_pixel_data(hu[z].astype(np.uint8), "MONOCHROME2", 8)
        else:
            stored = np.rint((hu[z].astype(np.float64) - intercept) / slope)
            assert stored.min() >= 0 and stored.max() < 65536
            dataset.set_pixel_data(stored.astype(np.uint16), "MONOCHROME2", 16)
            dataset.RescaleSlope = slope
            dataset.RescaleIntercept = intercept
        path = folder / f"{prefix}{count - 1 - z}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths, series_uid


def nifti_affine_for_series(spacing: tuple[float, float], slice_step: float) -> np.ndarray:
    """The NIfTI affine of a label stored as [column, row, slice] for a series written by
    :func:`write_ct_series` (its LPS geometry, with x and y negated into RAS)."""
    affine = np.eye(4)
    affine[:3, 0] = [-spacing[1], 0, 0]  # column index -> patient x (LPS +x -> RAS -x)
    affine[:3, 1] = [0, -spacing[0], 0]  # row index -> patient y
    affine[:3, 2] = [0, 0, slice_step]
    affine[:3, 3] = [100.0, 80.0, 10.0]  # origin (-100, -80, 10) LPS
    return affine


def assert_not_in_bytes(path: Path, secrets_: Sequence[str]) -> None:
    data = path.read_bytes()
    for secret in secrets_:
        assert secret.encode() not in data, f"{secret!r} leaked into {path}"
