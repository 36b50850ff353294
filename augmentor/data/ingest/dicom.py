"""DICOM series (CT) with their masks.

Layout::

    SOURCE/[<class>/]...any folders.../
        *.dcm (or files without an extension)   image series: grouped by SeriesInstanceUID
        *.dcm                                    mask series (optional, see below)
        mask.nii.gz | mask.nii | mask.npy        or a label map next to the image series' files
                                                 (also label.*, labels.*, seg.*, segmentation.*)

- Files are grouped into series by SeriesInstanceUID, wherever they are; slices are sorted by their
  position along the slice normal (ImagePositionPatient . (row x column direction)), falling back to
  InstanceNumber when positions are missing.
- Pixels become Hounsfield units through the modality LUT: HU = stored value x RescaleSlope +
  RescaleIntercept (CT stores unsigned or offset integers; the intercept, typically -1024, puts water
  at 0 HU). PixelSpacing (row, column) is kept.
- A *mask series* is a series whose ImageType contains ``MASK`` or whose SeriesDescription contains
  "mask" (augment export-dicom writes such series). Its pixel values are labels (no rescale). It belongs
  to the image series named in its ReferencedSeriesSequence, else to the only image series of its
  folder. Its slices must sit at the image slices' positions.
- A label NIfTI next to the series may have its axes permuted or flipped (it is re-indexed onto the
  series' voxel grid through both affines); a ``.npy`` must be (slices, rows, columns) in the sorted
  slice order.
- An augmentor export's ImageComments give the class, class order, mask label names and source; the
  Synthetic Data attribute (0008,001C) = YES alone makes the ingested file's source "synthetic".
- The patient is PatientID (PatientName, then the folder name, if it is empty); it is only used to
  group lesions and find classes, and is stored pseudonymised. No other header value is copied.
- DICOM SEG and RTSTRUCT objects are not read (convert them to a label NIfTI); other objects without
  pixels (modality SR, PR, KO, DOC, REG, RTPLAN, RTRECORD) are skipped.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.data.ingest.classes import RecordedLabels, parse_labels_comment
from augmentor.data.ingest.volume import (
    Case,
    LabelledVolume,
    as_label_map,
    check_same_shape,
    label_onto_grid,
    mask_case_name,
    relative_name,
    same_spacing,
    to_display,
)
from augmentor.errors import AugmentorError

DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
LABEL_SUFFIXES = (".nii.gz", ".nii", ".npy")
UNREADABLE_MODALITIES = {"SEG": "DICOM SEG", "RTSTRUCT": "RT structure set"}
NON_IMAGE_MODALITIES = {"SR", "PR", "KO", "DOC", "REG", "RTPLAN", "RTRECORD"}
STANDARD_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # rows along patient x, columns along y (axial)
POSITION_TOLERANCE_MM = 0.01


def is_dicom_file(path: Path) -> bool:
    """Whether a file is read as DICOM: ``.dcm``/``.dicom``/``.ima``, or no extension and a 'DICM' prefix."""
    if path.name.startswith(".") or path.name.upper() == "DICOMDIR":
        return False
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix:
        return False
    # No extension (common for DICOM): look for the 'DICM' prefix after the 128-byte preamble.
    try:
        with open(path, "rb") as stream:
            return stream.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _reason(error: BaseException | str) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def read_header(path: Path) -> Any:
    """The DICOM header (no pixels) of one file; one-line error for anything unreadable."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise AugmentorError(f"{path}: not a DICOM file, or truncated (no 'DICM' prefix after the preamble)") from None
    except Exception as error:  # pydicom raises many kinds on truncated or corrupt files
        raise AugmentorError(f"{path}: unreadable or truncated DICOM ({_reason(error)})") from None


def _text(header: Any, keyword: str) -> str:
    value = header.get(keyword, "")
    return str(value).strip() if value is not None else ""


def _floats(header: Any, keyword: str) -> tuple[float, ...] | None:
    """A numeric (possibly multi-valued) element as floats, or None when absent or malformed."""
    from pydicom.multival import MultiValue

    value = header.get(keyword)
    if value is None or value == "":
        return None
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None


@dataclass
class _Slice:
    path: Path
    header: Any


@dataclass
class _Series:
    uid: str
    slices: list[_Slice]
    is_mask: bool

    @property
    def first(self) -> _Slice:
        return self.slices[0]

    @property
    def folder(self) -> Path:
        return self.first.path.parent


def _is_mask_series(header: Any) -> bool:
    image_type = [str(v).upper() for v in (header.get("ImageType") or [])]
    return "MASK" in image_type or "mask" in _text(header, "SeriesDescription").lower()


def _check_series(series: _Series) -> None:
    """Same size, orientation and spacing on every slice; single-frame images only."""
    first = series.first.header
    size = (int(first.get("Rows", 0)), int(first.get("Columns", 0)))
    orientation = _floats(first, "ImageOrientationPatient")
    spacing = _floats(first, "PixelSpacing")
    for item in series.slices:
        header = item.header
        frames = int(header.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise AugmentorError(f"{item.path}: multi-frame DICOM ({frames} frames) is not read; export single-frame slices")
        this_size = (int(header.get("Rows", 0)), int(header.get("Columns", 0)))
        if this_size != size:
            raise AugmentorError(
                f"{item.path}: {this_size[0]}x{this_size[1]} slice in a series of {size[0]}x{size[1]} slices (mixed series sizes)"
            )
        this_orientation = _floats(header, "ImageOrientationPatient")
        if (orientation is None) != (this_orientation is None) or (
            orientation is not None and this_orientation is not None and not np.allclose(orientation, this_orientation, atol=1e-4)
        ):
            raise AugmentorError(f"{item.path}: slice orientation differs from the rest of its series")
        this_spacing = _floats(header, "PixelSpacing")
        if (spacing is None) != (this_spacing is None) or (
            spacing is not None and this_spacing is not None and not same_spacing(spacing[:2], this_spacing[:2])  # type: ignore[arg-type]
        ):
            raise AugmentorError(f"{item.path}: pixel spacing differs from the rest of its series")


def _sort_slices(series: _Series) -> list[float]:
    """Sort the series' slices along the slice normal; returns their positions (mm)."""
    orientation = _floats(series.first.header, "ImageOrientationPatient") or STANDARD_ORIENTATION
    # The slice normal is row direction x column direction; position along it orders the slices.
    normal = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:6]))
    positions: list[float] = []
    have_positions = all(_floats(s.header, "ImagePositionPatient") for s in series.slices)
    if have_positions:
        positions = [float(np.dot(_floats(s.header, "ImagePositionPatient"), normal)) for s in series.slices]  # type: ignore[arg-type]
    elif len(series.slices) == 1:
        positions = [0.0]
    elif all(s.header.get("InstanceNumber") not in (None, "") for s in series.slices):
        positions = [float(s.header.InstanceNumber) for s in series.slices]
    else:
        raise AugmentorError(f"{series.first.path}: slices have neither ImagePositionPatient nor InstanceNumber; cannot order them")
    order = np.argsort(positions, kind="stable")
    series.slices = [series.slices[i] for i in order]
    sorted_positions = [positions[i] for i in order]
    for (a, b), item in zip(itertools.pairwise(sorted_positions), series.slices[1:], strict=False):
        if abs(b - a) < POSITION_TOLERANCE_MM:
            raise AugmentorError(f"{item.path}: two slices of one series at the same position ({b:.2f} mm)")
    return sorted_positions


def _affine(series: _Series, positions: list[float]) -> np.ndarray:
    """4x4 map from (slice, row, column) indices to RAS mm (the NIfTI convention).

    DICOM patient coordinates are LPS (x to the patient's left, y posterior); NIfTI's are RAS, so x
    and y change sign. Column index steps along the row direction cosine by PixelSpacing[1], row index
    along the column direction cosine by PixelSpacing[0].
    """
    header = series.first.header
    orientation = np.asarray(_floats(header, "ImageOrientationPatient") or STANDARD_ORIENTATION, dtype=np.float64)
    row_direction, column_direction = orientation[:3], orientation[3:6]
    spacing = _floats(header, "PixelSpacing") or (1.0, 1.0)
    origin = np.asarray(_floats(header, "ImagePositionPatient") or (0.0, 0.0, 0.0), dtype=np.float64)
    normal = np.cross(row_direction, column_direction)
    if len(series.slices) > 1 and _floats(series.slices[-1].header, "ImagePositionPatient"):
        last = np.asarray(_floats(series.slices[-1].header, "ImagePositionPatient"), dtype=np.float64)
        slice_step = (last - origin) / (len(series.slices) - 1)
    else:
        thickness = _floats(header, "SliceThickness")
        slice_step = normal * (thickness[0] if thickness else 1.0)
    lps = np.eye(4)
    lps[:3, 0] = slice_step
    lps[:3, 1] = column_direction * spacing[0]
    lps[:3, 2] = row_direction * spacing[1]
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _read_pixels(item: _Slice, rescale: bool) -> np.ndarray:
    import pydicom

    try:
        dataset = pydicom.dcmread(item.path)
        stored = dataset.pixel_array
    except Exception as error:  # truncated pixel data, unsupported compression, corrupt file
        raise AugmentorError(f"{item.path}: unreadable or truncated DICOM pixel data ({_reason(error)})") from None
    if stored.ndim != 2:
        raise AugmentorError(f"{item.path}: expected one greyscale frame, got pixel array shape {stored.shape}")
    if not rescale:
        return stored
    slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _patient_key(header: Any, folder: Path) -> str:
    return _text(header, "PatientID") or _text(header, "PatientName") or folder.name


@contextmanager
def _folded_pydicom_warnings(where: str) -> Iterator[None]:
    """Fold pydicom's warnings into one line: appended to an error raised inside, else logged once.

    pydicom warns (two lines on stderr, once per file) about values it tolerates, such as a UID with a
    leading zero; augmentor keeps no UID, so one line saying so is enough.
    """
    failure: AugmentorError | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except AugmentorError as error:
            failure = error
    summary = _warning_summary(caught)  # after the block: warnings re-issued here are not caught again
    if failure is not None:
        if summary:
            raise AugmentorError(f"{failure} (pydicom also warned: {summary})") from None
        raise failure
    if summary:
        logging.getLogger(__name__).warning("warning: %s: pydicom warned: %s (such values are not kept)", where, summary)


def _warning_summary(caught: list[warnings.WarningMessage]) -> str:
    """The distinct pydicom warnings as one short phrase; other libraries' warnings are re-issued."""
    messages: list[str] = []
    for item in caught:
        if "pydicom" not in Path(item.filename).parts:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
            continue
        text = str(item.message).split(" Please see ")[0].rstrip(". ")
        if text not in messages:
            messages.append(text)
    if not messages:
        return ""
    more = f"; and {len(messages) - 1} other warning{'s' if len(messages) > 2 else ''}" if len(messages) > 1 else ""
    return _reason(messages[0]) + more


def find_cases(source: Path, files: list[Path], *, labels_required: bool = True) -> list[Case]:
    """Plan one case per image series (headers only).

    Args:
        source: the ingest source folder.
        files: every file below it.
        labels_required: refuse a series without a mask (lesion ROIs need one; whole slices do not).

    Returns:
        The cases, in the order of their first file's path.
    """
    with _folded_pydicom_warnings(str(source)):
        return _find_cases(source, files, labels_required)


def _find_cases(source: Path, files: list[Path], labels_required: bool = True) -> list[Case]:
    by_uid: dict[str, _Series] = {}
    for path in sorted(p for p in files if is_dicom_file(p)):
        header = read_header(path)
        modality = _text(header, "Modality").upper()
        if modality in UNREADABLE_MODALITIES:
            raise AugmentorError(
                f"{path}: {UNREADABLE_MODALITIES[modality]} objects are not read; convert the mask to a label NIfTI (mask.nii.gz) next to the series"
            )
        if "Rows" not in header:
            if modality in NON_IMAGE_MODALITIES:  # structured reports, presentation states: no pixels
                continue
            raise AugmentorError(f"{path}: unreadable or truncated DICOM (no image attributes)")
        uid = _text(header, "SeriesInstanceUID")
        if not uid:
            raise AugmentorError(f"{path}: no SeriesInstanceUID; cannot group it into a series")
        series = by_uid.setdefault(uid, _Series(uid, [], _is_mask_series(header)))
        if series.is_mask != _is_mask_series(header):
            raise AugmentorError(f"{path}: series mixes mask and image slices")
        series.slices.append(_Slice(path, header))
    if not by_uid:
        raise AugmentorError(f"{source}: no DICOM images found")
    for series in by_uid.values():
        _check_series(series)

    images = [s for s in by_uid.values() if not s.is_mask]
    masks = [s for s in by_uid.values() if s.is_mask]
    mask_of: dict[str, _Series] = {}
    for mask in masks:
        owner = _mask_owner(mask, images, by_uid)
        if owner.uid in mask_of:
            raise AugmentorError(f"{mask.first.path}: a second mask series for the image series of {owner.first.path}")
        mask_of[owner.uid] = mask

    label_files = [p for p in files if p.name.lower().endswith(LABEL_SUFFIXES) and mask_case_name(p) == ""]
    cases = []
    for series in sorted(images, key=lambda s: s.first.path):
        mask_series = mask_of.get(series.uid)
        label_file = None
        if mask_series is None and (labels_required or any(p.parent == series.folder for p in label_files)):
            label_file = _label_file_for(series, images, label_files)
        header = series.first.header
        spacing = _floats(header, "PixelSpacing")
        recorded = parse_labels_comment(_text(header, "ImageComments"))
        mask_recorded = RecordedLabels()
        if mask_series is not None:
            mask_recorded = parse_labels_comment(_text(mask_series.first.header, "ImageComments"))
        own_class = recorded.class_name or mask_recorded.class_name
        mask_label_names = mask_recorded.mask_label_names
        # (0008,001C) Synthetic Data: YES marks images that are not of a real patient.
        marked_synthetic = _text(header, "SyntheticData").upper() == "YES"
        source_kind = recorded.source or ("synthetic" if marked_synthetic else "real")
        read: tuple[Path, ...] = tuple(s.path for s in series.slices)
        if mask_series is not None:
            read += tuple(s.path for s in mask_series.slices)
        elif label_file is not None:
            read += (label_file,)
        patient = _patient_key(header, series.folder)
        cases.append(
            Case(
                name=relative_name(series.first.path, source),
                path=series.first.path,
                files=read,
                patient_keys=(patient,),
                spacing_mm=(spacing[0], spacing[1]) if spacing else None,
                own_classes=(own_class,) if own_class else (),
                modality=_text(header, "Modality").upper() or "CT",
                mask_label_names=mask_label_names,
                class_order=recorded.class_names,
                source=source_kind,
                identifiers=(_text(header, "PatientName"), _text(header, "PatientID")),
                load=_loader(series, mask_series, label_file, patient, own_class, mask_label_names, source),
            )
        )
    return cases


def _mask_owner(mask: _Series, images: list[_Series], by_uid: dict[str, _Series]) -> _Series:
    referenced = mask.first.header.get("ReferencedSeriesSequence") or []
    for item in referenced:
        uid = str(item.get("SeriesInstanceUID", "")).strip()
        if uid in by_uid and not by_uid[uid].is_mask:
            return by_uid[uid]
    same_folder = [s for s in images if s.folder == mask.folder]
    if len(same_folder) == 1:
        return same_folder[0]
    raise AugmentorError(
        f"{mask.first.path}: mask series matches no image series (reference its image series in "
        f"ReferencedSeriesSequence, or keep one image series per folder)"
    )


def _label_file_for(series: _Series, images: list[_Series], label_files: list[Path]) -> Path:
    candidates = [p for p in label_files if p.parent == series.folder]
    if not candidates:
        raise AugmentorError(
            f"{series.first.path}: series has no mask; add a mask series (SeriesDescription containing "
            f"'mask') or mask.nii.gz / mask.npy next to its files"
        )
    if len(candidates) > 1:
        raise AugmentorError(f"{series.folder}: several label files ({', '.join(sorted(p.name for p in candidates))}); keep one")
    if sum(1 for s in images if s.folder == series.folder) > 1:
        raise AugmentorError(
            f"{candidates[0]}: folder holds several image series; put each series and its label file in a folder of its own"
        )
    return candidates[0]


def _loader(
    series: _Series,
    mask_series: _Series | None,
    label_file: Path | None,
    patient: str,
    own_class: str | None,
    mask_label_names: tuple[str, ...] | None,
    source: Path,
) -> Any:
    def load() -> Iterator[LabelledVolume]:
        with _folded_pydicom_warnings(str(series.first.path)):
            positions = _sort_slices(series)
            image = np.stack([_read_pixels(item, rescale=True) for item in series.slices])
            affine = _affine(series, positions)
            if mask_series is not None:
                label = _mask_series_labels(mask_series, series, positions, image.shape)
            elif label_file is not None:
                label = _label_file_labels(label_file, affine, image.shape)
            else:  # whole slices without labels
                label = np.zeros(image.shape, dtype=np.uint8)
        (image_display, label_display), _ = to_display([image, label], affine)
        yield LabelledVolume(
            image=image_display,
            label_map=label_display,
            patient_key=patient,
            name=relative_name(series.first.path, source),
            own_class=own_class,
            mask_label_names=mask_label_names,
        )

    return load


def _mask_series_labels(mask: _Series, image: _Series, image_positions: list[float], shape: tuple[int, ...]) -> np.ndarray:
    mask_positions = _sort_slices(mask)
    label = np.stack([_read_pixels(item, rescale=False) for item in mask.slices])
    check_same_shape(np.empty(shape, dtype=np.uint8), label, mask.first.path)
    if not np.allclose(mask_positions, image_positions, atol=0.05):
        raise AugmentorError(f"{mask.first.path}: mask slices are not at the positions of the image slices")
    return as_label_map(label, mask.first.path)


def _label_file_labels(path: Path, image_affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            label = np.load(path, allow_pickle=False)
        except Exception as error:
            raise AugmentorError(f"{path}: unreadable .npy ({_reason(error)})") from None
        check_same_shape(np.empty(shape, dtype=np.uint8), np.asarray(label), path)
        return as_label_map(label, path)
    import nibabel

    try:
        nifti: Any = nibabel.load(path)
        label = np.asanyarray(nifti.dataobj)
    except Exception as error:
        raise AugmentorError(f"{path}: unreadable NIfTI ({_reason(error)})") from None
    if label.ndim == 2:
        label = label[:, :, np.newaxis]
    if label.ndim != 3:
        raise AugmentorError(f"{path}: label map must be 3-D, got shape {label.shape}")
    on_grid = label_onto_grid(label, nifti.affine, image_affine, (shape[0], shape[1], shape[2]), path)
    return as_label_map(on_grid, path)


__all__ = ["find_cases", "is_dicom_file", "read_header"]
