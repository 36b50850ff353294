"""Lesion-centred regions of interest from a volume and its label map.

Lesions are the connected components of the non-zero voxels of the label map (6-connected in 3-D:
voxels sharing a face; 4-connected within a single slice), numbered 1, 2, ... in the order of their
first voxel in (slice, row, column) order; numbering continues across a patient's inputs (in path
order), which is what a class CSV's ``lesion`` column counts. Lesions that touch merge into one:
separate them in the label map if that is wrong.

For each lesion, an ROI of ``roi_size`` x ``roi_size`` pixels is cut from every slice the lesion
appears on (``slices="all"``) or from the slice where its area is largest (``slices="largest"``,
the first such slice on ties). The ROI is centred on the lesion's centre of mass in that slice and
shifted inwards at the image border, so that every pixel is measured, never padded. Its mask is 1 on
the lesion and 0 elsewhere (other lesions in the window are background: each ROI is about one lesion).

Inputs that already are ROIs -- a single slice of exactly ``roi_size`` x ``roi_size`` pixels -- are
taken whole as one sample with their whole mask: reduced to 0/1 unless the input names its mask
labels (augmentor's own DICOM export, a ``.npz`` with ``mask_label_names``), then kept as is. Each
counts as one lesion of its patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import ndimage

from augmentor.errors import AugmentorError


class SliceChoice(StrEnum):
    """Which slices of a lesion become samples."""

    ALL = "all"
    LARGEST = "largest"


@dataclass(frozen=True)
class LesionROI:
    """One sample cut around one lesion.

    Attributes:
        image: (roi, roi) float32 HU.
        mask: (roi, roi) uint8.
        lesion: lesion number within the volume (1-based).
        slice_index: slice of the volume it was cut from.
        centre: (row, column) of the lesion's centre of mass in that slice, in volume pixels.
    """

    image: np.ndarray
    mask: np.ndarray
    lesion: int
    slice_index: int
    centre: tuple[float, float]


def is_ready_sample(image: np.ndarray, roi_size: int) -> bool:
    """Whether a (Z, H, W) volume already is one ROI-sized sample (Z = 1, H = W = ``roi_size``)."""
    return image.shape == (1, roi_size, roi_size)


def find_lesions(label_map: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of the non-zero voxels.

    Args:
        label_map: (Z, H, W) integer labels.

    Returns:
        (components (Z, H, W) int32 with 0 = background and lesions 1..count, count).
    """
    # Face connectivity: scipy's default structuring element (a 3-D cross).
    components, count = ndimage.label(label_map > 0)
    return components.astype(np.int32, copy=False), int(count)


def roi_window(centre: float, roi_size: int, length: int) -> slice:
    """The ``roi_size`` pixels along one axis centred on ``centre``, shifted to lie inside ``length``."""
    start = int(np.floor(centre + 0.5)) - roi_size // 2
    start = min(max(start, 0), length - roi_size)
    return slice(start, start + roi_size)


def extract_rois(
    image: np.ndarray,
    label_map: np.ndarray,
    roi_size: int = 64,
    slices: SliceChoice | str = SliceChoice.ALL,
    name: str = "",
) -> Iterator[LesionROI]:
    """Yield lesion-centred ROIs, lesion by lesion, slice by slice.

    Args:
        image: (Z, H, W) HU.
        label_map: (Z, H, W) labels, 0 = background.
        roi_size: side of the square ROI in pixels.
        slices: "all" (every slice a lesion is on) or "largest" (its largest slice).
        name: the input, for messages.

    Returns:
        An iterator of :class:`LesionROI`.
    """
    choice = SliceChoice(slices)
    _, height, width = image.shape
    if height < roi_size or width < roi_size:
        raise AugmentorError(
            f"{name}: image {height}x{width} is smaller than the {roi_size}x{roi_size} ROI; pass a smaller --roi-size"
        )
    components, _ = find_lesions(label_map)
    # One bounding box per lesion, so that each lesion's work touches only its own voxels.
    for lesion, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        inside = components[box] == lesion  # (z, h, w) of the box
        areas = inside.sum(axis=(1, 2))
        slice_offsets = np.flatnonzero(areas)
        if choice is SliceChoice.LARGEST:
            slice_offsets = slice_offsets[[int(np.argmax(areas))]]
        for offset in slice_offsets:
            z = box[0].start + int(offset)
            rows, columns = np.nonzero(inside[offset])
            centre = (float(rows.mean() + box[1].start), float(columns.mean() + box[2].start))
            row_window = roi_window(centre[0], roi_size, height)
            column_window = roi_window(centre[1], roi_size, width)
            mask = (components[z, row_window, column_window] == lesion).astype(np.uint8)
            yield LesionROI(
                image=np.asarray(image[z, row_window, column_window], dtype=np.float32),
                mask=mask,
                lesion=lesion,
                slice_index=z,
                centre=centre,
            )


def ready_sample_mask(label_map: np.ndarray, keep_labels: bool) -> np.ndarray:
    """The mask of a whole-slice sample: as is when its labels are named, else 0/1."""
    if keep_labels:
        return label_map.astype(np.uint8)
    return (label_map > 0).astype(np.uint8)
