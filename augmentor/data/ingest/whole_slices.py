"""Whole CT slices as a domain (``augment ingest SOURCE --whole-slices --size 256 [--spacing MM]``).

The user's own CT as the "real CT" domain that phantom->CT translation learns from: every axial slice
of every DICOM series or NIfTI volume becomes one sample, whole, at ``size`` x ``size`` pixels. No lesion
labels are needed; a label map next to a volume (read exactly as for lesion ROIs) is kept as the
slice's mask -- with its values when the input names them (an augmentor export), reduced to
background / labelled otherwise -- and a volume without one gets an empty mask.

Reading, Hounsfield units (DICOM modality LUT, NIfTI scaling), orientation (display order), patient
pseudonyms and what the provenance records are those of :mod:`augmentor.data.ingest`: no name, date,
UID, folder or path reaches the file. Geometry:

- values below -1024 HU (the padding scanners write outside the reconstruction circle) become air,
  -1024 HU, so the resampling does not ring at the circle's edge (and its slight undershoot beside the
  skin is clipped back to air);
- with ``--spacing MM`` each slice is resampled to MM pixels, then centred on a ``size`` x ``size``
  field (padded with air, or cropped, evenly on both sides); without it the slice's whole field (its
  longer side) is fitted to ``size`` pixels, and all inputs must then share one field of view;
- images are resampled with the anti-aliasing filter of :func:`augmentor.data.resample.resample_slices`
  (the simulator's ``abdomen-ct`` slices go through the same one), masks by nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from augmentor.data.ingest import _inputs_sha256, _list_files, detect_format, dicom, nifti
from augmentor.data.ingest.pseudonym import Pseudonymiser
from augmentor.data.ingest.volume import Case, check_finite, same_spacing
from augmentor.data.provenance import make_provenance
from augmentor.data.resample import output_size_for_spacing, resample_slices
from augmentor.data.schema import Source
from augmentor.data.writer import H5Writer, check_output
from augmentor.errors import AugmentorError, look_up_option
from augmentor.progress import progress_bar

FORMATS = ("auto", "dicom", "nifti")
CLASS_NAMES = ("slice",)
DEFAULT_HU_WINDOW = (-160.0, 240.0)  # abdominal soft tissue, as the simulator's abdomen-ct
UNNAMED_MASK_LABEL_NAMES = ("background", "labelled")
AIR_HU = -1024.0
MIN_SIZE = 32
EXTRAS = ("slice",)
BATCH = 16


@dataclass(frozen=True)
class SliceGrid:
    """How one case's slices are resampled: (rows, columns) after resampling, and the pixel spacing."""

    resampled_shape: tuple[int, int]
    spacing_mm: float


def plan_grid(shape: tuple[int, int], spacing_mm: tuple[float, float], size: int, target_mm: float | None) -> SliceGrid:
    """The resampling of a (rows, columns) slice of ``spacing_mm`` pixels onto a ``size`` field.

    Args:
        shape: the input slice's (rows, columns).
        spacing_mm: its (row, column) pixel spacing.
        size: pixels per side of the output.
        target_mm: output pixel spacing; None fits the slice's longer side to ``size`` pixels.

    Returns:
        The :class:`SliceGrid`.
    """
    field_mm = max(shape[0] * spacing_mm[0], shape[1] * spacing_mm[1])
    spacing = float(target_mm) if target_mm is not None else field_mm / size
    rows = output_size_for_spacing(shape[0], spacing_mm[0], spacing)
    columns = output_size_for_spacing(shape[1], spacing_mm[1], spacing)
    return SliceGrid((rows, columns), spacing)


def _nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Input pixel whose area holds each output pixel's centre (pixels as areas, same field)."""
    centres = (np.arange(out_size) + 0.5) * (in_size / out_size)
    return np.clip(np.floor(centres).astype(np.int64), 0, in_size - 1)


def _centre_on(array: np.ndarray, size: int, fill: float) -> np.ndarray:
    """Pad (with ``fill``) or crop the last two axes evenly on both sides to ``size`` x ``size``."""
    result = np.full((*array.shape[:-2], size, size), fill, dtype=array.dtype)
    slices_in, slices_out = [], []
    for length in array.shape[-2:]:
        if length >= size:
            start = (length - size) // 2
            slices_in.append(slice(start, start + size))
            slices_out.append(slice(0, size))
        else:
            start = (size - length) // 2
            slices_in.append(slice(0, length))
            slices_out.append(slice(start, start + length))
    result[..., slices_out[0], slices_out[1]] = array[..., slices_in[0], slices_in[1]]
    return result


def to_whole_slices(image: np.ndarray, label_map: np.ndarray, grid: SliceGrid, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample a (Z, H, W) HU volume and its labels onto the ``size`` x ``size`` field of ``grid``.

    Returns:
        (float32 HU (Z, size, size), uint8 labels (Z, size, size)).
    """
    air_floor = np.maximum(image.astype(np.float32, copy=False), AIR_HU)
    # Nothing is below air: the filter's small undershoot beside the skin is clipped back to it.
    resampled = np.maximum(resample_slices(air_floor, grid.resampled_shape), AIR_HU)
    rows = _nearest_indices(label_map.shape[-2], grid.resampled_shape[0])
    columns = _nearest_indices(label_map.shape[-1], grid.resampled_shape[1])
    labels = label_map[:, rows[:, None], columns[None, :]]
    return _centre_on(resampled, size, AIR_HU), _centre_on(labels.astype(np.uint8), size, 0)


def _find_cases(fmt: str, source: Path, files: list[Path]) -> list[Case]:
    if fmt == "dicom":
        if not source.is_dir():
            raise AugmentorError(f"{source}: give the folder that holds the DICOM series, not one file")
        return dicom.find_cases(source, files, labels_required=False)
    return nifti.find_cases(source, files, labels_required=False)


def _recorded_command(out: Path, fmt: str, size: int, spacing_mm: float | None, salt: str | None,
                      hu_window: tuple[float, float]) -> str:
    """The command for the provenance, without the source path and the salt (either may identify patients)."""
    words = ["augment", "ingest", "SOURCE", "--out", out.name, "--format", fmt, "--whole-slices", "--size", str(size)]
    if spacing_mm is not None:
        words += ["--spacing", f"{spacing_mm:g}"]
    words += ["--hu-window", f"{hu_window[0]:g},{hu_window[1]:g}"]
    if salt is not None:
        words += ["--salt", "(hidden)"]
    return " ".join(words)


def ingest_whole_slices(
    source: str | Path,
    out: str | Path,
    *,
    format: str = "auto",
    size: int = 256,
    spacing_mm: float | None = None,
    salt: str | None = None,
    hu_window: tuple[float, float] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write every axial slice of CT volumes, whole, as an augmentor HDF5 file (see the module docstring).

    Args:
        source: a folder of DICOM series or NIfTI volumes (label maps optional), or one NIfTI file.
        out: the ``.h5`` to write (atomically: nothing appears there unless the ingest succeeds).
        format: "auto" (from the files), "dicom" or "nifti".
        size: pixels per side of the output slices.
        spacing_mm: output pixel spacing; None fits each slice's field to ``size`` pixels (all inputs
            must then share one field of view).
        salt: secret for the patient pseudonyms (None: a random one per run).
        hu_window: the file's HU window for training (default -160,240).
        overwrite: replace an existing ``out``.
        progress: draw a progress bar.

    Returns:
        The written file's path.
    """
    source_path = Path(source)
    fmt = look_up_option(format, FORMATS, "whole-slice format")
    if isinstance(size, bool) or int(size) != size or size < MIN_SIZE:
        raise AugmentorError(f"--size must be a whole number of pixels >= {MIN_SIZE}, got {size}")
    size = int(size)
    if spacing_mm is not None and not spacing_mm > 0:
        raise AugmentorError(f"--spacing must be a positive number of mm, got {spacing_mm}")
    if salt is not None and not salt.strip():
        raise AugmentorError("--salt must not be empty (leave it out for a random one)")
    if hu_window is not None and not hu_window[0] < hu_window[1]:
        raise AugmentorError(f"HU window low {hu_window[0]:g} must be below high {hu_window[1]:g}")
    out_path = check_output(out, overwrite)
    if not source_path.exists():
        raise AugmentorError(f"{source_path}: not found")
    files = _list_files(source_path)
    if fmt == "auto":
        fmt = detect_format(source_path, files)
        if fmt not in FORMATS:
            raise AugmentorError(f"{source_path}: --whole-slices reads DICOM series or NIfTI volumes, found {fmt} files")
    cases = _find_cases(fmt, source_path, files)
    if not cases:
        raise AugmentorError(f"{source_path}: no {fmt} inputs found")
    modalities = {case.modality for case in cases}
    if modalities != {"CT"}:
        raise AugmentorError(f"{source_path}: --whole-slices takes CT (Hounsfield units), found modality {', '.join(sorted(modalities))}")
    sources = {case.source for case in cases}
    if len(sources) > 1:
        raise AugmentorError(f"{source_path}: mixes real and synthetic inputs ({', '.join(sorted(sources))}); ingest them separately")
    file_source = look_up_option(sources.pop(), [kind.value for kind in Source], "source")
    for case in cases:
        if case.spacing_mm is None:
            raise AugmentorError(f"{case.path}: no pixel spacing recorded; whole slices need it")
    recorded_names = {case.mask_label_names for case in cases if case.mask_label_names is not None}
    if len(recorded_names) > 1:
        raise AugmentorError(f"{source_path}: inputs record different mask label names; ingest them separately")
    mask_names = recorded_names.pop() if recorded_names else UNNAMED_MASK_LABEL_NAMES
    window = hu_window or DEFAULT_HU_WINDOW
    pseudonymise = Pseudonymiser(salt)
    inputs = {"source": _inputs_sha256(cases)}
    command = _recorded_command(out_path, fmt, size, spacing_mm, salt, window)
    # The file's one spacing: given, or the field of the first input fitted to size (checked per volume).
    file_spacing: float | None = spacing_mm

    def provenance(slices: int, patients: int, spacing: float | None) -> dict[str, object]:
        return make_provenance(
            inputs=inputs,
            command=command,
            patient_ids=pseudonymise.record(),
            details={
                "ingest": {
                    "format": fmt,
                    "whole_slices": True,
                    "cases": len(cases),
                    "patients": patients,
                    "samples": slices,
                    "size": size,
                    "pixel_spacing_mm": spacing,
                    "pixel_spacing": "resampled in-plane to --spacing" if spacing_mm is not None else "each input's field fitted to --size",
                    "resampling": "images Lanczos-3 anti-aliased, HU floored at -1024 (air), masks nearest neighbour; centred, air-padded or cropped",
                    "masks": "recorded label names kept" if recorded_names else "label maps reduced to background/labelled; none: empty",
                    "patient_ids": pseudonymise.describe(),
                }
            },
        )

    patients: set[str] = set()
    samples = 0
    writer: H5Writer | None = None
    try:
        with progress_bar("ingest", total=len(cases), enabled=progress) as advance:
            for case in cases:
                assert case.spacing_mm is not None
                for volume in case.load():
                    check_finite(volume.image, volume.name)
                    grid = plan_grid((volume.image.shape[1], volume.image.shape[2]), case.spacing_mm, size, spacing_mm)
                    if file_spacing is None:
                        file_spacing = grid.spacing_mm
                    elif not same_spacing((grid.spacing_mm, grid.spacing_mm), (file_spacing, file_spacing)):
                        raise AugmentorError(
                            f"{volume.name}: field of view {grid.spacing_mm * size:.0f} mm differs from {file_spacing * size:.0f} mm "
                            f"of the first input; pass --spacing MM to put every slice on one pixel spacing"
                        )
                    if writer is None:
                        writer = H5Writer(
                            out_path, class_names=CLASS_NAMES, image_shape=(1, size, size), source=file_source,
                            mask_label_names=mask_names, pixel_spacing_mm=(file_spacing, file_spacing), hu_window=window,
                            provenance=provenance(0, 0, file_spacing), modality="CT", overwrite=overwrite, extras=EXTRAS,
                            block_size=4,
                        )
                    label_map = volume.label_map if recorded_names else (volume.label_map > 0).astype(np.uint8)
                    images, masks = to_whole_slices(volume.image, label_map, grid, size)
                    patient = pseudonymise(volume.patient_key)
                    patients.add(patient)
                    for start in range(0, images.shape[0], BATCH):
                        stop = min(start + BATCH, images.shape[0])
                        writer.append(images[start:stop, None], masks[start:stop], np.zeros(stop - start, dtype=np.int64),
                                      [patient] * (stop - start), extras={"slice": np.arange(start, stop)})
                    samples += images.shape[0]
                advance()
        if writer is None or samples == 0:
            raise AugmentorError(f"{source_path}: no slices found; nothing to ingest")
        writer.set_provenance(provenance(samples, len(patients), file_spacing))
        return writer.close()
    finally:
        if writer is not None:
            writer.abort()
