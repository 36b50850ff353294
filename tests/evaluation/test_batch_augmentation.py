"""Batched classic augmentation: exact where nothing is drawn, image and mask together, labels stay labels,
seeded, and the same maths as MONAI's transforms (checked on chosen parameters)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from evaluation.batch_augmentation import (
    BatchAugmentation,
    BatchParameters,
    augment_batch,
    elastic_displacement,
    elastic_spacing,
    sample_parameters,
)
from evaluation.recipe import AugmentationSection

SIZE = 16
OFF = AugmentationSection(
    flip=False, rotate_degrees=0.0, scale=0.0, affine_probability=0.0, elastic_probability=0.0, elastic_magnitude=0.0, intensity_shift=0.0, intensity_scale=0.0
)
STRONG = AugmentationSection(rotate_degrees=45.0, scale=0.2, affine_probability=1.0, elastic_probability=1.0, elastic_magnitude=2.0)


def blobs(batch: int = 8, labels: tuple[int, ...] = (3, 7), dtype: torch.dtype = torch.uint8) -> tuple[torch.Tensor, torch.Tensor]:
    """Off-centre discs (one per label, placed per sample) on a noisy background; image (B, 1, S, S), mask (B, S, S)."""
    generator = torch.Generator().manual_seed(123)
    rows, columns = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    masks = torch.zeros(batch, SIZE, SIZE, dtype=dtype)
    for label in labels:
        centre = torch.randint(3, SIZE - 3, (batch, 2, 1, 1), generator=generator)
        disc = (rows - centre[:, 0]) ** 2 + (columns - centre[:, 1]) ** 2 <= 5
        masks[disc] = label
    images = 0.1 * torch.rand(batch, 1, SIZE, SIZE, generator=generator) - 0.5 + 0.1 * masks[:, None].float()
    return images, masks


def augment(options: AugmentationSection, images: torch.Tensor, masks: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return BatchAugmentation(options, SIZE)(images, masks, torch.Generator().manual_seed(seed))


def test_all_options_off_is_the_identity() -> None:
    images, masks = blobs()
    out_images, out_masks = augment(OFF, images, masks)
    assert torch.equal(out_images, images) and torch.equal(out_masks, masks)
    assert out_images.dtype == images.dtype and out_masks.dtype == masks.dtype


def test_zero_affine_and_elastic_probability_leave_the_geometry_alone() -> None:
    images, masks = blobs()
    options = dataclasses.replace(STRONG, flip=False, affine_probability=0.0, elastic_probability=0.0)
    out_images, out_masks = augment(options, images, masks)
    assert torch.equal(out_masks, masks)
    # only the intensity transforms ran: each sample is (x + shift) * (1 + factor) of its input
    spatial_only = dataclasses.replace(options, intensity_shift=0.0, intensity_scale=0.0)
    assert torch.equal(augment(spatial_only, images, masks)[0], images)
    flat_in, flat_out = images.flatten(1), out_images.flatten(1)
    gain = (flat_out[:, 1] - flat_out[:, 0]) / (flat_in[:, 1] - flat_in[:, 0])
    assert torch.allclose(flat_out, (flat_in - flat_in[:, :1]) * gain[:, None] + flat_out[:, :1], atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_masks_keep_only_their_labels(dtype: torch.dtype) -> None:
    images, masks = blobs(dtype=dtype)
    _, out_masks = augment(STRONG, images, masks)
    assert out_masks.dtype == dtype
    assert set(out_masks.unique().tolist()) <= {0, 3, 7}
    assert not torch.equal(out_masks, masks)


def test_image_and_mask_move_together() -> None:
    images, masks = blobs(batch=16, labels=(1,))
    images = masks[:, None].float() * 0.8  # a bright blob exactly where the label is
    options = dataclasses.replace(STRONG, rotate_degrees=90.0, intensity_shift=0.0, intensity_scale=0.0)
    out_images, out_masks = augment(options, images, masks)
    coordinates = torch.stack(torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")).float()

    def centroid(weights: torch.Tensor) -> torch.Tensor:  # (B, S, S) -> (B, 2)
        return (weights[:, None] * coordinates).sum((-2, -1)) / weights.sum((-2, -1))[:, None]

    before, mask_after, image_after = centroid(masks.float()), centroid(out_masks.float()), centroid(out_images[:, 0])
    assert (mask_after - before).norm(dim=1).median() > 2.0  # the blobs did move
    assert (mask_after - image_after).norm(dim=1).max() < 0.5  # ... and the image moved with its mask


def test_same_seed_same_bytes_other_seed_other_result() -> None:
    images, masks = blobs()
    first, again, other = augment(STRONG, images, masks, 5), augment(STRONG, images, masks, 5), augment(STRONG, images, masks, 6)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_a_sample_depends_on_the_generator_state_not_on_the_batch_size() -> None:
    images, masks = blobs()
    whole = augment(STRONG, images, masks, 9)
    head = augment(STRONG, images[:3], masks[:3], 9)
    assert torch.equal(whole[0][:3], head[0]) and torch.equal(whole[1][:3], head[1])


def test_flip_only_gives_exactly_flipped_copies() -> None:
    images, masks = blobs(batch=32)
    out_images, out_masks = augment(dataclasses.replace(OFF, flip=True), images, masks)
    seen = set()
    for image, mask, out_image, out_mask in zip(images, masks, out_images, out_masks, strict=True):
        matches = [dims for dims in [(), (-2,), (-1,), (-2, -1)] if torch.equal(out_image, image.flip(dims) if dims else image)]
        assert len(matches) == 1
        dims = matches[0]
        assert torch.equal(out_mask, mask.flip(dims) if dims else mask)  # the same axes (counted from the end)
        seen.add(dims)
    assert len(seen) == 4


def test_intensity_transforms_leave_masks_alone() -> None:
    images, masks = blobs()
    options = dataclasses.replace(OFF, intensity_shift=0.2, intensity_scale=0.2)
    out_images, out_masks = augment(options, images, masks)
    assert torch.equal(out_masks, masks)
    assert not torch.equal(out_images, images)


def test_parameters_follow_the_recipe() -> None:
    options = AugmentationSection(rotate_degrees=10.0, scale=0.1, affine_probability=0.7, elastic_probability=0.2, elastic_magnitude=1.0)
    parameters = sample_parameters(options, 4000, SIZE, torch.Generator().manual_seed(0))
    assert parameters.rotation is not None and parameters.zoom is not None and parameters.control_offsets is not None
    assert parameters.flip_rows is not None and parameters.shift is not None and parameters.factor is not None
    affine = parameters.rotation != 0
    elastic = parameters.control_offsets.flatten(1).abs().amax(1) > 0
    for fraction, expected in [(affine, 0.7), (elastic, 0.2), (parameters.flip_rows, 0.5), (parameters.shift != 0, 0.5)]:
        assert abs(fraction.double().mean().item() - expected) < 0.03
    assert parameters.rotation.abs().max() <= torch.pi / 18 and (parameters.zoom - 1).abs().max() <= 0.1
    assert parameters.rotation.abs().max() > 0.95 * torch.pi / 18  # spans the range, not a fraction of it
    assert parameters.shift.abs().max() <= 0.05 and parameters.factor.abs().max() <= 0.05
    assert torch.equal(parameters.resampled, affine | elastic)
    assert 0.54 < parameters.control_offsets[elastic].std().item() < 0.62  # magnitude U(0, 1) times N(0, 1): sqrt(1/3)


# MONAI as the reference for the spatial maths, on chosen parameters.


def test_rotation_and_zoom_match_monai_affine() -> None:
    from monai.transforms import Affine

    images, masks = blobs(batch=1)
    angle, zoom = 0.4, 1.15
    parameters = BatchParameters(rotation=torch.tensor([angle]), zoom=torch.tensor([zoom]), resampled=torch.tensor([True]))
    out_images, out_masks = augment_batch(images, masks, parameters)
    reference = {
        mode: torch.as_tensor(Affine(rotate_params=angle, scale_params=(zoom, zoom), padding_mode="border", mode=mode, image_only=True)(data))
        for mode, data in [("bilinear", images[0]), ("nearest", masks.float())]
    }
    torch.testing.assert_close(out_images[0], reference["bilinear"], atol=1e-5, rtol=0)
    assert torch.equal(out_masks.float(), reference["nearest"])


def _monai_elastic_grid(offsets: torch.Tensor) -> torch.Tensor:
    """The sampling grid MONAI's Rand2DElastic builds (pixels, (row, column)) from control-point offsets."""
    from monai.transforms import CenterSpatialCrop
    from monai.transforms.utils import create_control_grid

    spacing = elastic_spacing(SIZE)
    control = torch.as_tensor(create_control_grid((SIZE, SIZE), (spacing, spacing), backend="torch")).float()[:2] + offsets
    upsampled = F.interpolate(control[None], scale_factor=[spacing, spacing], mode="bicubic", align_corners=False, recompute_scale_factor=True)
    return torch.as_tensor(CenterSpatialCrop(roi_size=(SIZE, SIZE))(upsampled[0]))


def test_elastic_displacement_is_monai_rand2delastic_without_its_bicubic_ripple() -> None:
    from monai.transforms import Rand2DElastic, Resample

    images, _ = blobs(batch=1)
    elastic = Rand2DElastic(spacing=elastic_spacing(SIZE), magnitude_range=(0.0, 2.0), prob=1.0, padding_mode="border", spatial_size=(SIZE, SIZE))
    elastic.set_random_state(3)
    expected = torch.as_tensor(elastic(images[0]))
    offsets = torch.as_tensor(elastic.deform_grid.rand_mag * elastic.deform_grid.random_offset).float()
    monai_grid = _monai_elastic_grid(offsets)
    # the helper is MONAI's grid: resampling through it reproduces Rand2DElastic
    resampled = torch.as_tensor(Resample()(images[0], torch.cat([monai_grid, torch.ones(1, SIZE, SIZE)]), padding_mode="border"))
    torch.testing.assert_close(resampled, expected)
    displacement = elastic_displacement(offsets[None], SIZE)[0]
    torch.testing.assert_close(displacement, monai_grid - _monai_elastic_grid(torch.zeros_like(offsets)), atol=1e-5, rtol=0)
    assert displacement.abs().max() > 0.5


def test_rejects_images_of_another_size() -> None:
    images, masks = blobs()
    with pytest.raises(ValueError, match="images must be"):
        BatchAugmentation(STRONG, SIZE + 1)(images, masks, torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_without_host_syncs() -> None:
    images, masks = blobs(batch=32)
    augmentation = BatchAugmentation(STRONG, SIZE)
    cpu = augmentation(images, masks, torch.Generator().manual_seed(1))
    cuda_images, cuda_masks = images.cuda(), masks.cuda()
    augmentation(cuda_images, cuda_masks, torch.Generator().manual_seed(1))  # warm-up (pinned memory, kernels)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        on_device = augmentation(cuda_images, cuda_masks, torch.Generator().manual_seed(1))
        on_device_generator = augmentation(cuda_images, cuda_masks, torch.Generator("cuda").manual_seed(1))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert on_device[0].device.type == "cuda" and on_device_generator[1].dtype == torch.uint8
    torch.testing.assert_close(on_device[0].cpu(), cpu[0], atol=1e-4, rtol=0)
    assert (on_device[1].cpu() != cpu[1]).float().mean() < 0.01  # nearest may round a tie differently
