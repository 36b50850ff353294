"""Anti-aliased in-plane resampling of HU images (whole CT slices to a training size).

Shrinking a 512 x 512 CT slice to 256 x 256 by taking every other pixel, or by linear interpolation
at the new pixel centres, folds the detail and noise above the new Nyquist frequency back into the image
(aliasing: jagged edges, noise whose power does not fall towards Nyquist). Here every output pixel is a
Lanczos-3 weighted sum of the input pixels, the kernel stretched by the shrink factor so that it is a
low-pass filter at the *output's* Nyquist frequency (the filter PIL and most image libraries call
"antialias"). Pixels are areas: the field of view is kept (512 pixels of 0.7 mm -> 256 of 1.4 mm).
Weights of each output pixel sum to one, so a flat region keeps its HU exactly.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from augmentor.errors import AugmentorError

LANCZOS_LOBES = 3


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < LANCZOS_LOBES, np.sinc(x) * np.sinc(x / LANCZOS_LOBES), 0.0)


@lru_cache(maxsize=16)
def resampling_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights that resample one axis with an anti-aliasing Lanczos-3 kernel.

    Args:
        in_size: input pixels along the axis.
        out_size: output pixels along the axis (the same field of view).

    Returns:
        float64 matrix whose rows sum to one (read-only; cached).
    """
    if in_size < 1 or out_size < 1:
        raise AugmentorError(f"cannot resample {in_size} pixels to {out_size}")
    scale = in_size / out_size  # input pixels per output pixel
    stretch = max(scale, 1.0)  # widen the kernel only when shrinking (that is what removes aliasing)
    centres = (np.arange(out_size) + 0.5) * scale - 0.5  # output pixel centres in input pixel coordinates
    offsets = np.arange(in_size)[None, :] - centres[:, None]
    weights = _lanczos(offsets / stretch)
    # Near the border part of the kernel falls outside the image: renormalise over the pixels inside.
    weights /= weights.sum(axis=1, keepdims=True)
    weights.flags.writeable = False
    return weights


def resample_slices(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample the last two axes of ``images`` to ``shape`` with anti-aliasing (field of view kept).

    Args:
        images: (..., H, W) values (HU).
        shape: (rows, columns) of the result.

    Returns:
        float32 array (..., rows, columns); the input itself (as float32) when the shape already matches.
    """
    array = np.asarray(images)
    if array.ndim < 2:
        raise AugmentorError(f"resample_slices needs (..., H, W) images, got shape {array.shape}")
    height, width = array.shape[-2:]
    rows, columns = (int(shape[0]), int(shape[1]))
    if (rows, columns) == (height, width):
        return array.astype(np.float32, copy=False)
    row_weights = resampling_matrix(height, rows)
    column_weights = resampling_matrix(width, columns)
    # out = R @ image @ C^T for every leading index, in float64 so 1 000 HU edges sum exactly.
    result = np.matmul(np.matmul(row_weights, array.astype(np.float64)), column_weights.T)
    return result.astype(np.float32)


def output_size_for_spacing(size: int, spacing_mm: float, target_mm: float) -> int:
    """Pixels along an axis of ``size`` pixels of ``spacing_mm`` once resampled to ``target_mm`` (same field)."""
    if spacing_mm <= 0 or target_mm <= 0:
        raise AugmentorError(f"pixel spacings must be positive, got {spacing_mm} and {target_mm}")
    return max(1, math.floor(size * spacing_mm / target_mm + 0.5))
