"""NumPy ``.npz`` archives: one volume per file, or a stack of ready samples.

Layout: ``SOURCE/[<class>/]<case>.npz``. Arrays are loaded with ``allow_pickle=False``: an archive that
holds Python objects is refused, never unpickled. Strings must be NumPy string arrays (``np.str_``).

A *volume* archive (one scan or slice and its label map)::

    image          (H, W) or (Z, H, W)  HU, any numeric type
    mask           same shape           integer labels, 0 = background
    spacing_mm     optional (2,) [row, column] or (3,) [slice, row, column] in mm
    patient_id     optional ()  str     default: the file name up to its first "__"
    class          optional ()  str     the class of all its lesions

A *samples* archive (samples that already are ROIs, e.g. exported from another tool)::

    images            (N, H, W) or (N, 1, H, W)  HU
    masks             (N, H, W)                  labels
    classes           optional (N,) str          or labels (N,) int with class_names (K,) str
    patient_ids       optional (N,) str          default: the file name up to its first "__"
    pixel_spacing_mm  optional (2,)
    mask_label_names  optional (K,) str          keep the masks' labels as they are

Each sample of a samples archive is one slice: taken whole when it is ``roi_size`` square, else cut
around its lesions like any slice.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.data.ingest.volume import (
    Case,
    LabelledVolume,
    as_label_map,
    check_finite,
    check_same_shape,
    file_stem,
    patient_from_stem,
    relative_name,
)
from augmentor.errors import AugmentorError

VOLUME_KEYS = ("image", "mask")
SAMPLES_KEYS = ("images", "masks")


class _Archive:
    """Lazy access to one archive's arrays with one-line errors naming the file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._npz = np.load(path, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
            raise AugmentorError(f"{path}: unreadable or truncated .npz ({' '.join(str(error).split())[:160]})") from None
        if not isinstance(self._npz, np.lib.npyio.NpzFile):
            raise AugmentorError(f"{path}: not an .npz archive")
        self.keys = set(self._npz.files)

    def get(self, key: str) -> np.ndarray | None:
        if key not in self.keys:
            return None
        try:
            return np.asarray(self._npz[key])
        except ValueError as error:
            if "pickle" in str(error):
                raise AugmentorError(f"{self.path}: key {key!r} holds Python objects; refusing to unpickle (store NumPy arrays)") from None
            raise AugmentorError(f"{self.path}: key {key!r} unreadable ({error})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise AugmentorError(f"{self.path}: key {key!r} unreadable or truncated ({' '.join(str(error).split())[:160]})") from None

    def require(self, key: str) -> np.ndarray:
        value = self.get(key)
        if value is None:
            raise AugmentorError(f"{self.path}: missing key {key!r}")
        return value

    def strings(self, key: str, count: int | None = None) -> list[str] | None:
        value = self.get(key)
        if value is None:
            return None
        if value.dtype.kind not in "US":
            raise AugmentorError(f"{self.path}: key {key!r} must hold strings, got {value.dtype}")
        texts = [v.decode() if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]
        if count is not None and len(texts) != count:
            raise AugmentorError(f"{self.path}: key {key!r} has {len(texts)} entries for {count} samples")
        return texts

    def close(self) -> None:
        self._npz.close()


def _kind(archive: _Archive) -> str:
    if all(key in archive.keys for key in SAMPLES_KEYS):
        return "samples"
    if all(key in archive.keys for key in VOLUME_KEYS):
        return "volume"
    raise AugmentorError(
        f"{archive.path}: expected keys 'image' and 'mask' (a volume) or 'images' and 'masks' (samples); found {sorted(archive.keys)}"
    )


def _spacing(archive: _Archive, key: str) -> tuple[float, float] | None:
    value = archive.get(key)
    if value is None:
        return None
    flat = value.astype(np.float64).reshape(-1)
    if flat.size not in (2, 3) or not np.isfinite(flat).all() or (flat <= 0).any():
        raise AugmentorError(f"{archive.path}: key {key!r} must be 2 or 3 positive numbers, got {value.tolist()}")
    return float(flat[-2]), float(flat[-1])


def _sample_classes(archive: _Archive, count: int) -> list[str] | None:
    classes = archive.strings("classes", count)
    if classes is not None:
        return classes
    labels = archive.get("labels")
    if labels is None:
        return None
    names = archive.strings("class_names")
    if names is None:
        raise AugmentorError(f"{archive.path}: key 'labels' needs 'class_names' to name them")
    if labels.dtype.kind not in "iu" or labels.shape != (count,):
        raise AugmentorError(f"{archive.path}: key 'labels' must be ({count},) integers")
    if count and (labels.min() < 0 or labels.max() >= len(names)):
        raise AugmentorError(f"{archive.path}: labels out of range for {len(names)} class names")
    return [names[int(label)] for label in labels]


def _sample_count(archive: _Archive) -> int:
    # Reading 'images' here would load the whole stack; masks are 4x smaller and give the count.
    masks = archive.require("masks")
    if masks.ndim != 3:
        raise AugmentorError(f"{archive.path}: key 'masks' must be (N, H, W), got shape {masks.shape}")
    return int(masks.shape[0])


def _read_volume(archive: _Archive, source: Path) -> Iterator[LabelledVolume]:
    image = archive.require("image")
    mask = archive.require("mask")
    if image.dtype.kind not in "iuf" or image.ndim not in (2, 3):
        raise AugmentorError(f"{archive.path}: key 'image' must be a 2-D or 3-D numeric array, got {image.dtype} {image.shape}")
    check_same_shape(image, mask, archive.path)
    values = image.astype(np.float32)
    check_finite(values, archive.path)
    if values.ndim == 2:
        values, mask = values[np.newaxis], mask[np.newaxis]
    patient = (archive.strings("patient_id") or [patient_from_stem(file_stem(archive.path))])[0]
    recorded_class = archive.strings("class")
    own_class = recorded_class[0] if recorded_class else None
    yield LabelledVolume(
        image=values,
        label_map=as_label_map(mask, archive.path),
        patient_key=patient,
        name=relative_name(archive.path, source),
        own_class=own_class,
    )


def _read_samples(archive: _Archive, source: Path) -> Iterator[LabelledVolume]:
    count = _sample_count(archive)
    images = archive.require("images")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dtype.kind not in "iuf" or images.ndim != 3:
        raise AugmentorError(f"{archive.path}: key 'images' must be (N, H, W) or (N, 1, H, W) numbers, got {images.dtype} {images.shape}")
    masks = archive.require("masks")
    check_same_shape(images, masks, archive.path)
    values = images.astype(np.float32)
    check_finite(values, archive.path)
    label_maps = as_label_map(masks, archive.path)
    classes = _sample_classes(archive, count)
    patients = archive.strings("patient_ids", count) or [patient_from_stem(file_stem(archive.path))] * count
    mask_names = archive.strings("mask_label_names")
    name = relative_name(archive.path, source)
    for index in range(count):
        yield LabelledVolume(
            image=values[index : index + 1],
            label_map=label_maps[index : index + 1],
            patient_key=patients[index],
            name=f"{name}[{index}]",
            own_class=classes[index] if classes is not None else None,
            mask_label_names=tuple(mask_names) if mask_names is not None else None,
        )


def _loader(path: Path, source: Path) -> Any:
    def load() -> Iterator[LabelledVolume]:
        archive = _Archive(path)
        try:
            if _kind(archive) == "samples":
                yield from _read_samples(archive, source)
            else:
                yield from _read_volume(archive, source)
        finally:
            archive.close()

    return load


def find_cases(source: Path, files: list[Path]) -> list[Case]:
    """Plan one case per ``.npz`` (reads only the small keys).

    Args:
        source: the ingest source.
        files: the files below it.

    Returns:
        The cases, in path order.
    """
    cases = []
    for path in sorted(p for p in files if p.suffix.lower() == ".npz" and not p.name.startswith(".")):
        archive = _Archive(path)
        try:
            default_patient = patient_from_stem(file_stem(path))
            if _kind(archive) == "samples":
                count = _sample_count(archive)
                patients = tuple(archive.strings("patient_ids", count) or [default_patient])
                classes = tuple(sorted(set(_sample_classes(archive, count) or [])))
                spacing = _spacing(archive, "pixel_spacing_mm")
                mask_names = archive.strings("mask_label_names")
            else:
                patients = tuple(archive.strings("patient_id") or [default_patient])
                classes = tuple(archive.strings("class") or [])
                spacing = _spacing(archive, "spacing_mm")
                mask_names = None
        finally:
            archive.close()
        cases.append(
            Case(
                name=relative_name(path, source),
                path=path,
                files=(path,),
                patient_keys=tuple(dict.fromkeys(patients)),
                spacing_mm=spacing,
                own_classes=classes,
                mask_label_names=tuple(mask_names) if mask_names is not None else None,
                load=_loader(path, source),
            )
        )
    return cases
