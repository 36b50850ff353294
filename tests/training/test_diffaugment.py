"""DiffAugment: the same geometric transform on image and mask, colour on the image only, seeded, differentiable."""

from __future__ import annotations

import pytest
import torch

from augmentor.training.diffaugment import (
    AugmentParameters,
    DiffAugment,
    augment,
    cutout,
    translate,
    translate_reflect,
)


def pairs_with_mask_equal_to_image(batch: int = 6, size: int = 16) -> torch.Tensor:
    image = torch.rand(batch, 1, size, size) * 2 - 1
    return torch.cat([image, image], dim=1)


@pytest.mark.parametrize("policy", [["translation"], ["cutout"], ["translation", "cutout"], ["translation-reflect"]])
def test_geometric_operations_move_image_and_mask_together(policy: list[str]) -> None:
    pairs = pairs_with_mask_equal_to_image()
    moved = DiffAugment(policy)(pairs, torch.Generator().manual_seed(1))
    assert not torch.equal(moved, pairs)
    assert torch.equal(moved[:, 0], moved[:, 1])


def test_colour_changes_the_image_only_and_geometry_still_matches() -> None:
    pairs = pairs_with_mask_equal_to_image()
    augmenter = DiffAugment(["color", "translation", "cutout"])
    parameters = augmenter.sample(pairs, torch.Generator().manual_seed(2))
    out = augment(pairs, 1, parameters)
    geometric_only = augment(pairs, 1, AugmentParameters(shift=parameters.shift, cutout_corner=parameters.cutout_corner, cutout_size=parameters.cutout_size))
    assert torch.equal(out[:, 1], geometric_only[:, 1])  # mask: geometry only
    assert not torch.equal(out[:, 0], geometric_only[:, 0])  # image: geometry + colour


def test_translate_and_cutout_by_hand() -> None:
    pairs = torch.arange(16.0).view(1, 1, 4, 4).repeat(1, 2, 1, 1)
    shifted = translate(pairs, torch.tensor([[1, 0]]))
    assert torch.equal(shifted[0, 0, 1:], pairs[0, 0, :3]) and shifted[0, 0, 0].abs().sum() == 0
    holed = cutout(pairs, torch.tensor([[1, 1]]), (2, 2))
    assert holed[0, :, 1:3, 1:3].abs().sum() == 0 and holed[0, 0, 0, 0] == pairs[0, 0, 0, 0]


def test_seeded_and_per_sample() -> None:
    pairs = pairs_with_mask_equal_to_image(batch=8)
    augmenter = DiffAugment()
    first = augmenter(pairs, torch.Generator().manual_seed(3))
    again = augmenter(pairs, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    same_input = pairs[:1].repeat(8, 1, 1, 1)
    varied = augmenter(same_input, torch.Generator().manual_seed(3))
    assert not torch.equal(varied[0], varied[1])  # each sample draws its own parameters


def test_differentiable_and_identity_when_off() -> None:
    pairs = pairs_with_mask_equal_to_image().requires_grad_(True)
    DiffAugment()(pairs, torch.Generator().manual_seed(0)).sum().backward()
    assert pairs.grad is not None and pairs.grad.abs().sum() > 0
    assert DiffAugment([])(pairs) is pairs


def test_unknown_operation() -> None:
    with pytest.raises(ValueError, match="did you mean 'cutout'"):
        DiffAugment(["cutuot"])


def test_reflecting_translation_by_hand_draws_no_edge() -> None:
    row = torch.arange(6.0).view(1, 1, 1, 6).repeat(1, 2, 6, 1)  # every row 0 1 2 3 4 5
    right = translate_reflect(row, torch.tensor([[0, 2]]))
    assert right[0, 0, 0].tolist() == [2.0, 1.0, 0.0, 1.0, 2.0, 3.0]  # mirrored without repeating the edge pixel
    left = translate_reflect(row, torch.tensor([[0, -2]]))
    assert left[0, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 4.0, 3.0]
    assert torch.equal(right[0, 0], right[0, 1])  # the mask moves with the image
    # a smooth image stays smooth: no value is a fill the image does not have, unlike zero fill
    image = torch.linspace(-1, -0.5, 16).view(1, 1, 1, 16).repeat(4, 2, 16, 1)
    shifts = torch.tensor([[2, 2], [-2, 2], [2, -2], [-2, -2]])
    mirrored, filled = translate_reflect(image, shifts), translate(image, shifts)
    assert mirrored.diff(dim=3).abs().max() <= image.diff(dim=3).abs().max() + 1e-6
    assert filled.diff(dim=3).abs().max() >= 0.5  # the zero fill's edge
    assert DiffAugment(["translation-reflect"]).sample(image).reflect is True


def test_the_two_translations_together_are_refused() -> None:
    with pytest.raises(ValueError, match="choose one"):
        DiffAugment(["translation", "translation-reflect"])
