"""Export an augmentor file as DICOM (``augment export-dicom``): one CT image per sample plus its mask.

Layout::

    OUTDIR/<class>/<index>.dcm         the sample: CT Image Storage, HU through RescaleSlope/Intercept
    OUTDIR/<class>/<index>_mask.dcm    its mask: Secondary Capture Image Storage, a series of its own

``<index>`` is the sample's position in the file (six digits); ``<class>`` is the class name with
characters other than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``.

Each sample is its own image series and its mask a second series in the same study, with the same
frame of reference and geometry and a ReferencedSeriesSequence pointing at the image series, so a
viewer overlays them and ``augment ingest OUTDIR`` pairs them back. One study per patient; every UID
is freshly generated (nothing is copied from any source header). The class is written in the
ImageComments of both files (``augmentor class: <name>``; the image adds the file's ordered
``augmentor class names:`` and ``augmentor source:``, the mask ``augmentor mask labels:``), which is
where ingest reads them back: a round trip keeps HU, masks, classes, their order and the source.

Pixels: int16 with RescaleSlope 1 and RescaleIntercept -1024 (stored value = HU + 1024, the usual
CT convention, so air is stored near 0), or intercept 0 if the HU would not fit. WindowCenter/Width
are the file's HU window; PixelSpacing its pixel spacing.

Marking: whenever the file's ``source`` is not ``real`` the images are marked synthetic: the DICOM
Synthetic Data attribute (0008,001C) is ``YES``, the SeriesDescription starts with
``SYNTHETIC``, and DerivationDescription says what made them. Every export is ImageType
``DERIVED\\SECONDARY`` (ROIs are derived images). PatientID and PatientName are the file's patient ids
(no other header value exists to copy). PatientIdentityRemoved is ``YES``, with a DeidentificationMethod,
only when those ids identify nobody, as the file's provenance ``patient_ids`` records: pseudonyms made
by ``augment ingest``, or the virtual patient ids of simulated data (cohorts, phantoms, XCAT: no real
person behind them); or when the file holds no patient ids (generated samples). Any other file (ids of
unknown origin, e.g. written by a user's own ``H5Writer`` code) is exported with PatientIdentityRemoved
``NO`` and an empty DeidentificationMethod.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from augmentor import __version__
from augmentor.atomic import replace_directory, temporary_path
from augmentor.data.ingest.classes import RecordedLabels, labels_comment
from augmentor.data.provenance import PSEUDONYMISED, VIRTUAL, patient_id_kind
from augmentor.data.reader import H5File
from augmentor.data.schema import Source
from augmentor.errors import AugmentorError, OutputExistsError
from augmentor.progress import progress_bar

CT_INTERCEPT = -1024.0
BLOCK = 256
UNKNOWN_PATIENT = "UNKNOWN"


def class_folder_names(class_names: tuple[str, ...]) -> list[str]:
    """A safe, distinct folder name per class."""
    folders: list[str] = []
    for index, name in enumerate(class_names):
        folder = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or f"class_{index}"
        if folder.lower() in {f.lower() for f in folders}:
            folder = f"{folder}_{index}"
        folders.append(folder)
    return folders


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise AugmentorError(f"{out_dir} is a file; give a folder for the DICOM files")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")
    if not out_dir.parent.exists():
        raise AugmentorError(f"output directory {out_dir.parent} does not exist")


# DeidentificationMethod (LO: at most 64 characters) by how the file's patient ids were made.
DEIDENTIFICATION_METHODS = {
    PSEUDONYMISED: "augmentor: pseudonymous patient id, no source header copied",
    VIRTUAL: "augmentor: virtual patient id (simulated), no header copied",
}
NO_PATIENT_IDS = "augmentor: no patient id (generated images), no header copied"


def deidentification_method(info: Any) -> str | None:
    """The DeidentificationMethod when the file's patient ids identify nobody; None when they may."""
    if not info.has_patient_ids:
        return NO_PATIENT_IDS
    kind = patient_id_kind(info.provenance)
    return DEIDENTIFICATION_METHODS[kind] if kind is not None else None


def _base_dataset(
    sop_class_uid: Any, study_uid: str, series_uid: str, frame_uid: str, patient_id: str, synthetic: bool,
    deidentification: str | None,
) -> Any:
    """The attributes an image and its mask share (patient, study, frame of reference, marking)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    instance_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID

    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, for class names
    dataset.SOPClassUID = sop_class_uid
    dataset.SOPInstanceUID = instance_uid
    # Patient: only the file's (pseudonymous or virtual) id; Type 2 attributes present but empty.
    dataset.PatientName = patient_id
    dataset.PatientID = patient_id
    dataset.PatientBirthDate = ""
    dataset.PatientSex = ""
    dataset.PatientIdentityRemoved = "YES" if deidentification else "NO"
    dataset.DeidentificationMethod = deidentification or ""
    dataset.StudyInstanceUID = study_uid
    dataset.StudyDate = ""
    dataset.StudyTime = ""
    dataset.ReferringPhysicianName = ""
    dataset.StudyID = ""
    dataset.AccessionNumber = ""
    dataset.SeriesInstanceUID = series_uid
    dataset.FrameOfReferenceUID = frame_uid
    dataset.PositionReferenceIndicator = ""
    dataset.Manufacturer = ""
    dataset.SoftwareVersions = f"augmentor {__version__}"
    dataset.InstanceNumber = 1
    dataset.SyntheticData = "YES" if synthetic else "NO"  # (0008,001C) Synthetic Data
    dataset.BurnedInAnnotation = "NO"
    return dataset


def _geometry(dataset: Any, spacing_mm: tuple[float, float]) -> None:
    # An ROI has no known place in a patient: an axial plane at the origin of its own frame.
    dataset.ImagePositionPatient = [0.0, 0.0, 0.0]
    dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    dataset.PixelSpacing = [f"{spacing_mm[0]:.6g}", f"{spacing_mm[1]:.6g}"]


def _image_dataset(
    hu: np.ndarray,
    class_name: str,
    uids: dict[str, str],
    patient_id: str,
    series_number: int,
    info: Any,
) -> Any:
    from pydicom.uid import CTImageStorage

    synthetic = info.source != Source.REAL
    deidentification = deidentification_method(info)
    dataset = _base_dataset(
        CTImageStorage, uids["study"], uids["image_series"], uids["frame"], patient_id, synthetic, deidentification
    )
    dataset.Modality = "CT"
    dataset.SeriesNumber = series_number
    dataset.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    dataset.SeriesDescription = (
        f"SYNTHETIC CT ROI ({info.source.value}) - not a patient image" if synthetic else f"real CT ROI{' (de-identified)' if deidentification else ''}"
    )
    dataset.DerivationDescription = (
        f"{info.source.value} image from augmentor {__version__} (model: {_model_name(info)})"
        if synthetic
        else f"lesion-centred ROI cut by augmentor {__version__}"
    )
    dataset.ImageComments = labels_comment(
        RecordedLabels(class_name=class_name, class_names=info.class_names, source=info.source.value)
    )
    dataset.KVP = ""
    dataset.AcquisitionNumber = ""
    dataset.SliceThickness = ""
    _geometry(dataset, info.pixel_spacing_mm)
    # Modality LUT: HU = stored x slope + intercept. -1024 puts air at stored 0, as scanners do,
    # unless the image holds HU above 31743 that would not fit int16 then.
    intercept = CT_INTERCEPT if int(hu.max(initial=0)) - CT_INTERCEPT <= np.iinfo(np.int16).max else 0.0
    stored = (hu.astype(np.int32) - int(intercept)).astype(np.int16)
    dataset.set_pixel_data(stored, "MONOCHROME2", 16, generate_instance_uid=False)
    dataset.RescaleIntercept = f"{intercept:g}"
    dataset.RescaleSlope = "1"
    dataset.RescaleType = "HU"
    low, high = info.hu_window
    dataset.WindowCenter = f"{(low + high) / 2:g}"
    dataset.WindowWidth = f"{high - low:g}"
    return dataset


def _mask_dataset(
    mask: np.ndarray, class_name: str, uids: dict[str, str], patient_id: str, series_number: int, info: Any
) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.uid import SecondaryCaptureImageStorage

    synthetic = info.source != Source.REAL
    dataset = _base_dataset(
        SecondaryCaptureImageStorage, uids["study"], uids["mask_series"], uids["frame"], patient_id, synthetic,
        deidentification_method(info),
    )
    dataset.Modality = "OT"
    dataset.ConversionType = "WSD"  # workstation: made by software
    dataset.SeriesNumber = series_number
    # MASK in ImageType and "mask" in SeriesDescription are how ingest recognises a mask series.
    dataset.ImageType = ["DERIVED", "SECONDARY", "MASK"]
    dataset.SeriesDescription = f"{'SYNTHETIC ' if synthetic else ''}mask of {info.source.value} CT ROI"  # < 64 chars (LO)
    dataset.ImageComments = labels_comment(
        RecordedLabels(class_name=class_name, mask_label_names=info.mask_label_names, source=info.source.value)
    )
    reference = Dataset()
    reference.SeriesInstanceUID = uids["image_series"]
    dataset.ReferencedSeriesSequence = [reference]
    _geometry(dataset, info.pixel_spacing_mm)
    dataset.set_pixel_data(np.ascontiguousarray(mask, dtype=np.uint8), "MONOCHROME2", 8, generate_instance_uid=False)
    return dataset


def _model_name(info: Any) -> str:
    model = info.provenance.get("model") or {}
    return str(model.get("name", "unknown")) if isinstance(model, dict) else "unknown"


def export_dicom(h5: str | Path, out_dir: str | Path, *, overwrite: bool = False, progress: bool = True) -> int:
    """Write every sample of an augmentor file as a DICOM CT image and a DICOM mask.

    Args:
        h5: the augmentor file.
        out_dir: the folder to create (refused if it exists and is not empty, unless ``overwrite``);
            written as a hidden sibling folder and renamed when complete.
        overwrite: replace a non-empty ``out_dir``.
        progress: draw a progress bar.

    Returns:
        The number of samples exported.
    """
    from pydicom.uid import generate_uid

    out_path = Path(out_dir)
    file = H5File(h5)
    info = file.info
    _check_out_dir(out_path, overwrite)
    if info.image_shape[0] != 1:
        raise AugmentorError(f"{file.path}: images have {info.image_shape[0]} channels; DICOM export writes single-channel CT")
    folders = class_folder_names(info.class_names)
    patient_ids = file.patient_ids() if info.has_patient_ids else np.full(len(file), UNKNOWN_PATIENT, dtype=object)
    temporary = temporary_path(out_path)
    studies: dict[str, str] = {}
    series_numbers: dict[str, int] = {}
    try:
        temporary.mkdir()
        for folder in folders:
            (temporary / folder).mkdir()
        with progress_bar("export-dicom", total=len(file), enabled=progress) as advance:
            for start in range(0, len(file), BLOCK):
                indices = list(range(start, min(start + BLOCK, len(file))))
                images, masks, labels = file.read(indices)
                for offset, index in enumerate(indices):
                    patient = str(patient_ids[index]) or UNKNOWN_PATIENT
                    study = studies.setdefault(patient, generate_uid())
                    series_number = series_numbers.get(patient, 0) + 1
                    series_numbers[patient] = series_number + 1
                    uids = {"study": study, "image_series": generate_uid(), "mask_series": generate_uid(), "frame": generate_uid()}
                    label = int(labels[offset])
                    class_name = info.class_names[label]
                    class_folder = temporary / folders[label]
                    image = _image_dataset(images[offset, 0], class_name, uids, patient, series_number, info)
                    image.save_as(class_folder / f"{index:06d}.dcm", enforce_file_format=True)
                    mask = _mask_dataset(masks[offset], class_name, uids, patient, series_number + 1, info)
                    mask.save_as(class_folder / f"{index:06d}_mask.dcm", enforce_file_format=True)
                    advance()
        replace_directory(temporary, out_path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        file.close()
    return len(file)
