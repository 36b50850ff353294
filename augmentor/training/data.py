"""The training set in memory, on the training device, and the seeded order batches are drawn in.

GAN training sets here are small (a few hundred to a few thousand ROIs), so the whole set is read once
into device tensors: HU as int16 (two bytes a pixel; 60 000 64x64 samples take under 0.5 GB) and masks
as uint8, normalised per batch. A step then costs no loader, worker or host-to-device copy.

Order: batches are consecutive slices of a stream of random permutations of the sample indices (a new
permutation is appended whenever fewer than a batch remain, so a set smaller than a batch works too).
Permutations come from a CPU ``torch.Generator``, so the order is the same on every device; its state
and the not-yet-used indices are the data-order state a checkpoint stores.

Data-parallel: every rank holds the set and draws the same global order; a rank keeps positions
``rank, rank + K, ...`` of each global batch (``torch.utils.data.DistributedSampler``'s layout). The order
depends on neither the number of processes nor the rank, so a run resumed on another world size
continues the same sample stream, and K processes see exactly the samples one process would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from augmentor.data.intensity import normalise
from augmentor.data.provenance import sha256_file, sha256_text
from augmentor.data.reader import H5File
from augmentor.data.schema import SampleKey
from augmentor.errors import AugmentorError
from augmentor.training.distributed import SINGLE_PROCESS, Distributed


@dataclass(frozen=True)
class TrainingSet:
    """The samples a model is trained on, with what its card records about them."""

    hu: torch.Tensor  # (N, C, H, W) int16
    masks: torch.Tensor  # (N, 1, H, W) uint8
    labels: torch.Tensor  # (N,) int64, indices into class_names
    class_names: tuple[str, ...]
    hu_window: tuple[float, float]
    path: Path
    sha256: str  # of the file's bytes
    patients_sha256: str  # of the set of patient ids of the samples used
    num_patients: int
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0)
    modality: str = "CT"
    mask_label_names: tuple[str, ...] = ("background", "lesion")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (int(self.hu.shape[1]), int(self.hu.shape[2]), int(self.hu.shape[3]))

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        return dict(zip(self.class_names, counts, strict=True))


def load_training_set(path: str | Path, classes: Sequence[str] = (), hu_window: tuple[float, float] | None = None) -> TrainingSet:
    """Read an augmentor HDF5 file into memory.

    Args:
        path: the training file.
        classes: the classes to train on, in the model's order (a subset of the file's; empty: all of them).
        hu_window: the normalisation window; default: the file's ``hu_window`` attribute.

    Returns:
        The selected samples, labels re-indexed into ``classes``.
    """
    file = H5File(path)
    info = file.info
    wanted = tuple(classes) or info.class_names
    missing = [name for name in wanted if name not in info.class_names]
    if missing:
        raise AugmentorError(f"{info.path}: has no class {missing[0]!r}; its classes: {', '.join(info.class_names)}")
    if len(set(wanted)) != len(wanted):
        raise AugmentorError(f"data.classes lists a class twice: {list(wanted)}")
    file_labels = file.labels()
    remap = np.full(len(info.class_names), -1, dtype=np.int64)
    for new_index, name in enumerate(wanted):
        remap[info.class_names.index(name)] = new_index
    selected = np.flatnonzero(remap[file_labels] >= 0)
    if selected.size == 0:
        raise AugmentorError(f"{info.path}: no samples of classes {list(wanted)}")
    images, masks, labels = file.read(selected)
    patient_ids = file.patient_ids()[selected]
    file.close()
    window = tuple(float(v) for v in (hu_window if hu_window is not None else info.hu_window))
    return TrainingSet(
        hu=torch.from_numpy(images),
        masks=torch.from_numpy(masks).unsqueeze(1),
        labels=torch.from_numpy(remap[labels]),
        class_names=tuple(wanted),
        hu_window=(window[0], window[1]),
        path=info.path,
        sha256=sha256_file(info.path),
        patients_sha256=sha256_text(str(p) for p in patient_ids),
        num_patients=len(set(patient_ids.tolist())),
        pixel_spacing_mm=info.pixel_spacing_mm,
        modality=info.modality,
        mask_label_names=info.mask_label_names,
    )


class BatchSource(Protocol):
    """What the generic loop draws batches from: seeded and resumable (:class:`InMemoryBatches`, or
    :class:`~augmentor.training.unpaired.UnpairedBatches` for translation)."""

    def next(self, batches: int = 1) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class InMemoryBatches:
    """Batches of a :class:`TrainingSet` on ``device``, in a seeded, resumable order.

    Args:
        data: the training set.
        batch_size: samples per (global) batch.
        seed: seed of the order.
        device: where batches are produced.
        world: this process's rank and the world size (a batch holds this rank's rows of the global batch).
    """

    def __init__(
        self, data: TrainingSet, batch_size: int, seed: int, device: torch.device, world: Distributed = SINGLE_PROCESS
    ) -> None:
        world.local_batch(batch_size)  # refuses a batch that does not divide among the ranks
        self.batch_size = batch_size
        self.world = world
        self.device = device
        self.window = data.hu_window
        self.hu = data.hu.to(device)
        self.masks = data.masks.to(device)
        self.labels = data.labels.to(device)
        self.count = len(data)
        self.order = torch.Generator()
        self.order.manual_seed(seed)
        self.pending = torch.empty(0, dtype=torch.int64, device=device)

    def next(self, batches: int = 1) -> dict[str, torch.Tensor]:
        """The next ``batches * batch_size`` samples as one batch dict (image in [-1, 1], mask, label)."""
        size = batches * self.batch_size
        while self.pending.numel() < size:
            permutation = torch.randperm(self.count, generator=self.order)
            if self.device.type == "cuda":
                permutation = permutation.pin_memory()  # so the copy below is truly asynchronous
            permutation = permutation.to(self.device, non_blocking=True)
            self.pending = torch.cat([self.pending, permutation])
        index, self.pending = self.pending[:size], self.pending[size:]
        index = self.world.rows(index)
        return {
            SampleKey.IMAGE.value: torch.as_tensor(normalise(self.hu[index].float(), self.window)),
            SampleKey.MASK.value: self.masks[index],
            SampleKey.LABEL.value: self.labels[index],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order.get_state(), "pending": self.pending.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order.set_state(state["order"].to("cpu", torch.uint8))
        self.pending = state["pending"].to(self.device, torch.int64)
