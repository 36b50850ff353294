"""Whole slices (``abdomen-ct``) as a CT domain: a kernel that rolls off, anti-aliased resampling, organs in place.

The scans here use a small scanner grid (192 pixels over the 358 mm field, resampled to 96) so the tests
stay fast; the cohort scans on 512 pixels of 0.7 mm the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from augmentor.data.resample import resample_slices
from augmentor.simulate import anatomy
from augmentor.simulate.abdomen import CtSlices, scan_patient
from augmentor.simulate.acquisition import simulate_scan
from augmentor.simulate.noise_metrics import measure_noise
from augmentor.simulate.tissues import Tissue

OUTPUT_SIZE, SCAN_SIZE = 96, 192
SPACING_MM = anatomy.FIELD_OF_VIEW_MM / OUTPUT_SIZE
Z_MM = np.array([50.0, 80.0])
CROSS = ndimage.generate_binary_structure(2, 1)


def _patient(seed: int) -> anatomy.VirtualPatient:
    return anatomy.draw_patient(np.random.default_rng(seed), f"p{seed}")


def _scan(seed: int, dose: float) -> CtSlices:
    return scan_patient(_patient(seed), Z_MM, np.random.default_rng(10 + seed), size=OUTPUT_SIZE, spacing_mm=SPACING_MM,
                        dose=dose, scan_size=SCAN_SIZE, textured=False)


@pytest.fixture(scope="module")
def flat_scans() -> dict[str, list[CtSlices]]:
    """Flat organs (no texture) of two patients, scanned noise-free (dose 10^6) and at routine dose."""
    return {"clean": [_scan(seed, 1e6) for seed in (0, 1)], "routine": [_scan(seed, 1.0) for seed in (0, 1)]}


def _pure_liver(mask: np.ndarray) -> np.ndarray:
    """Liver at least 4 mm from any other tissue (its vessels, gallbladder, capsule)."""
    return ndimage.binary_erosion(mask == Tissue.LIVER, iterations=int(np.ceil(4.0 / SPACING_MM)))


def test_noise_free_scan_of_flat_organs_keeps_liver_within_2_hu(flat_scans: dict[str, list[CtSlices]]) -> None:
    # A kernel still high at Nyquist streaks the body's edges and the spine across the liver (~10 HU rms).
    errors = []
    for seed, stack in zip((0, 1), flat_scans["clean"], strict=True):
        liver_hu = _patient(seed).phase.tissue_hu()[Tissue.LIVER]
        for image, mask in zip(stack.images, stack.masks, strict=True):
            pure = _pure_liver(mask)
            assert pure.sum() > 50
            errors.append(image[pure] - liver_hu)
    rms = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
    assert rms <= 2.0, rms


def test_whole_slice_noise_power_falls_after_its_peak_and_before_nyquist(flat_scans: dict[str, list[CtSlices]]) -> None:
    rois = []
    roi = 16
    for clean, routine in zip(flat_scans["clean"], flat_scans["routine"], strict=True):
        for noise, mask in zip(routine.images - clean.images, clean.masks, strict=True):
            inside = ndimage.binary_erosion(mask > 0, iterations=3)
            for row in range(0, OUTPUT_SIZE - roi, roi // 2):
                for column in range(0, OUTPUT_SIZE - roi, roi // 2):
                    if inside[row : row + roi, column : column + roi].all():
                        rois.append(noise[row : row + roi, column : column + roi])
    assert len(rois) >= 20
    measurement = measure_noise(np.stack(rois), SPACING_MM)
    nps = measurement.nps / measurement.nps.max()
    peak = int(np.argmax(nps))
    nyquist = 0.5 / SPACING_MM
    assert nps[0] < 0.3  # CT's ramp: little power at the lowest frequencies
    assert measurement.peak_per_mm < 0.8 * nyquist
    assert nps[-1] < 0.5, nps  # rolled off before Nyquist, not folded back onto it
    assert np.all(np.diff(nps[peak:]) < 0.05), nps  # and falling from the peak on


def test_scan_at_0_7_mm_resampled_to_1_4_mm_has_a_routine_nps() -> None:
    """The real geometry in miniature: 0.7 mm scan, Hann-apodised standard kernel, anti-aliased to 1.4 mm."""
    flat = np.full((8, 128, 128), 110.0)
    scanned = simulate_scan(flat, 0.7, dose=1.0, rng=np.random.default_rng(4), apodisation="hann")
    output = resample_slices(scanned, (64, 64))
    measurement = measure_noise(output[:, 8:56, 8:56], 1.4)
    nps = measurement.nps / measurement.nps.max()
    assert 0.15 <= measurement.peak_per_mm <= 0.3, measurement.peak_per_mm
    assert nps[-1] < 0.5, nps
    assert abs(output[:, 8:56, 8:56].mean() - 110.0) < 2.0
    # Without the roll-off and anti-aliasing (every other pixel of a plain ramp) the power piles up at Nyquist.
    plain = simulate_scan(flat, 0.7, dose=1.0, rng=np.random.default_rng(4))[:, ::2, ::2]
    aliased = measure_noise(plain[:, 8:56, 8:56], 1.4)
    assert aliased.nps[-1] > 0.7 * aliased.nps.max()


def test_aorta_never_in_the_heart_and_ivc_never_in_lung() -> None:
    aorta_touches_heart = ivc_touches_lung = slices_with_heart = 0
    for seed in range(6):
        patient = _patient(seed)
        for z in np.arange(-5.0, 41.0, 5.0):  # around the diaphragm's domes, where the heart sits
            labels = anatomy.render_labels(patient, float(z), 96, SPACING_MM)
            slices_with_heart += bool((labels == Tissue.HEART).any())
            around_aorta = ndimage.binary_dilation(labels == Tissue.AORTA, CROSS)
            aorta_touches_heart += bool((labels[around_aorta] == Tissue.HEART).any())
            around_ivc = ndimage.binary_dilation(labels == Tissue.IVC, CROSS)
            ivc_touches_lung += bool((labels[around_ivc] == Tissue.LUNG).any())
    assert slices_with_heart >= 15  # the test looks where the heart is
    assert aorta_touches_heart == 0
    assert ivc_touches_lung == 0


def test_vertebra_has_pedicles_and_laminae_with_marrow() -> None:
    """Not a thin ring round the canal and a stick: bone thick enough for marrow joins body and arch."""
    spacing = 1.4
    for seed in (0, 1, 2):
        patient = _patient(seed)
        labels = anatomy.render_labels(patient, 80.0, 256, spacing)
        rows, columns = np.nonzero(labels == Tissue.SPINAL_CANAL)
        middle, bottom = (rows.min() + rows.max()) // 2, rows.max()
        left, right = columns.min(), columns.max()
        # Beside the posterior half of the canal (behind the vertebral body): pedicles and laminae with marrow.
        band = labels[middle : bottom + 1]
        assert (band[:, :left] == Tissue.SPINE_CANCELLOUS).sum() >= 6
        assert (band[:, right + 1 :] == Tissue.SPINE_CANCELLOUS).sum() >= 6
        bone = np.isin(labels, (Tissue.SPINE_CORTICAL, Tissue.SPINE_CANCELLOUS))
        # At the canal's middle the bone either side is a pedicle ~7 mm thick (a ring would be ~3 mm).
        left_run = np.argmin(bone[middle, left - 1 :: -1])
        right_run = np.argmin(bone[middle, right + 1 :])
        assert min(left_run, right_run) * spacing >= 5.0, (left_run, right_run)
        components, _ = ndimage.label(bone)
        body = components[np.nonzero(labels == Tissue.SPINE_CANCELLOUS)][0]
        assert components[bottom + 3, (left + right) // 2] == body  # spinous process, laminae, pedicles, body: one bone
