"""NIfTI volumes with label NIfTIs.

Layout::

    SOURCE/[<class>/]<case>.nii.gz           the image (HU for CT; scl_slope/scl_inter applied)
    SOURCE/[<class>/]<case>_label.nii.gz     its label map (or _mask, _seg; .nii also accepted)

The patient is ``<case>`` up to its first ``__`` (``p001__arterial.nii.gz`` is patient ``p001``).
The label map may be stored with its axes permuted or flipped relative to the image, as long as it
describes the same voxels (it is re-indexed through both affines); any other difference is an error.
Both are brought to display order (see :mod:`augmentor.data.ingest.volume`); spacing comes from the
affine.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.data.ingest.volume import (
    Case,
    LabelledVolume,
    as_label_map,
    check_finite,
    display_spacing,
    file_stem,
    label_onto_grid,
    pair_with_optional_masks,
    patient_from_stem,
    relative_name,
    to_display,
)
from augmentor.errors import AugmentorError

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _load(path: Path) -> Any:
    import nibabel

    try:
        return nibabel.load(path)
    except Exception as error:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors...
        raise AugmentorError(f"{path}: unreadable NIfTI ({' '.join(str(error).split())[:160]})") from None


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3:
        raise AugmentorError(f"{path}: expected a 2-D or 3-D image, got shape {array.shape}")
    return array


def _read(image_path: Path, label_path: Path | None, source: Path) -> Iterator[LabelledVolume]:
    """One NIfTI volume and its labels (all background when it has no label file: whole-slice ingest)."""
    image_nifti = _load(image_path)
    label_nifti = _load(label_path) if label_path is not None else None
    try:
        image = _as_3d(image_nifti.get_fdata(dtype=np.float32), image_path)
        label = _as_3d(np.asanyarray(label_nifti.dataobj), label_path) if label_nifti is not None and label_path is not None else None
    except AugmentorError:
        raise
    except Exception as error:  # a truncated .nii.gz fails only when its data is read
        raise AugmentorError(f"{image_path}: unreadable or truncated NIfTI data ({' '.join(str(error).split())[:160]})") from None
    check_finite(image, image_path)
    if label is None or label_nifti is None or label_path is None:
        label_map = np.zeros(image.shape, dtype=np.uint8)
    else:
        if label.shape == image.shape and np.allclose(label_nifti.affine, image_nifti.affine, atol=1e-3):
            on_grid = label
        else:
            on_grid = label_onto_grid(label, label_nifti.affine, image_nifti.affine, (image.shape[0], image.shape[1], image.shape[2]), label_path)
        label_map = as_label_map(on_grid, label_path)
    (image_display, label_display), _ = to_display([image, label_map], image_nifti.affine)
    yield LabelledVolume(
        image=image_display,
        label_map=label_display,
        patient_key=patient_from_stem(file_stem(image_path)),
        name=relative_name(image_path, source),
    )


def find_cases(source: Path, files: list[Path], *, labels_required: bool = True) -> list[Case]:
    """Plan one case per NIfTI image (headers only).

    Args:
        source: the ingest source (folder or a single image file).
        files: the files below it.
        labels_required: refuse an image without a label file (lesion ROIs need one; whole slices do not).

    Returns:
        The cases, in path order.
    """
    cases = []
    for image_path, label_path in pair_with_optional_masks(files, NIFTI_SUFFIXES, required=labels_required):
        header_image = _load(image_path)
        cases.append(
            Case(
                name=relative_name(image_path, source),
                path=image_path,
                files=(image_path,) if label_path is None else (image_path, label_path),
                patient_keys=(patient_from_stem(file_stem(image_path)),),
                spacing_mm=display_spacing(header_image.affine),
                load=partial(_read, image_path, label_path, source),
            )
        )
    return cases
