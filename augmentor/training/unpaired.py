"""Unpaired batches for image-to-image translation: one batch of each domain per step, cropped at random.

Domains A (phantoms) and B (CT) are drawn independently -- a CycleGAN never sees a matched pair -- each in
its own seeded, resumable order (:class:`~augmentor.training.data.InMemoryBatches`), and each sample is
cropped to the training size at a position drawn from a CPU generator, so the stream is the same on every
device and a checkpoint resumes it exactly. Crops keep the pixel spacing (no resampling): the networks learn
texture and noise at the scale they will translate at, and translate whole slices (fully convolutional).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import torch

from augmentor.data.schema import SampleKey
from augmentor.training.data import InMemoryBatches, TrainingSet


class DomainKey(StrEnum):
    """The fixed keys of an unpaired batch: images in [-1, 1] and label maps of domains A and B."""

    IMAGE_A = "image_a"
    MASK_A = "mask_a"
    IMAGE_B = "image_b"
    MASK_B = "mask_b"


def random_crops(images: torch.Tensor, masks: torch.Tensor, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``size`` x ``size`` crop of each (image, mask) pair at a position drawn from ``generator`` (CPU)."""
    count, _, height, width = images.shape
    if size == height and size == width:
        return images, masks
    rows = torch.randint(0, height - size + 1, (count,), generator=generator).tolist()
    columns = torch.randint(0, width - size + 1, (count,), generator=generator).tolist()
    crop_images = torch.stack([images[i, :, r : r + size, c : c + size] for i, (r, c) in enumerate(zip(rows, columns, strict=True))])
    crop_masks = torch.stack([masks[i, :, r : r + size, c : c + size] for i, (r, c) in enumerate(zip(rows, columns, strict=True))])
    return crop_images, crop_masks


class UnpairedBatches:
    """Batches of two training sets drawn independently (unpaired), cropped to ``crop_size`` at random.

    Each domain has its own seeded order (an :class:`InMemoryBatches`); crop positions come from a third
    CPU generator, so the whole stream is the same on every device and resumes exactly.

    Args:
        domain_a, domain_b: the training sets (same image size; normalised with ``window``).
        batch_size: samples of each domain per batch.
        crop_size: side of the square crops (the images' side: no cropping).
        seed: seed of the orders and crop positions.
        device: where batches are produced.
    """

    def __init__(self, domain_a: TrainingSet, domain_b: TrainingSet, batch_size: int, crop_size: int, seed: int, device: torch.device) -> None:
        self.a = InMemoryBatches(domain_a, batch_size, seed, device)
        self.b = InMemoryBatches(domain_b, batch_size, seed + 1, device)
        self.crop_size = crop_size
        self.crops = torch.Generator()
        self.crops.manual_seed(seed + 2)

    def next(self, batches: int = 1) -> dict[str, torch.Tensor]:
        image, mask = SampleKey.IMAGE.value, SampleKey.MASK.value
        a, b = self.a.next(batches), self.b.next(batches)
        image_a, mask_a = random_crops(a[image], a[mask], self.crop_size, self.crops)
        image_b, mask_b = random_crops(b[image], b[mask], self.crop_size, self.crops)
        return {DomainKey.IMAGE_A.value: image_a, DomainKey.MASK_A.value: mask_a,
                DomainKey.IMAGE_B.value: image_b, DomainKey.MASK_B.value: mask_b}

    def state_dict(self) -> dict[str, Any]:
        return {"a": self.a.state_dict(), "b": self.b.state_dict(), "crops": self.crops.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.a.load_state_dict(state["a"])
        self.b.load_state_dict(state["b"])
        self.crops.set_state(state["crops"].to("cpu", torch.uint8))
