"""CT acquisition: projector correctness, HU fidelity, the noise's sigma and NPS, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from augmentor.errors import AugmentorError
from augmentor.simulate import acquisition
from augmentor.simulate.acquisition import ScanGeometry, forward_project, simulate_scan
from augmentor.simulate.noise_metrics import measure_noise


def _disc_phantom(size: int) -> np.ndarray:
    rows, columns = np.mgrid[:size, :size] - (size - 1) / 2.0
    image = np.where(rows**2 + columns**2 < (0.4 * size) ** 2, 60.0, -1000.0)
    image[(columns - 0.15 * size) ** 2 + (rows + 0.2 * size) ** 2 < (0.08 * size) ** 2] = 300.0
    return image


def test_forward_projection_matches_bilinear_ray_sums() -> None:
    size, views = 24, 16
    image = np.random.default_rng(0).random((1, size, size)).astype(np.float32)
    geometry = ScanGeometry(size, 1.0, views)
    sinogram = forward_project(image, geometry)
    bins = geometry.num_bins
    centred = np.arange(bins) - (bins - 1) / 2.0
    samples = acquisition.RAY_SAMPLES_PER_PIXEL
    steps = (np.arange(bins * samples) - (bins * samples - 1) / 2.0) / samples
    padded = np.pad(image[0].astype(np.float64), 2)
    for view, angle in enumerate(geometry.angles):
        column = centred[:, None] * np.cos(angle) - steps[None, :] * np.sin(angle) + (size - 1) / 2.0 + 2
        row = centred[:, None] * np.sin(angle) + steps[None, :] * np.cos(angle) + (size - 1) / 2.0 + 2
        reference = ndimage.map_coordinates(padded, [row, column], order=1, mode="constant").sum(axis=1) / samples
        np.testing.assert_allclose(sinogram[0, view], reference, atol=1e-3)


def test_noise_free_scan_keeps_hounsfield_units() -> None:
    size = 64
    image = _disc_phantom(size)
    scan = simulate_scan(image, 0.7, dose=1e7, rng=np.random.default_rng(0))
    assert scan.shape == image.shape and scan.dtype == np.float32
    assert abs(scan[30:34, 20:26].mean() - 60.0) < 4.0
    assert abs(scan[2:8, 2:8].mean() + 1000.0) < 4.0
    insert_row, insert_column = round(31.5 - 0.2 * size), round(31.5 + 0.15 * size)
    assert abs(scan[insert_row, insert_column] - 300.0) < 20.0


@pytest.mark.parametrize("spacing_mm", [0.7, 1.4])
def test_noise_sigma_and_nps_peak_match_routine_abdominal_ct(spacing_mm: float) -> None:
    """Published figures for routine abdominal CT: liver noise 10-20 HU, NPS peak 0.2-0.35 cycles/mm.

    0.7 mm is the 512-matrix grid of lesion ROIs, 1.4 mm the 256-matrix grid of whole slices.
    """
    flat_liver = np.full((12, 96, 96), 110.0)
    scan = simulate_scan(flat_liver, spacing_mm, dose=1.0, rng=np.random.default_rng(3))
    measurement = measure_noise(scan[:, 16:80, 16:80], spacing_mm)
    assert 10.0 <= measurement.sigma_hu <= 20.0, measurement.sigma_hu
    assert 0.2 <= measurement.peak_per_mm <= 0.35, measurement.peak_per_mm
    # CT's ramp-shaped NPS: almost nothing at the lowest frequencies; past the peak it falls (at 0.7 mm
    # the kernel has cut it by Nyquist; 1.4 mm pixels end before it does).
    assert measurement.nps[0] < 0.2 * measurement.nps.max()
    if spacing_mm < 1.0:
        assert measurement.nps[-1] < 0.2 * measurement.nps.max()
    assert abs(scan[:, 16:80, 16:80].mean() - 110.0) < 2.0


def test_noise_falls_as_one_over_root_dose() -> None:
    flat = np.full((6, 64, 64), 40.0)
    routine = measure_noise(simulate_scan(flat, 0.7, dose=1.0, rng=np.random.default_rng(1))[:, 8:56, 8:56], 0.7)
    fourfold = measure_noise(simulate_scan(flat, 0.7, dose=4.0, rng=np.random.default_rng(1))[:, 8:56, 8:56], 0.7)
    assert fourfold.sigma_hu == pytest.approx(routine.sigma_hu / 2.0, rel=0.15)


def test_scan_is_deterministic_and_batch_independent_with_one_generator_per_image() -> None:
    images = np.stack([_disc_phantom(48), np.full((48, 48), 50.0)])
    first = simulate_scan(images, 0.7, rng=np.random.default_rng(7))
    again = simulate_scan(images, 0.7, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first, again)
    per_image = simulate_scan(images, 0.7, rng=[np.random.default_rng(10), np.random.default_rng(11)])
    alone = simulate_scan(images[1], 0.7, rng=[np.random.default_rng(11)][0])
    np.testing.assert_allclose(per_image[1], alone, atol=1e-3)


def test_supersampled_truth_is_averaged_onto_the_output_grid() -> None:
    fine = np.kron(_disc_phantom(32), np.ones((2, 2)))
    scan = simulate_scan(fine, 1.4, dose=1e7, rng=np.random.default_rng(0), supersample=2)
    assert scan.shape == (32, 32)
    assert abs(scan[14:18, 8:12].mean() - 60.0) < 5.0


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(AugmentorError, match="did you mean 'standard'"):
        simulate_scan(np.zeros((16, 16)), 1.0, rng=np.random.default_rng(0), kernel="standrd")
    with pytest.raises(AugmentorError, match="square"):
        simulate_scan(np.zeros((16, 20)), 1.0, rng=np.random.default_rng(0))
    with pytest.raises(AugmentorError, match="dose"):
        simulate_scan(np.zeros((16, 16)), 1.0, rng=np.random.default_rng(0), dose=0.0)
