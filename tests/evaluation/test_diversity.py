"""Diversity numbers on constructed sets: copies are not diverse, a set matches itself, collapse is caught."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.diversity import (
    LesionSet,
    compare_diversity,
    diversity,
    equal_size,
    nearest_mask_iou,
    nearest_other_distance,
)

WINDOW = (-160.0, 240.0)


def lesions(count: int, seed: int, size: int = 32, vessels: bool = True) -> LesionSet:
    """Discs of random centre and radius on a noisy liver-like background, with bright vessel lines."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:size, :size]
    hu = np.empty((count, 1, size, size), np.int16)
    masks = np.zeros((count, size, size), np.uint8)
    for i in range(count):
        centre = rng.uniform(size * 0.3, size * 0.7, 2)
        radius = rng.uniform(size * 0.1, size * 0.3)
        inside = (rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < radius**2
        image = np.where(inside, 20.0, 100.0) + rng.normal(0, 20, (size, size))
        if vessels:
            image[int(rng.integers(size)), :] = 200.0  # one bright vessel row
        masks[i] = inside
        hu[i, 0] = image
    return LesionSet(hu, masks)


def test_identical_copies_are_at_distance_zero_with_iou_one() -> None:
    base = lesions(8, seed=0)
    copies = LesionSet(np.repeat(base.hu[:1], 8, axis=0), np.repeat(base.masks[:1], 8, axis=0))
    assert np.array_equal(nearest_other_distance(copies.hu, WINDOW), np.zeros(8))
    assert np.array_equal(nearest_mask_iou(copies.masks), np.ones(8))
    numbers = diversity(copies, WINDOW)
    assert numbers["nn_distance"] == 0.0 and numbers["nn_mask_iou"] == 1.0
    # distinct samples: the nearest *other* sample is never the sample itself
    assert (nearest_other_distance(base.hu, WINDOW) > 0).all()
    assert (nearest_mask_iou(base.masks) < 1).all()


def test_area_and_bright_fraction() -> None:
    hu = np.zeros((2, 1, 10, 10), np.int16)
    masks = np.zeros((2, 10, 10), np.uint8)
    masks[:, :5, :2] = 1  # 10 of 100 pixels
    hu[:, 0, 9, :] = 300  # 10 bright pixels of the 90 outside the lesion
    hu[:, 0, 0, 0] = 300  # inside the lesion: not a vessel
    numbers = diversity(LesionSet(hu, masks), WINDOW)
    assert numbers["lesion_area"] == pytest.approx(0.1)
    assert numbers["bright_fraction"] == pytest.approx(10 / 90)


def test_a_set_against_itself_has_ratios_one_and_passes() -> None:
    real = lesions(40, seed=1)
    compared = compare_diversity(real, real, WINDOW)
    values = {name: c["value"] for name, c in compared["criteria"].items()}
    assert values == pytest.approx({"nn_distance": 1.0, "nn_mask_iou": 0.0, "lesion_area": 1.0, "bright_fraction": 1.0})
    assert compared["passed"]


def test_a_collapsed_generator_fails() -> None:
    """Eight distinct lesions repeated five times each (with fresh noise) against 40 distinct real lesions:
    the copies' nearest neighbours are each other, masks repeat exactly, and without vessels the bright
    fraction is gone."""
    real = lesions(40, seed=2)
    modes = lesions(8, seed=3, vessels=False)
    rng = np.random.default_rng(4)
    hu = (np.repeat(modes.hu, 5, axis=0) + rng.normal(0, 20, (40, 1, 32, 32))).astype(np.int16)
    collapsed = LesionSet(hu, np.repeat(modes.masks, 5, axis=0))
    criteria = compare_diversity(collapsed, real, WINDOW)["criteria"]
    assert not criteria["nn_distance"]["passed"] and criteria["nn_distance"]["value"] < 0.85
    assert not criteria["nn_mask_iou"]["passed"] and criteria["nn_mask_iou"]["value"] > 0.05
    assert not criteria["bright_fraction"]["passed"]


def test_sets_are_compared_at_equal_size() -> None:
    """Nearest neighbours get closer as a set grows: a large sample of the real distribution against a small
    one would look *less* diverse; at equal n it does not."""
    small, large = lesions(20, seed=5), lesions(200, seed=6)
    assert diversity(large, WINDOW)["nn_distance"] < diversity(small, WINDOW)["nn_distance"]
    first, second = equal_size(large, small, seed=0)
    assert len(first) == len(second) == 20
    compared = compare_diversity(large, small, WINDOW)
    assert compared["synthetic"]["n"] == compared["real"]["n"] == 20
    assert compared["criteria"]["nn_distance"]["value"] > 0.85


def test_fine_texture_sees_noise_outside_the_lesion_and_not_smooth_shading() -> None:
    from scipy import ndimage

    from evaluation.diversity import fine_texture

    noisy = lesions(20, seed=3, vessels=False)  # N(0, 20 HU) noise everywhere
    smooth_hu = ndimage.gaussian_filter(noisy.hu.astype(np.float32), sigma=(0, 0, 3, 3)).round().astype(np.int16)
    smooth = LesionSet(smooth_hu, noisy.masks)
    noisy_texture, smooth_texture = diversity(noisy, WINDOW)["texture_hu"], diversity(smooth, WINDOW)["texture_hu"]
    # white noise of σ minus its σ = 1 px blur keeps about 0.8 σ; a blurred image keeps a few HU
    assert 13.0 < noisy_texture < 19.0 and smooth_texture < 4.0
    # only what lies outside the lesion counts: noise inside the mask alone leaves the texture as the smooth one's
    inside_only = smooth_hu.copy()
    rng = np.random.default_rng(0)
    inside = noisy.masks.astype(bool)
    inside_only[:, 0][inside] += rng.normal(0, 40, int(inside.sum())).astype(np.int16)
    assert fine_texture(inside_only, noisy.masks).max() < smooth_texture + 2.0


def test_two_files_compared_per_class_with_the_reference_against_itself_as_the_floor(tiny_file, tmp_path, capsys) -> None:
    from evaluation.diversity import compare_files, main

    small = tiny_file("small.h5", count=12, seed=0)  # 4 lesions a class
    big = tiny_file("big.h5", count=48, seed=1)  # 16 a class: room for two disjoint draws of 4
    # a file against itself, every lesion drawn: the same set, so ratios 1, IoU excess 0, every draw passes
    same = compare_files(small, small, repeats=3)
    assert list(same) == ["cyst", "metastasis", "hemangioma"]
    for result in same.values():
        assert result["n"] == 4 and result["floor"] is None  # 4 lesions cannot make two disjoint draws of 4
        assert result["judged"]["nn_distance"]["median"] == pytest.approx(1.0) and result["judged"]["lesion_area"]["passed"] == 1.0
        assert result["judged"]["nn_mask_iou"]["median"] == pytest.approx(0.0)
    against = compare_files(small, big, repeats=5)
    floor = against["cyst"]["floor"]
    assert floor is not None and set(floor) == {"nn_distance", "nn_mask_iou", "lesion_area", "bright_fraction"}
    assert floor["lesion_area"]["p10"] <= floor["lesion_area"]["median"] <= floor["lesion_area"]["p90"]

    assert main([str(small), str(big), "--repeats", "2"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 2 + 3 * 2 and rows[2].startswith("| cyst | 4 | file vs reference | ") and rows[3].startswith("| cyst | 4 | reference vs reference | ")
    other = tiny_file("other.h5", count=4, class_names=("benign", "malignant"))
    for arguments, message in (([str(small), str(other)], "share no class"), ([str(tmp_path / "none.h5"), str(big)], "none.h5"), ([str(small), str(big), "--repeats", "0"], "--repeats >= 1")):
        assert main(arguments) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and error.count("\n") == 1, error
