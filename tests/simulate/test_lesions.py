"""Lesion appearance models: each class looks like its radiology, masks match the lesions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from augmentor.simulate import cohorts, lesions, scenes
from augmentor.simulate.lesions import LiverLesionClass, LungNoduleClass

GRID = scenes.Grid(64, 0.8, supersample=2)


def _liver_truth(lesion_class: LiverLesionClass, index: int, diameter_mm: float | None = None) -> lesions.RenderedLesion:
    """A liver lesion before the scanner (fine-grid truth), on a flat, texture-free background."""
    rng = np.random.default_rng(1000 * int(lesion_class) + index)
    patient = scenes.draw_liver_patient(rng)
    diameter = diameter_mm or lesions.draw_liver_diameter(rng, lesion_class)
    scene = scenes.Scene(hu=np.full((GRID.fine_size,) * 2, patient.liver_hu, np.float32), organ_depth_mm=np.full((GRID.fine_size,) * 2, np.inf, np.float32))
    return lesions.render_liver_lesion(rng, lesion_class, scene, GRID, patient, diameter)


def _core(mask: np.ndarray, fraction: float) -> np.ndarray:
    """Mask pixels deeper than ``fraction`` of the lesion's largest inner distance."""
    depth = ndimage.distance_transform_edt(mask)
    return mask & (depth > fraction * depth.max())


def test_cyst_is_water_and_more_homogeneous_than_metastasis() -> None:
    cyst_means, cyst_sds, metastasis_sds = [], [], []
    for index in range(12):
        cyst = _liver_truth(LiverLesionClass.CYST, index, diameter_mm=16.0)
        core = _core(cyst.mask, 0.3)
        cyst_sds.append(cyst.hu[core].std())
        if lesions.LIVER_VARIANTS["cyst"][cyst.variant] == "proteinaceous":
            assert 20.0 <= cyst.hu[core].mean() <= 60.0  # dense fluid, still homogeneous
        else:
            cyst_means.append(cyst.hu[core].mean())
        metastasis = _liver_truth(LiverLesionClass.METASTASIS, index, diameter_mm=16.0)
        metastasis_sds.append(metastasis.hu[_core(metastasis.mask, 0.3)].std())
    assert len(cyst_means) >= 8 and all(-5.0 <= m <= 25.0 for m in cyst_means)
    assert np.median(cyst_sds) < 0.5 * np.median(metastasis_sds)


def test_scanned_cyst_is_near_water_and_darker_than_liver() -> None:
    cohort = cohorts.LIVER_LESIONS
    interiors, outsides = [], []
    for index in range(4):
        sample = cohorts.render_sample(cohort, 0, "train", index, cohorts.PlannedLesion(int(LiverLesionClass.CYST), index, 0))
        if lesions.LIVER_VARIANTS["cyst"][sample.variant] == "proteinaceous":
            continue
        core = _core(sample.mask.astype(bool), 0.4)
        if core.sum() >= 4:
            interiors.append(sample.image[core].mean())
        outsides.append(np.median(sample.image[~ndimage.binary_dilation(sample.mask, iterations=3)]))
    assert interiors and all(-15.0 <= m <= 35.0 for m in interiors)
    assert np.mean(outsides) > np.mean(interiors) + 50.0


def test_hemangioma_periphery_is_brighter_than_centre_while_filling() -> None:
    differences = []
    for index in range(30):
        hemangioma = _liver_truth(LiverLesionClass.HEMANGIOMA, index, diameter_mm=24.0)
        if hemangioma.variant != 0 or hemangioma.details["fill"] > 0.5:
            continue  # flash-filled or nearly filled: no rim/centre contrast to see
        mask = hemangioma.mask
        depth = ndimage.distance_transform_edt(mask)
        rim = mask & (depth <= 0.3 * depth.max())
        centre = mask & (depth > 0.7 * depth.max())
        differences.append(hemangioma.hu[rim].mean() - hemangioma.hu[centre].mean())
    assert len(differences) >= 5
    assert np.median(differences) > 20.0


def test_metastasis_is_hypodense_to_liver_on_average() -> None:
    contrasts = []
    for index in range(20):
        metastasis = _liver_truth(LiverLesionClass.METASTASIS, index)
        liver = np.median(metastasis.hu[~ndimage.binary_dilation(metastasis.mask, iterations=6)])
        contrasts.append(metastasis.hu[metastasis.mask].mean() - liver)
    assert np.median(contrasts) < -20.0


def _solidity(mask: np.ndarray) -> float:
    """Area / area of the convex hull: 1 for convex (smooth, round), lower for lobulated/spiculated."""
    from skimage.measure import regionprops

    return float(regionprops(mask.astype(np.uint8))[0].solidity)


def test_malignant_nodules_are_larger_and_more_irregular() -> None:
    cohort = cohorts.LUNG_NODULES
    diameters: dict[int, list[float]] = {0: [], 1: []}
    solidity: dict[int, list[float]] = {0: [], 1: []}
    for nodule_class in LungNoduleClass:
        for index in range(16):
            rng = np.random.default_rng(500 + 100 * int(nodule_class) + index)
            diameters[int(nodule_class)].append(lesions.draw_lung_diameter(rng, nodule_class))
            # Shape on the fine grid at a common size, so irregularity is compared like for like.
            grid = scenes.Grid(64, cohort.spacing_mm, 2)
            patient = scenes.draw_lung_patient(rng)
            scene = scenes.lung_scene(rng, grid, patient, 7.0, pleura_probability=0.0)
            rendered = lesions.render_lung_nodule(rng, nodule_class, scene, grid, patient, 14.0)
            # Irregularity of the dense part: the nodule and its spicules, thresholded like a radiologist's eye.
            y, x = grid.mesh()
            solid = (rendered.hu > -300) & (np.hypot(y, x) < 12.0)
            label, _ = ndimage.label(solid)
            centre_label = label[grid.fine_size // 2, grid.fine_size // 2]
            if centre_label:
                solidity[int(nodule_class)].append(_solidity(label == centre_label))
    # Sizes: cancers are larger on average, but the distributions overlap (size alone is a weak cue).
    sizes = {int(c): np.array([lesions.draw_lung_diameter(np.random.default_rng([c, k]), c) for k in range(2000)]) for c in LungNoduleClass}
    assert np.median(sizes[1]) > np.median(sizes[0]) + 2.0
    assert 0.2 < np.mean(sizes[0] > np.median(sizes[1])) < 0.5
    assert np.mean(diameters[1]) > np.mean(diameters[0])
    assert np.mean(solidity[1]) < np.mean(solidity[0]) - 0.03


@pytest.mark.parametrize("cohort", [cohorts.LIVER_LESIONS, cohorts.LUNG_NODULES], ids=lambda c: c.name)
def test_masks_match_the_lesions(cohort: cohorts.LesionCohort) -> None:
    for class_index in range(len(cohort.class_names)):
        for index in range(3):
            sample = cohorts.render_sample(cohort, 3, "test", 10 * class_index + index, cohorts.PlannedLesion(class_index, index, 0))
            assert sample.image.shape == sample.mask.shape == (64, 64)
            assert sample.mask.dtype == np.uint8 and set(np.unique(sample.mask)) <= {0, 1}
            area_mm2 = sample.mask.sum() * cohort.spacing_mm**2
            expected = np.pi * (sample.diameter_mm / 2) ** 2
            # Equal-area outlines: lobulation and partial volume move the area only a little.
            assert 0.6 * expected <= area_mm2 <= 1.5 * expected, (cohort.name, class_index, area_mm2, expected)
            centre = np.argwhere(sample.mask).mean(axis=0)
            assert np.all(np.abs(centre - 31.5) <= 5.0)


def test_render_sample_is_deterministic() -> None:
    planned = cohorts.PlannedLesion(2, 7, 1)
    first = cohorts.render_sample(cohorts.LIVER_LESIONS, 5, "train", 11, planned)
    second = cohorts.render_sample(cohorts.LIVER_LESIONS, 5, "train", 11, planned)
    other = cohorts.render_sample(cohorts.LIVER_LESIONS, 6, "train", 11, planned)
    assert np.array_equal(first.image, second.image) and np.array_equal(first.mask, second.mask)
    assert not np.array_equal(first.image, other.image)


def _flat_scene(hu: float) -> scenes.Scene:
    """A uniform, texture-free background that is organ everywhere (for lesion-only measurements)."""
    flat = np.full((GRID.fine_size,) * 2, hu, np.float32)
    return scenes.Scene(hu=flat, organ_depth_mm=np.full_like(flat, np.inf))


def _core_median_hu(rendered: lesions.RenderedLesion) -> float:
    return float(np.median(rendered.hu[_core(rendered.mask, 0.3)]))


@pytest.mark.parametrize(
    ("lesion_class", "draw_patient", "render", "background_hu"),
    [
        (LiverLesionClass.METASTASIS, scenes.draw_liver_patient, lesions.render_liver_lesion, 110.0),
        (LungNoduleClass.BENIGN, scenes.draw_lung_patient, lesions.render_lung_nodule, -850.0),
    ],
    ids=["liver-metastasis", "lung-benign"],
)
def test_lesions_of_one_patient_look_alike(
    lesion_class: int, draw_patient: Callable[..., Any], render: Callable[..., lesions.RenderedLesion], background_hu: float
) -> None:
    # One patient's lesions share their phenotype (a primary tumour's enhancement, one infection's
    # granulomas), which is what makes a small, clustered training set cover fewer appearances than its
    # lesion count says. Core HU spread within a patient must be well below the spread across patients.
    within, medians = [], []
    for patient_index in range(8):
        patient = draw_patient(np.random.default_rng(7000 + patient_index))
        values = []
        for lesion_index in range(4):
            rng = np.random.default_rng([patient_index, lesion_index])
            values.append(_core_median_hu(render(rng, lesion_class, _flat_scene(background_hu), GRID, patient, 12.0)))
        within.append(np.median(np.abs(np.asarray(values) - np.median(values))))
        medians.append(np.median(values))
    across = np.median(np.abs(np.asarray(medians) - np.median(medians)))
    assert np.median(within) < 0.5 * across, (within, medians)


def _separate_dense_spots(rendered: lesions.RenderedLesion, background_hu: float) -> int:
    """Dense spots the nodule added that do not touch the nodule or its strands (flat lung background)."""
    added = rendered.hu > background_hu + 150.0
    label, count = ndimage.label(added)
    attached = set(np.unique(label[ndimage.binary_dilation(rendered.mask, iterations=2)]))
    return sum(1 for index in range(1, count + 1) if index not in attached)


def test_inflammatory_nodules_have_satellites_and_other_benign_nodules_do_not() -> None:
    # Satellite micronodules are the cue that can tell an inflammatory nodule (with its fibrotic strands)
    # from a spiculated cancer; no other benign variant, and no cancer, has them.
    background = -850.0
    spots: dict[str, list[int]] = {"inflammatory": [], "other benign": [], "malignant": []}
    for index in range(200):
        rng = np.random.default_rng([31, index])
        patient = scenes.draw_lung_patient(rng)
        nodule_class = LungNoduleClass.BENIGN if index % 2 == 0 else LungNoduleClass.MALIGNANT
        rendered = lesions.render_lung_nodule(rng, nodule_class, _flat_scene(background), GRID, patient, 10.0)
        key = "malignant" if nodule_class == LungNoduleClass.MALIGNANT else ("inflammatory" if rendered.variant == 4 else "other benign")
        spots[key].append(_separate_dense_spots(rendered, background))
    assert len(spots["inflammatory"]) >= 8
    with_satellites = np.mean(np.asarray(spots["inflammatory"]) >= 1)
    assert 0.5 <= with_satellites <= 0.95, spots["inflammatory"]
    assert max(spots["other benign"]) == 0 and max(spots["malignant"]) == 0
