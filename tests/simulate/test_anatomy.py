"""Virtual-patient anatomy: determinism, organs in place, smooth stacks, realistic CT numbers."""

from __future__ import annotations

import numpy as np
import pytest

from augmentor.simulate import anatomy
from augmentor.simulate.abdomen import scan_patient
from augmentor.simulate.tissues import LABEL_NAMES, NOMINAL_HU, Tissue, draw_contrast_phase


def _patient(seed: int = 3, first_slice_z: float = 60.0) -> anatomy.VirtualPatient:
    return anatomy.draw_patient(np.random.default_rng(seed), f"p{seed}", first_slice_z=first_slice_z)


def test_label_names_match_tissue_values() -> None:
    assert LABEL_NAMES[0] == "background"
    assert all(LABEL_NAMES[int(tissue)] == tissue.name.lower() for tissue in Tissue)
    assert set(NOMINAL_HU) == {int(tissue) for tissue in Tissue}


def test_same_seed_same_patient_and_labels() -> None:
    first = anatomy.render_labels(_patient(), 70.0, 96, 3.7)
    again = anatomy.render_labels(_patient(), 70.0, 96, 3.7)
    np.testing.assert_array_equal(first, again)
    other = anatomy.render_labels(_patient(seed=4), 70.0, 96, 3.7)
    assert (first != other).mean() > 0.02


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_upper_abdomen_slice_has_its_organs_in_place(seed: int) -> None:
    patient = _patient(seed)
    labels = anatomy.render_labels(patient, 80.0, 128, 2.8)
    present = set(np.unique(labels).tolist())
    for tissue in (Tissue.SKIN, Tissue.SUBCUTANEOUS_FAT, Tissue.MUSCLE, Tissue.LIVER, Tissue.AORTA,
                   Tissue.SPINE_CORTICAL, Tissue.SPINE_CANCELLOUS, Tissue.SPINAL_CANAL):
        assert tissue in present, LABEL_NAMES[tissue]
    columns = np.arange(128)[None, :].repeat(128, 0)
    rows = np.arange(128)[:, None].repeat(128, 1)
    liver_column = columns[labels == Tissue.LIVER].mean()
    spine_column = columns[labels == Tissue.SPINE_CANCELLOUS].mean()
    assert liver_column < spine_column  # liver on the patient's right = image left
    assert rows[labels == Tissue.AORTA].mean() < rows[labels == Tissue.SPINE_CANCELLOUS].mean()  # aorta anterior
    assert labels[0, 0] == Tissue.BACKGROUND


def test_lung_bases_above_and_kidneys_below() -> None:
    patient = _patient(5)
    chest = anatomy.render_labels(patient, 5.0, 128, 2.8)
    low = anatomy.render_labels(patient, 125.0, 128, 2.8)
    assert (chest == Tissue.LUNG).sum() > (low == Tissue.LUNG).sum()
    assert (low == Tissue.KIDNEY).sum() > 0 and (chest == Tissue.KIDNEY).sum() == 0


def test_neighbouring_slices_change_smoothly() -> None:
    patient = _patient(6)
    z = anatomy.slice_positions(patient, 3)
    stack = [anatomy.render_labels(patient, float(position), 96, 3.7) for position in z]
    neighbour_change = (stack[0] != stack[1]).mean()
    far = anatomy.render_labels(patient, float(z[0]) + 80.0, 96, 3.7)
    assert neighbour_change < 0.12
    assert neighbour_change < (stack[0] != far).mean()


def test_contrast_phase_gives_published_portal_venous_values() -> None:
    for seed in range(40):
        hu = draw_contrast_phase(np.random.default_rng(seed)).tissue_hu()
        assert 95.0 <= hu[Tissue.LIVER] <= 125.0
        assert 145.0 <= hu[Tissue.AORTA] <= 210.0
        assert -130.0 <= hu[Tissue.SUBCUTANEOUS_FAT] <= -80.0


def test_scanned_slice_keeps_liver_and_aorta_hu_with_ct_noise() -> None:
    patient = _patient(7)
    stack = scan_patient(patient, np.array([75.0]), np.random.default_rng(0), size=128, spacing_mm=2.8, scan_size=192)
    truth = patient.phase.tissue_hu()
    image, mask = stack.images[0], stack.masks[0]
    from scipy import ndimage

    liver = ndimage.binary_erosion(mask == Tissue.LIVER, iterations=2) & ~ndimage.binary_dilation(mask == Tissue.HEPATIC_VESSEL, iterations=2)
    assert abs(image[liver].mean() - truth[Tissue.LIVER]) < 8.0
    assert 3.0 < image[liver].std() < 25.0
    aorta = ndimage.binary_erosion(mask == Tissue.AORTA, iterations=2)
    assert aorta.any()
    assert abs(image[aorta].mean() - truth[Tissue.AORTA]) < 25.0
