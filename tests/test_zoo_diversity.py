"""The shipped generators against real lesions of new virtual patients: are they as diverse as real lesions?

Issue 13's criteria, per class, at equal n (:func:`evaluation.diversity.compare_diversity`), against lesions of
the *tuning* cohort (seed 1: patients no shipped model trained on, never the reported seed 0): nearest-neighbour
distance ratio synthetic / real >= 0.85, nearest mask IoU <= real + 0.05, median lesion area within 20 % of real,
and in the liver the fraction of bright (contrast-filled vessel) pixels within 50 % of real.

The models shipped before issue 13 failed these (mode collapse: repeated masks, liver ROIs without vessels;
weights ``9219890833bd…`` and ``c1dfb34cfe62…`` missed the NN-distance and mask-IoU criteria in every class).
A shipped model must meet every criterion, except the shortfalls listed here by its weights' SHA-256 -- criteria
measured as missed when it shipped and said so in the README -- which are asserted exactly: the day such a model
meets one of them, or misses another, the test fails and says which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from augmentor.data.reader import H5File
from augmentor.generate import generate
from augmentor.models.card import read_card
from augmentor.simulate.cohorts import build_cohort
from augmentor.zoo import resolve_model
from evaluation.diversity import LesionSet, compare_diversity
from evaluation.summary import BRIGHT_JUDGED_MODELS

SAMPLES_PER_CLASS = 160
TUNING_COHORT_SEED = 1
# weights SHA-256 -> the criteria the shipped model is known to miss ("class: criterion")
# (measured at shipping; issue 13's closing note and the README's shipped-models table give the numbers).
SHORTFALLS: dict[str, frozenset[str]] = {
    # frid-adar-liver: ROIs without contrast-filled vessels (bright pixels 1-8 % of real's), metastases 0.74x as far
    # apart as real ones
    "c0058b388d80b5fdb78d94c6d3be72f36a376527ea393006c27e6b80f7049c2a": frozenset(
        {"cyst: bright_fraction", "metastasis: bright_fraction", "hemangioma: bright_fraction", "metastasis: nn_distance"}
    ),
    # onishi-lung-dcgan (noise inputs, reflecting translation): malignant nodules too large (median area 1.44x real);
    # the model it replaced (4a3133790f2d…) missed the area in both classes (1.27x benign, 1.50x malignant)
    "7482a98893dae5977cefb221aacea7eef8cc2d349ea0b1d68a2ad451a644aaf6": frozenset({"malignant: lesion_area"}),
}
SHIPPED = [("frid-adar-liver", "liver-lesions"), ("onishi-lung-dcgan", "lung-nodules")]


def failures(model: str, cohort: str, check_bright: bool, folder: Path) -> dict[str, float]:
    """The criteria the model misses, as ``{"class: criterion": value}``."""
    paths = build_cohort(cohort, folder / "cohort", seed=TUNING_COHORT_SEED, train_size=8, test_size=3 * SAMPLES_PER_CLASS + 60, progress=False, workers=1)
    real = H5File(paths["test"])
    labels, window = real.labels(), real.info.hu_window
    missed: dict[str, float] = {}
    for index, name in enumerate(real.info.class_names):
        rows = np.flatnonzero(labels == index)[:SAMPLES_PER_CLASS]
        assert rows.size >= 100, f"the tuning cohort has only {rows.size} {name} lesions"
        hu, masks, _ = real.read(rows)
        out = generate(name, int(rows.size), folder / f"{name}.h5", model=model, seed=0, progress=False)
        synthetic = H5File(out)
        fake_hu, fake_masks, _ = synthetic.read(np.arange(len(synthetic)))
        criteria = compare_diversity(LesionSet(fake_hu, fake_masks), LesionSet(hu, masks), window, seed=0)["criteria"]
        for key, result in criteria.items():
            if key == "bright_fraction" and not check_bright:
                continue
            if not result["passed"]:
                missed[f"{name}: {key}"] = float(result["value"])
    return missed


@pytest.mark.parametrize(("model", "cohort"), SHIPPED, ids=[name for name, _ in SHIPPED])
def test_shipped_generator_is_as_diverse_as_real_lesions(model: str, cohort: str, tmp_path: Path) -> None:
    weights = read_card(resolve_model(model).path)["weights_sha256"]
    # vessels are judged where the ROI holds contrast-filled vessels (the liver), as in the README's zoo table
    missed = failures(model, cohort, model in BRIGHT_JUDGED_MODELS, tmp_path)
    known = SHORTFALLS.get(weights, frozenset())
    described = "; ".join(f"{key} {value:.3f}" for key, value in sorted(missed.items()))
    assert set(missed) == known, (
        f"{model} (weights {weights[:12]}…) misses {described or 'nothing'}; expected to miss {', '.join(sorted(known)) or 'nothing'}"
    )
