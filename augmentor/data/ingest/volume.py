"""What every ingest reader produces: labelled volumes in one orientation, planned as cases.

A reader turns its files into :class:`Case` objects (from headers only, so that classes, spacing and
patients are known before any pixel is read) whose ``load()`` yields :class:`LabelledVolume` objects.
Everything after that (resampling, lesion finding, ROI extraction, classes, pseudonyms, writing) is
shared in :mod:`augmentor.data.ingest`.

Orientation: volumes are (Z, H, W) in *display order* -- slices by ascending position along the
slice normal (inferior to superior for axial CT), rows from anterior to posterior, columns from the
patient's right to left. That is the order of the pixels in a standard axial DICOM series (patient
axes LPS) and the way radiologists look at axial images, so DICOM, NIfTI and PNG inputs of the same
scan give the same ROIs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from augmentor.errors import AugmentorError

#: File names (without extension) that mark a label map: ``mask``, ``label``, ``labels``, ``seg``,
#: ``segmentation``, or any name ending in ``_mask``, ``_label``, ``_labels`` or ``_seg``.
MASK_NAME = re.compile(r"^(?:(?P<case>.+)_)?(?:mask|labels?|seg|segmentation)$", re.IGNORECASE)

#: Separates the patient from the rest of a file name: ``p001__slice12.png`` belongs to patient ``p001``.
PATIENT_SEPARATOR = "__"

#: Two in-plane spacings closer than this (relative) count as equal.
SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class LabelledVolume:
    """One scan (or one slice) with its label map, in display order (see the module docstring).

    Attributes:
        image: (Z, H, W) float32 physical values (Hounsfield units for CT).
        label_map: (Z, H, W) integer labels, 0 = background.
        patient_key: the original patient identifier. Never written anywhere: it is pseudonymised
            before storage and only used to group lesions and to look classes up.
        name: where the volume came from, for messages (a path).
        own_class: a class the input records about itself (an augmentor DICOM export, a .npz key).
        mask_label_names: names of the label values when the input records them; masks are then
            kept as they are instead of being reduced to the one lesion of each ROI.
    """

    image: np.ndarray
    label_map: np.ndarray
    patient_key: str
    name: str
    own_class: str | None = None
    mask_label_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Case:
    """An input planned from headers: one DICOM series, one NIfTI or PNG/TIFF image, one .npz file.

    Attributes:
        name: the input's path relative to the source folder, for messages.
        path: the main file (named in errors; its first folder below the source is the class folder).
        files: every file read, for the input hash in the provenance.
        patient_keys: original patient identifiers of the volumes it yields (never stored).
        spacing_mm: in-plane (row, column) pixel spacing in mm, None when the format has none.
        own_classes: classes recorded inside the input (known from headers).
        modality: DICOM modality ("CT" unless the input says otherwise).
        mask_label_names: names of the mask labels when the input records them.
        class_order: the ordered class list an augmentor export recorded.
        source: "real" unless the input says it is synthetic (DICOM Synthetic Data = YES, or the
            source an augmentor export recorded).
        identifiers: what identifies the patient in the input's header (DICOM PatientName and
            PatientID), only compared with class folder names; never stored.
        load: reads the pixels; yields the case's labelled volumes.
    """

    name: str
    path: Path
    files: tuple[Path, ...]
    patient_keys: tuple[str, ...]
    spacing_mm: tuple[float, float] | None
    load: Callable[[], Iterator[LabelledVolume]]
    own_classes: tuple[str, ...] = ()
    modality: str = "CT"
    mask_label_names: tuple[str, ...] | None = None
    class_order: tuple[str, ...] | None = None
    source: str = "real"
    identifiers: tuple[str, ...] = ()


def mask_case_name(path: Path) -> str | None:
    """The case a mask file belongs to (``p1_mask.png`` -> ``p1``; ``mask.nii.gz`` -> ``""``), or None."""
    match = MASK_NAME.match(file_stem(path))
    if match is None:
        return None
    return match.group("case") or ""


def file_stem(path: Path) -> str:
    """A file name without its extension, ``.nii.gz`` counted as one."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".npz", ".npy", ".png", ".tiff", ".tif", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def patient_from_stem(stem: str) -> str:
    """The patient part of a file name: everything before the first ``__`` (or the whole name)."""
    return stem.split(PATIENT_SEPARATOR, 1)[0]


def relative_name(path: Path, source: Path) -> str:
    """``path`` relative to the ingest source, for messages."""
    try:
        return str(path.relative_to(source)) if source.is_dir() else path.name
    except ValueError:
        return str(path)


def check_finite(image: np.ndarray, name: str | Path) -> None:
    """Refuse NaN or infinite pixels with a one-line error naming the file."""
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise AugmentorError(f"{name}: image contains {bad} NaN or infinite values")


def check_same_shape(image: np.ndarray, mask: np.ndarray, mask_name: str | Path) -> None:
    """Refuse a mask whose shape differs from its image's."""
    if image.shape != mask.shape:
        raise AugmentorError(
            f"{mask_name}: mask shape {tuple(mask.shape)} does not match image shape {tuple(image.shape)}"
        )


def as_label_map(mask: np.ndarray, name: str | Path) -> np.ndarray:
    """Integer label map from a mask array (bool, integer, or integer-valued float)."""
    array = np.asarray(mask)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise AugmentorError(f"{name}: mask must hold whole-number labels (found fractions or NaN)")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise AugmentorError(f"{name}: mask must be an integer label map, got {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise AugmentorError(f"{name}: mask labels must be in 0..255, found {array.min()}..{array.max()}")
    return array.astype(np.uint8)


def same_spacing(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether two in-plane spacings agree within :data:`SPACING_TOLERANCE`."""
    return all(abs(a - b) <= SPACING_TOLERANCE * max(a, b) for a, b in zip(first, second, strict=True))


def to_display(arrays: list[np.ndarray], affine: np.ndarray) -> tuple[list[np.ndarray], tuple[float, float]]:
    """Reorder 3-D arrays that share a voxel grid into display order (z, row, column).

    The arrays are first brought to the closest RAS+ orientation (axis 0 grows towards the patient's
    Right, axis 1 towards Anterior, axis 2 towards Superior), then transposed to (z, y, x) and flipped
    in y and x: rows then run anterior->posterior and columns from the patient's right to left, which
    is how an axial DICOM image (patient axes LPS) is stored and displayed.

    Args:
        arrays: arrays of one shape, indexed like the grid of ``affine``.
        affine: 4x4 map from array indices to RAS mm (NIfTI convention).

    Returns:
        (the arrays in display order, in-plane (row, column) spacing in mm).
    """
    from nibabel import orientations

    orientation = orientations.io_orientation(affine)
    displayed = []
    for array in arrays:
        canonical = orientations.apply_orientation(array, orientation)
        displayed.append(np.ascontiguousarray(canonical.transpose(2, 1, 0)[:, ::-1, ::-1]))
    return displayed, display_spacing(affine)


def display_spacing(affine: np.ndarray) -> tuple[float, float]:
    """In-plane (row, column) spacing in mm of a grid once in display order (see :func:`to_display`)."""
    from nibabel import orientations

    orientation = orientations.io_orientation(affine)
    voxel_sizes = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    # io_orientation row i says which RAS axis array axis i becomes; its spacing goes with it.
    canonical_sizes = np.empty(3)
    for axis, (ras_axis, _) in enumerate(orientation):
        canonical_sizes[int(ras_axis)] = voxel_sizes[axis]
    return float(canonical_sizes[1]), float(canonical_sizes[0])


def pair_with_masks(files: list[Path], suffixes: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """Pair each image file with its mask: ``<case>.<ext>`` with ``<case>_mask.<ext>`` in one folder.

    Args:
        files: candidate files.
        suffixes: the extensions of this format (lower case, e.g. ``(".png", ".tif", ".tiff")``).

    Returns:
        (image, mask) pairs in path order.
    """
    pairs = []
    for image, mask in pair_with_optional_masks(files, suffixes, required=True):
        assert mask is not None
        pairs.append((image, mask))
    return pairs


def pair_with_optional_masks(files: list[Path], suffixes: tuple[str, ...], *, required: bool) -> list[tuple[Path, Path | None]]:
    """:func:`pair_with_masks`, where an image without a mask is paired with None unless ``required``."""
    images: list[Path] = []
    masks: dict[tuple[Path, str], list[Path]] = {}
    for path in sorted(p for p in files if p.name.lower().endswith(suffixes) and not p.name.startswith(".")):
        case = mask_case_name(path)
        if case is None:
            images.append(path)
        elif case == "":
            raise AugmentorError(f"{path}: name the mask after its image, e.g. <case>_mask{path.suffix}")
        else:
            masks.setdefault((path.parent, case), []).append(path)
    pairs: list[tuple[Path, Path | None]] = []
    for image in images:
        found = masks.pop((image.parent, file_stem(image)), [])
        if not found and not required:
            pairs.append((image, None))
            continue
        if not found:
            raise AugmentorError(
                f"{image}: no mask; put {file_stem(image)}_mask{suffixes[0]} (or _label, _seg) next to it"
            )
        if len(found) > 1:
            raise AugmentorError(f"{image}: several masks ({', '.join(p.name for p in found)}); keep one")
        pairs.append((image, found[0]))
    for leftover in masks.values():
        raise AugmentorError(f"{leftover[0]}: mask without an image (expected {mask_image_hint(leftover[0])})")
    return pairs


def mask_image_hint(mask: Path) -> str:
    """The image name a mask file expects, for messages."""
    case = mask_case_name(mask) or ""
    return f"{case}{mask.name[len(file_stem(mask)):]}"


def label_onto_grid(
    label: np.ndarray,
    label_affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: tuple[int, int, int],
    name: str | Path,
) -> np.ndarray:
    """Re-index a label array onto another voxel grid with the same voxel centres.

    Label maps are often saved with their axes permuted or flipped relative to the image (a NIfTI
    mask next to a DICOM series, a mask written by another tool). As long as both describe the same
    voxel centres, that is a pure re-indexing: no interpolation, no label is invented.

    Args:
        label: 3-D label array.
        label_affine: its 4x4 index -> RAS mm map.
        target_affine: the image's 4x4 index -> RAS mm map.
        target_shape: the image's shape.
        name: the label file, for messages.

    Returns:
        The labels indexed like the image (``target_shape``).
    """
    target_to_label = np.linalg.inv(np.asarray(label_affine, dtype=np.float64)) @ np.asarray(
        target_affine, dtype=np.float64
    )
    linear, offset = target_to_label[:3, :3].copy(), target_to_label[:3, 3]
    for axis, size in enumerate(target_shape):
        if size == 1:  # a single slice has no step along its normal; only its position matters
            column = linear[:, axis]
            peak = float(np.abs(column).max())
            if peak > 0:
                linear[:, axis] = column / peak
    rounded = np.rint(linear)
    is_signed_permutation = (
        np.allclose(linear, rounded, atol=1e-2)
        and (np.abs(rounded).sum(axis=0) == 1).all()
        and (np.abs(rounded).sum(axis=1) == 1).all()
    )
    if not is_signed_permutation or not np.allclose(offset, np.rint(offset), atol=1e-2):
        raise AugmentorError(
            f"{name}: mask shape {tuple(label.shape)} is not on the image's voxel grid (image shape "
            f"{tuple(target_shape)}; spacing, origin or orientation differ)"
        )
    label_axes_to_target = np.argmax(np.abs(rounded), axis=1)  # label axis a <- target axis b
    index_per_label_axis = []
    for label_axis, target_axis in enumerate(label_axes_to_target):
        sign = rounded[label_axis, target_axis]
        indices = (sign * np.arange(target_shape[target_axis]) + np.rint(offset[label_axis])).astype(np.int64)
        if indices.min() < 0 or indices.max() >= label.shape[label_axis]:
            raise AugmentorError(
                f"{name}: mask shape {tuple(label.shape)} does not cover image shape {tuple(target_shape)}"
            )
        index_per_label_axis.append(indices)
    gathered = label[np.ix_(*index_per_label_axis)]  # axes: target axes in label-axis order
    return np.ascontiguousarray(gathered.transpose(np.argsort(label_axes_to_target)))


def resample_in_plane(
    image: np.ndarray, label_map: np.ndarray, spacing_mm: tuple[float, float], target_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resample every slice to ``target_mm`` x ``target_mm`` pixels (slice spacing unchanged).

    Images are interpolated linearly (HU is a physical quantity: a new pixel is the average of its
    neighbours); label maps take the nearest label, so no label is invented. ``grid_mode`` treats
    pixels as areas, so the field of view is kept: a 0.7 mm grid of 512 pixels becomes 358 pixels of 1 mm.

    Args:
        image: (Z, H, W) HU.
        label_map: (Z, H, W) labels.
        spacing_mm: its (row, column) spacing.
        target_mm: the new spacing.

    Returns:
        (image, label_map) on the new grid.
    """
    from scipy import ndimage

    factors = (1.0, spacing_mm[0] / target_mm, spacing_mm[1] / target_mm)
    if np.allclose(factors, 1.0, atol=1e-6):
        return image, label_map
    resampled = ndimage.zoom(image, factors, order=1, mode="nearest", grid_mode=True)
    labels = ndimage.zoom(label_map, factors, order=0, mode="nearest", grid_mode=True)
    return resampled.astype(np.float32, copy=False), labels
