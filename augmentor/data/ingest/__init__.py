"""Ingest real data into the augmentor HDF5 contract (``augment ingest``).

Readers, one per format, each documenting its folder layout:

- :mod:`~augmentor.data.ingest.dicom`  -- DICOM series with a mask series or a label file alongside;
- :mod:`~augmentor.data.ingest.nifti`  -- ``<case>.nii.gz`` + ``<case>_label.nii.gz``;
- :mod:`~augmentor.data.ingest.images` -- ``<case>.png|.tif`` + ``<case>_mask.png|.tif``;
- :mod:`~augmentor.data.ingest.npz`    -- ``<case>.npz`` holding a volume or ready samples.

Common to all: ``SOURCE/<class>/...`` folders name classes (unless a CSV does, see
:mod:`~augmentor.data.ingest.classes`); lesions are connected components of the label map and become
``roi_size`` ROIs (:mod:`~augmentor.data.ingest.roi`); patient identifiers are stored only as salted
hashes (:mod:`~augmentor.data.ingest.pseudonym`); no name, date, UID or source path is copied into the
file (its provenance records the command with the source as ``SOURCE`` and the salt hidden, and
``patient_ids``: how the ids were made, with the salt's fingerprint that tells whether two files share a
salt). A class folder named after a patient is refused (see :mod:`~augmentor.data.ingest.classes`).
Any unreadable or inconsistent input stops the ingest with a one-line error naming the file, and the
output path is left as it was.

Per-sample extras: ``lesion`` (lesion number within its patient) and ``slice`` (slice of its volume).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from augmentor.data.ingest import dicom, images, nifti, npz
from augmentor.data.ingest.classes import (
    DEFAULT_CLASS,
    ClassTable,
    check_class,
    check_folder_class,
    order_classes,
    read_class_csv,
)
from augmentor.data.ingest.pseudonym import Pseudonymiser
from augmentor.data.ingest.roi import SliceChoice, extract_rois, is_ready_sample, ready_sample_mask
from augmentor.data.ingest.volume import (
    Case,
    LabelledVolume,
    check_finite,
    file_stem,
    mask_case_name,
    resample_in_plane,
    same_spacing,
)
from augmentor.data.provenance import make_provenance, sha256_file
from augmentor.data.schema import Source
from augmentor.data.writer import H5Writer, check_output
from augmentor.errors import AugmentorError, look_up_option
from augmentor.progress import progress_bar

FORMATS = ("auto", "dicom", "nifti", "images", "npz")
SLICE_CHOICES = tuple(choice.value for choice in SliceChoice)
DEFAULT_HU_WINDOW = (-160.0, 240.0)  # abdominal soft tissue (liver lesions)
DEFAULT_MASK_LABEL_NAMES = ("background", "lesion")
EXTRAS = ("lesion", "slice")
UNKNOWN_SPACING_MM = (1.0, 1.0)
MIN_ROI_SIZE = 8
BATCH = 256

__all__ = ["FORMATS", "SLICE_CHOICES", "detect_format", "ingest", "parse_hu_window"]


def parse_hu_window(text: str | None) -> tuple[float, float] | None:
    """``"-160,240"`` -> (-160.0, 240.0); None stays None."""
    if text is None or not str(text).strip():
        return None
    parts = str(text).replace(" ", "").split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise AugmentorError(f"HU window {text!r} must be two numbers LOW,HIGH, e.g. -160,240") from None
    if not low < high:
        raise AugmentorError(f"HU window low {low:g} must be below high {high:g}")
    return low, high


def _list_files(source: Path) -> list[Path]:
    """Every input file: below a folder, or a single file and the masks named after it."""
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts))
    stem = file_stem(source)
    siblings = [p for p in source.parent.iterdir() if p.is_file() and mask_case_name(p) == stem]
    return sorted([source, *siblings])


def detect_format(source: Path, files: Sequence[Path]) -> str:
    """The one input format among ``files`` (masks are not counted).

    Returns:
        "dicom", "nifti", "images" or "npz".
    """
    found: dict[str, Path] = {}
    for path in files:
        lower = path.name.lower()
        if lower.endswith(nifti.NIFTI_SUFFIXES):
            kind = "nifti"
        elif lower.endswith(".npz"):
            kind = "npz"
        elif lower.endswith(images.IMAGE_SUFFIXES):
            kind = "images"
        elif dicom.is_dicom_file(path):
            kind = "dicom"
        else:
            continue
        if mask_case_name(path) is not None and kind != "dicom":
            continue
        found.setdefault(kind, path)
    if not found:
        raise AugmentorError(f"{source}: no DICOM, NIfTI, PNG/TIFF or .npz files found")
    if len(found) > 1:
        listing = ", ".join(f"{kind} ({path.name})" for kind, path in sorted(found.items()))
        raise AugmentorError(f"{source}: mixes formats: {listing}; pass --format or separate them")
    return next(iter(found))


def _find_cases(fmt: str, source: Path, files: list[Path], hu_window: tuple[float, float] | None) -> list[Case]:
    if fmt == "dicom":
        return dicom.find_cases(source, files)
    if fmt == "nifti":
        return nifti.find_cases(source, files)
    if fmt == "images":
        return images.find_cases(source, files, hu_window)
    return npz.find_cases(source, files)


def _folder_class(path: Path, source: Path) -> str | None:
    """``SOURCE/<class>/...`` -> ``<class>``; None for files directly in the source."""
    if not source.is_dir():
        return None
    parts = path.relative_to(source).parts
    return parts[0] if len(parts) > 1 else None


def _file_spacing(cases: list[Case], spacing_mm: float | None) -> tuple[tuple[float, float], str]:
    """The file's pixel spacing and a note for the provenance; refuses spacings that disagree."""
    if spacing_mm is not None:
        for case in cases:
            if case.spacing_mm is None:
                raise AugmentorError(f"{case.path}: no pixel spacing recorded in this format; --spacing cannot resample it")
        return (float(spacing_mm), float(spacing_mm)), f"resampled in-plane to {spacing_mm:g} mm"
    known = [case for case in cases if case.spacing_mm is not None]
    if not known:
        return UNKNOWN_SPACING_MM, "pixel spacing not recorded by the input format; 1 mm assumed"
    if len(known) < len(cases):
        unknown = next(case for case in cases if case.spacing_mm is None)
        raise AugmentorError(f"{unknown.path}: no pixel spacing, while {known[0].path} has one; ingest them separately")
    first = known[0]
    for case in known[1:]:
        assert case.spacing_mm is not None and first.spacing_mm is not None
        if not same_spacing(case.spacing_mm, first.spacing_mm):
            raise AugmentorError(
                f"{case.path}: pixel spacing {case.spacing_mm[0]:.3g}x{case.spacing_mm[1]:.3g} mm differs from "
                f"{first.spacing_mm[0]:.3g}x{first.spacing_mm[1]:.3g} mm of {first.path}; pass --spacing MM to resample them onto one grid"
            )
    assert first.spacing_mm is not None
    return first.spacing_mm, "as recorded by the input"


def _mask_label_names(cases: list[Case]) -> tuple[str, ...]:
    recorded = [case for case in cases if case.mask_label_names is not None]
    if not recorded:
        return DEFAULT_MASK_LABEL_NAMES
    names = recorded[0].mask_label_names
    for case in recorded[1:]:
        if case.mask_label_names != names:
            raise AugmentorError(
                f"{case.path}: mask labels {list(case.mask_label_names or ())} differ from {list(names or ())} of {recorded[0].path}"
            )
    assert names is not None
    return names


def _inputs_sha256(cases: list[Case]) -> str:
    """One SHA-256 over every input file's SHA-256, in path order (paths themselves are not hashed:
    they may hold names)."""
    digest = hashlib.sha256()
    for path in sorted({path for case in cases for path in case.files}):
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def _recorded_command(
    out: Path,
    fmt: str,
    classes_csv: Path | None,
    class_names: Sequence[str] | None,
    roi_size: int,
    slices: str,
    spacing_mm: float | None,
    salt: str | None,
    hu_window: tuple[float, float],
) -> str:
    """The command for the provenance, with the source path and the salt left out (either may identify
    patients)."""
    words = ["augment", "ingest", "SOURCE", "--out", out.name, "--format", fmt, "--roi-size", str(roi_size), "--slices", slices]
    if classes_csv is not None:
        words += ["--classes", classes_csv.name]
    if class_names:
        words += ["--class-names", ",".join(class_names)]
    if spacing_mm is not None:
        words += ["--spacing", f"{spacing_mm:g}"]
    words += ["--hu-window", f"{hu_window[0]:g},{hu_window[1]:g}"]
    if salt is not None:
        words += ["--salt", "(hidden)"]
    return " ".join(words)


@dataclass
class _Batch:
    """Samples waiting to be appended (the writer streams; this bounds memory to BATCH samples)."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    labels: list[int]
    patients: list[str]
    lesions: list[int]
    slices: list[int]

    @classmethod
    def empty(cls) -> _Batch:
        return cls([], [], [], [], [], [])

    def add(self, image: np.ndarray, mask: np.ndarray, label: int, patient: str, lesion: int, slice_index: int) -> None:
        self.images.append(image)
        self.masks.append(mask)
        self.labels.append(label)
        self.patients.append(patient)
        self.lesions.append(lesion)
        self.slices.append(slice_index)

    def flush(self, writer: H5Writer) -> int:
        count = len(self.labels)
        if count:
            writer.append(
                np.stack(self.images)[:, np.newaxis],
                np.stack(self.masks),
                self.labels,
                self.patients,
                extras={"lesion": self.lesions, "slice": self.slices},
            )
            for column in (self.images, self.masks, self.labels, self.patients, self.lesions, self.slices):
                column.clear()
        return count


def ingest(
    source: str | Path,
    out: str | Path,
    *,
    format: str = "auto",
    classes_csv: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    roi_size: int = 64,
    slices: str = "all",
    spacing_mm: float | None = None,
    salt: str | None = None,
    hu_window: tuple[float, float] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Read labelled real data and write lesion-centred ROIs as an augmentor HDF5 file.

    Args:
        source: a folder (layouts in the reader modules), or one NIfTI / PNG / TIFF / .npz file.
        out: the ``.h5`` to write (atomically: nothing appears there unless the ingest succeeds).
        format: "auto" (from the files), "dicom", "nifti", "images" (PNG/TIFF) or "npz".
        classes_csv: CSV of classes per patient and lesion (see :mod:`augmentor.data.ingest.classes`).
        class_names: the ordered class list (labels index into it); other classes are refused.
        roi_size: side of the square ROI in pixels.
        slices: "all" slices a lesion is on, or the "largest".
        spacing_mm: resample every slice to this in-plane spacing first (None keeps the input's).
        salt: secret for the patient pseudonyms (None: a random one, ids unlinkable across runs, so train
            and test ingested in two runs cannot be checked for shared patients; the CLI warns).
        hu_window: the file's HU window for training (default -160,240); also the window 8-bit PNGs
            were saved with.
        overwrite: replace an existing ``out``.
        progress: draw a progress bar.

    Returns:
        The written file's path.
    """
    source_path = Path(source)
    fmt = look_up_option(format, FORMATS, "format")
    slice_choice = look_up_option(slices, SLICE_CHOICES, "slice choice")
    if int(roi_size) != roi_size or roi_size < MIN_ROI_SIZE:
        raise AugmentorError(f"--roi-size must be a whole number of pixels >= {MIN_ROI_SIZE}, got {roi_size}")
    roi_size = int(roi_size)
    if salt is not None and not salt.strip():
        raise AugmentorError("--salt must not be empty (leave it out for a random one)")
    if spacing_mm is not None and not spacing_mm > 0:
        raise AugmentorError(f"--spacing must be a positive number of mm, got {spacing_mm}")
    if hu_window is not None and not hu_window[0] < hu_window[1]:
        raise AugmentorError(f"HU window low {hu_window[0]:g} must be below high {hu_window[1]:g}")
    out_path = check_output(out, overwrite)
    if not source_path.exists():
        raise AugmentorError(f"{source_path}: not found")
    csv_path = Path(classes_csv) if classes_csv is not None else None
    table: ClassTable | None = read_class_csv(csv_path) if csv_path is not None else None

    files = _list_files(source_path)
    if fmt == "auto":
        fmt = detect_format(source_path, files)
    if fmt == "dicom" and not source_path.is_dir():
        raise AugmentorError(f"{source_path}: give the folder that holds the DICOM series (and its mask), not one file")
    cases = _find_cases(fmt, source_path, files, hu_window)
    if not cases:
        raise AugmentorError(f"{source_path}: no {fmt} inputs found")
    modalities = {case.modality for case in cases}
    if len(modalities) > 1:
        raise AugmentorError(f"{source_path}: mixes modalities {sorted(modalities)}; ingest them separately")

    folder_classes = {case.path: _folder_class(case.path, source_path) for case in cases}
    if table is None:
        for case in cases:
            folder = folder_classes[case.path]
            if folder is not None and not case.own_classes:
                check_folder_class(folder, case.identifiers, class_names, str(source_path / folder))
    if table is not None:
        found = table.classes_of(key for case in cases for key in case.patient_keys)
        class_source = "CSV"
    else:
        found = set()
        for case in cases:
            found.update(case.own_classes or [folder_classes[case.path] or DEFAULT_CLASS])
        class_source = "recorded in the inputs, else class folders"
    recorded_orders = {case.class_order for case in cases if case.class_order is not None}
    ordered_classes = order_classes(found, class_names, recorded_orders.pop() if len(recorded_orders) == 1 else None)
    sources = {case.source for case in cases}
    if len(sources) > 1:
        raise AugmentorError(f"{source_path}: mixes real and synthetic inputs ({', '.join(sorted(sources))}); ingest them separately")
    file_source = look_up_option(sources.pop(), [kind.value for kind in Source], "source")
    file_spacing, spacing_note = _file_spacing(cases, spacing_mm)
    mask_names = _mask_label_names(cases)
    window = hu_window or DEFAULT_HU_WINDOW
    pseudonymise = Pseudonymiser(salt)
    inputs = {"source": _inputs_sha256(cases)}
    if csv_path is not None:
        inputs["classes_csv"] = sha256_file(csv_path)
    command = _recorded_command(out_path, fmt, csv_path, class_names, roi_size, slice_choice, spacing_mm, salt, window)

    def provenance(samples: int, patients: int, lesions: int) -> dict[str, object]:
        return make_provenance(
            inputs=inputs,
            command=command,
            patient_ids=pseudonymise.record(),
            details={
                "ingest": {
                    "format": fmt,
                    "cases": len(cases),
                    "patients": patients,
                    "lesions": lesions,
                    "samples": samples,
                    "roi_size": roi_size,
                    "slices": slice_choice,
                    "pixel_spacing": spacing_note,
                    "classes": class_source,
                    "patient_ids": pseudonymise.describe(),
                }
            },
        )

    lesions_per_patient: dict[str, int] = defaultdict(int)
    samples = 0
    with H5Writer(
        out_path,
        class_names=ordered_classes,
        image_shape=(1, roi_size, roi_size),
        source=file_source,
        mask_label_names=mask_names,
        pixel_spacing_mm=file_spacing,
        hu_window=window,
        provenance=provenance(0, 0, 0),
        modality=modalities.pop(),
        overwrite=overwrite,
        extras=EXTRAS,
    ) as writer, progress_bar("ingest", total=len(cases), enabled=progress) as advance:
        batch = _Batch.empty()
        for case in cases:
            for volume in case.load():
                image, label_map = volume.image, volume.label_map
                check_finite(image, volume.name)
                if spacing_mm is not None and case.spacing_mm is not None:
                    image, label_map = resample_in_plane(image, label_map, case.spacing_mm, spacing_mm)
                patient = pseudonymise(volume.patient_key)
                first_lesion = lesions_per_patient[volume.patient_key]

                def label_of(lesion: int, volume: LabelledVolume = volume, case: Case = case) -> int:
                    if table is not None:
                        name = table.lookup(volume.patient_key, lesion, volume.name)
                    else:
                        name = volume.own_class or folder_classes[case.path] or DEFAULT_CLASS
                    return ordered_classes.index(check_class(name, ordered_classes, volume.name))

                if is_ready_sample(image, roi_size):
                    lesion = first_lesion + 1
                    keep_labels = volume.mask_label_names is not None
                    mask = ready_sample_mask(label_map[0], keep_labels)
                    if keep_labels and mask.size and mask.max() >= len(mask_names):
                        raise AugmentorError(f"{volume.name}: mask label {mask.max()} has no name in {list(mask_names)}")
                    batch.add(image[0], mask, label_of(lesion), patient, lesion, 0)
                    lesions_per_patient[volume.patient_key] = lesion
                else:
                    for roi in extract_rois(image, label_map, roi_size, slice_choice, volume.name):
                        lesion = first_lesion + roi.lesion
                        batch.add(roi.image, roi.mask, label_of(lesion), patient, lesion, roi.slice_index)
                        lesions_per_patient[volume.patient_key] = max(lesions_per_patient[volume.patient_key], lesion)
                        if len(batch.labels) >= BATCH:
                            samples += batch.flush(writer)
                if len(batch.labels) >= BATCH:
                    samples += batch.flush(writer)
            advance()
        samples += batch.flush(writer)
        if samples == 0:
            raise AugmentorError(f"{source_path}: no lesions found (every mask is empty); nothing to ingest")
        writer.set_provenance(provenance(samples, len(lesions_per_patient), sum(lesions_per_patient.values())))
    return out_path
