"""Classic augmentation per batch: the batched tensor version (evaluation/batch_augmentation.py) against the
per-sample MONAI ``Compose`` of dictionary transforms (the way the evaluation used to augment, kept here
as the baseline), on the same batch.

The default recipe's ``[augmentation]`` section, a batch of 32 64×64 lesion-like samples (image and
mask), one torch thread, plain tensors on the MONAI side (no MetaTensor bookkeeping, as the evaluation
ran it). Each repeat times ``--batches`` batches of each side back to back, alternating which goes first,
so drifting machine load hits both alike; the figures are medians over ``--repeats`` repeats.

    python bench/augmentation.py [--batch-size 32] [--image-size 64] [--batches 20] [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import record, spread
from evaluation.batch_augmentation import BatchAugmentation
from evaluation.recipe import AugmentationSection

KEYS = ("image", "mask")


def monai_per_sample(options: AugmentationSection, image_size: int) -> Any:
    """A MONAI ``Compose`` of random dictionary transforms (seed it with ``set_random_state``).

    Args:
        options: the recipe's ``[augmentation]`` section.
        image_size: height = width of the samples (the affine grid is cached for it).

    Returns:
        A callable on sample dicts with ``image`` (C, H, W) and ``mask`` (1, H, W) tensors.
    """
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        RandAffined,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = list(KEYS)
    transforms: list[Any] = []
    if options.flip:
        transforms += [RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1)]
    if options.affine_probability > 0 and (options.rotate_degrees > 0 or options.scale > 0):
        transforms.append(
            RandAffined(
                keys,
                prob=options.affine_probability,
                rotate_range=math.radians(options.rotate_degrees),
                scale_range=options.scale,
                mode=("bilinear", "nearest"),
                padding_mode="border",  # ROIs sit inside tissue: repeat the edge rather than insert air
                spatial_size=(image_size, image_size),
                cache_grid=True,
            )
        )
    if options.elastic_probability > 0 and options.elastic_magnitude > 0:
        transforms.append(
            Rand2DElasticd(
                keys,
                spacing=(max(image_size // 4, 2),) * 2,  # a 4x4 grid of control points
                magnitude_range=(0.0, options.elastic_magnitude),
                prob=options.elastic_probability,
                mode=("bilinear", "nearest"),
                padding_mode="border",
                spatial_size=(image_size, image_size),
            )
        )
    if options.intensity_shift > 0:
        transforms.append(RandShiftIntensityd(["image"], offsets=options.intensity_shift, prob=0.5))
    if options.intensity_scale > 0:
        transforms.append(RandScaleIntensityd(["image"], factors=options.intensity_scale, prob=0.5))
    return Compose(transforms)


def lesion_batch(batch_size: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark discs of random size and place in a noisy field, in normalised units; image (B, 1, S, S), mask (B, S, S) uint8."""
    generator = torch.Generator().manual_seed(0)
    rows, columns = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")
    centre = image_size / 2 + torch.randn(batch_size, 2, 1, 1, generator=generator) * image_size / 10
    radius = image_size * (0.1 + 0.2 * torch.rand(batch_size, 1, 1, generator=generator))
    masks = ((rows - centre[:, 0]) ** 2 + (columns - centre[:, 1]) ** 2 <= radius**2).to(torch.uint8)
    images = 0.2 - 0.5 * masks.float() + 0.05 * torch.randn(batch_size, image_size, image_size, generator=generator)
    return images[:, None].clamp(-1, 1), masks


def seconds_per_batch(step: Callable[[], object], batches: int, synchronize: Callable[[], None]) -> float:
    synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    synchronize()
    return (time.perf_counter() - start) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20, help="batches timed per side per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="device of the batched side (MONAI runs per sample on the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from monai.data import set_track_meta

    set_track_meta(False)

    options = AugmentationSection()
    images, masks = lesion_batch(args.batch_size, args.image_size)
    monai_transform = monai_per_sample(options, args.image_size)
    monai_transform.set_random_state(seed=0)
    samples = [{"image": image, "mask": mask[None]} for image, mask in zip(images, masks, strict=True)]

    def per_sample() -> object:
        return [monai_transform(dict(sample)) for sample in samples]

    device = torch.device(args.device)
    batched_transform = BatchAugmentation(options, args.image_size)
    generator = torch.Generator().manual_seed(0)
    device_images, device_masks = images.to(device), masks.to(device)

    def batched() -> object:
        return batched_transform(device_images, device_masks, generator)

    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in (per_sample, batched):  # warm-up: imports, grid caches, kernels
        seconds_per_batch(step, 2, synchronize)
    times: dict[str, list[float]] = {"per_sample": [], "batched": []}
    for repeat in range(args.repeats):
        order = [("per_sample", per_sample), ("batched", batched)]
        for name, step in order if repeat % 2 == 0 else order[::-1]:
            times[name].append(seconds_per_batch(step, args.batches, synchronize))
    per_sample_ms, batched_ms = (1000 * statistics.median(times[name]) for name in ("per_sample", "batched"))
    speedups = [a / b for a, b in zip(times["per_sample"], times["batched"], strict=True)]
    speedup = statistics.median(speedups)
    print(
        f"{args.batch_size} × {args.image_size}×{args.image_size}, 1 torch thread: "
        f"per-sample MONAI Compose {per_sample_ms:.2f} ms/batch, batched ({device.type}) {batched_ms:.2f} ms/batch, "
        f"speed-up {speedup:.1f}× (median of {args.repeats} interleaved repeats of {args.batches} batches)"
    )
    record(f"batched augmentation speed-up over per-sample MONAI (batch {args.batch_size})", speedup, spread_text=spread(speedups, 1), unit="x")


if __name__ == "__main__":
    main()
