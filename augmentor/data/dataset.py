"""The plug-in dataset: augmentor HDF5 files as a PyTorch / MONAI dataset.

``H5Dataset`` returns MONAI-style dicts with fixed keys (:class:`~augmentor.data.schema.SampleKey`):

- ``image``: float32 tensor (C, H, W), HU clipped to the window and mapped to [-1, 1];
- ``mask``: float32 tensor (1, H, W) of mask labels (channel-first, so MONAI dictionary transforms
  such as ``RandAffined(keys=["image", "mask"], mode=["bilinear", "nearest"])`` move both together);
- ``label``: int64 scalar tensor; ``source``: "real" / "synthetic" / ...; ``patient_id``: str;
  ``index``: position in the dataset.

It implements ``__getitems__`` so a DataLoader fetches a whole batch per call, reading each file once
per batch in increasing order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, default_collate

from augmentor.data.intensity import normalise
from augmentor.data.reader import H5File
from augmentor.data.schema import SampleKey
from augmentor.errors import AugmentorError

Sample = dict[str, Any]

# Files that decode to at most this much are held in memory by default: through a 2-worker DataLoader
# they run at about the speed of an in-memory tensor dataset, while reading and decoding every sample
# from an lzf file runs at ~0.7 of it (bench/dataset.py).
CACHE_LIMIT_BYTES = 2 << 30
Transform = Callable[[Sample], Sample]


class H5Dataset(Dataset[Sample]):
    """One or more augmentor HDF5 files as one dataset.

    Args:
        paths: one path or several; all must share class names and image shape.
        transform: applied to each sample dict (e.g. a MONAI ``Compose`` of dictionary transforms).
        window: (low, high) HU window; defaults to the first file's ``hu_window`` attribute.
        cache: hold the decoded images and masks in memory (one sequential read, shared with
            forked DataLoader workers) instead of reading each sample from disk. ``None`` (default)
            caches when all files together decode to at most ``CACHE_LIMIT_BYTES`` (2 GiB).
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        transform: Transform | None = None,
        window: tuple[float, float] | None = None,
        cache: bool | None = None,
    ) -> None:
        path_list = [paths] if isinstance(paths, str | Path) else list(paths)
        if not path_list:
            raise AugmentorError("H5Dataset needs at least one file")
        self.files = [H5File(path) for path in path_list]
        first = self.files[0].info
        for file in self.files[1:]:
            if file.info.class_names != first.class_names:
                raise AugmentorError(
                    f"{file.path}: classes {list(file.info.class_names)} differ from {first.path}'s {list(first.class_names)}"
                )
            if file.info.image_shape != first.image_shape:
                raise AugmentorError(f"{file.path}: image shape {file.info.image_shape} differs from {first.image_shape}")
        self.class_names = first.class_names
        self.image_shape = first.image_shape
        self.window: tuple[float, float] = (float(window[0]), float(window[1])) if window is not None else first.hu_window
        self.transform = transform
        self._offsets = np.cumsum([0] + [len(file) for file in self.files]).tolist()
        decoded = sum(file.decoded_bytes for file in self.files)
        self.cached = decoded <= CACHE_LIMIT_BYTES if cache is None else cache
        for file in self.files:
            if self.cached:
                file.load()
            else:
                file.index_chunks()  # here, once, rather than in every DataLoader worker

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def labels(self) -> np.ndarray:
        """Every sample's class label, (N,) int64, without reading images."""
        return np.concatenate([file.labels() for file in self.files])

    def patient_ids(self) -> np.ndarray:
        """Every sample's patient id, (N,) str."""
        return np.concatenate([file.patient_ids() for file in self.files])

    def sources(self) -> np.ndarray:
        return np.concatenate([np.full(len(file), file.info.source.value, dtype=object) for file in self.files])

    def __getitem__(self, index: int) -> Sample:
        return self.__getitems__([int(index)])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        requested = np.asarray(indices, dtype=np.int64).reshape(-1)
        index = np.where(requested < 0, requested + len(self), requested)
        outside = (index < 0) | (index >= len(self))
        if outside.any():
            raise IndexError(f"index {int(requested[np.argmax(outside)])} out of range for {len(self)} samples")
        # Per batch, not per sample: this loop is what a DataLoader worker runs for every batch.
        file_of = np.searchsorted(self._offsets, index, side="right") - 1
        image_key, mask_key, label_key = SampleKey.IMAGE.value, SampleKey.MASK.value, SampleKey.LABEL.value
        source_key, patient_key, index_key = SampleKey.SOURCE.value, SampleKey.PATIENT_ID.value, SampleKey.INDEX.value
        samples: list[Sample] = [{} for _ in range(index.size)]
        for file_index in np.unique(file_of).tolist():
            positions = np.flatnonzero(file_of == file_index)
            file = self.files[file_index]
            local = index[positions] - self._offsets[file_index]
            images, masks, labels = file.read(local)
            images_t = normalise(torch.from_numpy(images), self.window)  # int16 -> float32
            masks_t = torch.from_numpy(masks).unsqueeze(1).float()
            source = file.info.source.value
            for position, image, mask, label, patient_id, asked in zip(
                positions.tolist(), images_t.unbind(0), masks_t.unbind(0), torch.from_numpy(labels).unbind(0),
                file.patient_ids()[local].tolist(), requested[positions].tolist(), strict=True,
            ):
                samples[position] = {
                    image_key: image, mask_key: mask, label_key: label, source_key: source, patient_key: str(patient_id), index_key: asked
                }
        if self.transform is not None:
            return [self.transform(sample) for sample in samples]
        return samples


def balanced_subset_indices(labels: np.ndarray, counts: dict[int, int], seed: int) -> np.ndarray:
    """Pick ``counts[c]`` indices of class c from ``labels`` (without replacement where possible)."""
    generator = np.random.default_rng(seed)
    chosen = []
    for label, count in sorted(counts.items()):
        pool = np.flatnonzero(labels == label)
        if count <= 0:
            continue
        if pool.size == 0:
            raise AugmentorError(f"no samples of class index {label} to draw {count} from")
        replace = count > pool.size
        chosen.append(generator.choice(pool, size=count, replace=replace))
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def mix(real: H5Dataset, synthetic: H5Dataset, ratio: float, seed: int = 0, per_class: bool = True) -> ConcatDataset[Sample]:
    """Real samples plus ``ratio`` times as many synthetic ones.

    Args:
        real: the real training data.
        synthetic: a pool of synthetic samples with the same class names.
        ratio: synthetic samples per real sample (0 gives the real data alone; 2 gives x2).
        seed: which synthetic samples are drawn.
        per_class: match the real class counts (``ratio`` x real count of each class); otherwise draw
            uniformly from the pool.

    Returns:
        A dataset of the real samples followed by the drawn synthetic ones.
    """
    if real.class_names != synthetic.class_names:
        raise AugmentorError(f"real classes {list(real.class_names)} differ from synthetic {list(synthetic.class_names)}")
    if ratio < 0:
        raise AugmentorError(f"ratio must be >= 0, got {ratio}")
    if ratio == 0:
        return ConcatDataset([real])
    real_labels = real.labels()
    if per_class:
        counts = {c: round(ratio * int((real_labels == c).sum())) for c in range(real.num_classes)}
        pool_labels = synthetic.labels()
        missing = [real.class_names[c] for c, count in counts.items() if count > 0 and not (pool_labels == c).any()]
        if missing:
            raise AugmentorError(
                f"the synthetic pool has no {', '.join(repr(n) for n in missing)} samples; generate every class of the real "
                "data, or pass per_class=False to draw from the pool as it is"
            )
        indices = balanced_subset_indices(pool_labels, counts, seed)
    else:
        total = round(ratio * len(real))
        indices = np.sort(np.random.default_rng(seed).choice(len(synthetic), size=total, replace=total > len(synthetic)))
    return ConcatDataset([real, Subset(synthetic, indices.tolist())])


@dataclass(frozen=True)
class Stage:
    """One stage of a training schedule: train on ``dataset`` for ``epochs`` epochs."""

    name: str
    dataset: Dataset[Sample]
    epochs: int


def pretrain_then_finetune(synthetic: Dataset[Sample], real: Dataset[Sample], pretrain_epochs: int, finetune_epochs: int) -> list[Stage]:
    """The schedule of Onishi et al. 2019: pretrain on synthetic data, then fine-tune on the real data."""
    return [Stage("pretrain-synthetic", synthetic, pretrain_epochs), Stage("finetune-real", real, finetune_epochs)]


def collate(samples: Iterable[Sample]) -> Sample:
    """Stack a list of sample dicts into a batch dict: torch's ``default_collate`` (tensors stacked,
    in shared memory when run in a DataLoader worker, so the batch is not copied again to reach the
    main process; numbers as a tensor; strings listed)."""
    return default_collate(list(samples))
