"""Classic augmentation (arm b and the arms built on it): MONAI dictionary transforms.

Flips, rotation + scaling (one affine resampling), a coarse elastic deformation and small intensity
shifts / scalings, as in the "classic augmentation" baseline of Frid-Adar et al. 2018 (translation,
rotation, flipping, scaling). Spatial transforms move ``image`` and ``mask`` together (bilinear for the
image, nearest for the mask, so labels stay labels); intensity transforms touch the image only.
"""

from __future__ import annotations

import math
from typing import Any

from evaluation.recipe import AugmentationSection

KEYS = ("image", "mask")


def classic_augmentation(options: AugmentationSection, image_size: int) -> Any:
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
