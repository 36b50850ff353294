"""PNG and TIFF slices with their masks.

Layout::

    SOURCE/[<class>/]<case>.png|.tif|.tiff          one slice (or a TIFF stack: slices x rows x columns)
    SOURCE/[<class>/]<case>_mask.png|.tif|.tiff     its mask (or _label, _seg), same shape

The patient is ``<case>`` up to its first ``__``: ``p001__s12.png`` and ``p001__s13.png`` are two
slices of patient ``p001``, kept together in patient-level splits.

Intensities (pixel spacing is not recorded by these formats; the file says 1 mm and notes it):

- TIFF of any integer or float type: values are HU as stored (write int16 or float32 HU).
- 16-bit PNG: HU = value - 32768 (the DeepLesion convention, which PNG needs because it has no
  negative values). A 16-bit PNG whose pixels would mostly fall below -2000 HU is refused, since it
  was written some other way; convert it to an int16 TIFF.
- 8-bit PNG: a windowed display image, not HU. It is read only with ``hu_window`` (``--hu-window``):
  0..255 maps linearly back onto [low, high] -- values outside the window were lost when it was saved.
- Colour images are refused. Masks: any integer image, 0 = background.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from augmentor.data.ingest.volume import (
    Case,
    LabelledVolume,
    as_label_map,
    check_finite,
    check_same_shape,
    file_stem,
    pair_with_masks,
    patient_from_stem,
    relative_name,
)
from augmentor.errors import AugmentorError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
PNG16_HU_OFFSET = -32768.0  # DeepLesion: HU = stored uint16 - 32768
IMPLAUSIBLE_HU = -2000.0  # below air (-1000 HU) with margin


def read_array(path: Path) -> np.ndarray:
    """The pixels of a PNG or TIFF as stored (2-D, or 3-D for a TIFF stack)."""
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as picture:
                picture.load()
                if picture.mode not in {"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F"}:
                    raise AugmentorError(f"{path}: colour image (mode {picture.mode}); save it as greyscale")
                array = np.array(picture)
        else:
            import tifffile

            array = tifffile.imread(path)
    except AugmentorError:
        raise
    except Exception as error:  # truncated or corrupt files: PIL, zlib and tifffile errors
        raise AugmentorError(f"{path}: unreadable or truncated image ({' '.join(str(error).split())[:160]})") from None
    if array.ndim == 3 and array.shape[-1] in (3, 4) and path.suffix.lower() != ".png":
        raise AugmentorError(f"{path}: colour TIFF (shape {array.shape}); save it as greyscale")
    if array.ndim not in (2, 3):
        raise AugmentorError(f"{path}: expected a 2-D slice or a 3-D stack, got shape {array.shape}")
    return array


def to_hu(array: np.ndarray, path: Path, hu_window: tuple[float, float] | None) -> np.ndarray:
    """Stored pixels to HU following the rules in the module docstring."""
    if path.suffix.lower() != ".png":
        values = array.astype(np.float32)
        check_finite(values, path)
        return values
    if array.dtype == np.uint8 or array.dtype == bool:
        if hu_window is None:
            raise AugmentorError(
                f"{path}: 8-bit PNG holds display values, not HU; pass --hu-window LOW,HIGH (the window it was "
                f"saved with) or use 16-bit PNG / TIFF"
            )
        low, high = hu_window
        return (array.astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)).astype(np.float32)
    hu = array.astype(np.float32) + np.float32(PNG16_HU_OFFSET)
    if float(np.median(hu)) < IMPLAUSIBLE_HU:
        raise AugmentorError(
            f"{path}: 16-bit PNG is not HU + 32768 (median {np.median(hu):.0f} HU); save HU as an int16 TIFF"
        )
    return hu


def _read(image_path: Path, mask_path: Path, source: Path, hu_window: tuple[float, float] | None) -> Iterator[LabelledVolume]:
    image = to_hu(read_array(image_path), image_path, hu_window)
    mask = read_array(mask_path)
    check_same_shape(image, mask, mask_path)
    if image.ndim == 2:
        image, mask = image[np.newaxis], mask[np.newaxis]
    yield LabelledVolume(
        image=np.ascontiguousarray(image, dtype=np.float32),
        label_map=as_label_map(mask, mask_path),
        patient_key=patient_from_stem(file_stem(image_path)),
        name=relative_name(image_path, source),
    )


def find_cases(source: Path, files: list[Path], hu_window: tuple[float, float] | None = None) -> list[Case]:
    """Plan one case per image file.

    Args:
        source: the ingest source.
        files: the files below it.
        hu_window: the display window of 8-bit PNGs.

    Returns:
        The cases, in path order.
    """
    return [
        Case(
            name=relative_name(image_path, source),
            path=image_path,
            files=(image_path, mask_path),
            patient_keys=(patient_from_stem(file_stem(image_path)),),
            spacing_mm=None,
            load=partial(_read, image_path, mask_path, source, hu_window),
        )
        for image_path, mask_path in pair_with_masks(files, IMAGE_SUFFIXES)
    ]
