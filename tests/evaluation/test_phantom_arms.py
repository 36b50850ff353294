"""The phantom -> CT segmenter arms' planning: arm expansion per translation model, the structures a recipe
selects, and the cache keys of the jobs that existed before phantom pools (unchanged)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from augmentor.errors import AugmentorError
from evaluation.arms import Arm, ArmKind, Pool, StageBudget, expand_arms
from evaluation.jobs import DataPlan, Job
from evaluation.recipe import (
    AugmentationSection,
    ClassifierSection,
    DataSection,
    EvaluateRecipe,
    SegmenterSection,
)
from evaluation.training import Task, TrainSettings

BUDGET = StageBudget(100.0, 300)


def data_plan(**changes: object) -> DataPlan:
    plan = DataPlan(
        ("train.h5",), ("test.h5",), ("synthetic.h5",), ("oracle.h5",), (-160.0, 240.0), np.arange(10), np.arange(10, 14),
        (np.arange(5), np.arange(5, 9), np.arange(9, 20)), (np.arange(3), np.arange(3, 6), np.arange(6, 9)), 64, 1, 3, 2, ("lesion",), (0.8, 0.8),
        {"train.h5": "a", "test.h5": "b", "synthetic.h5": "c", "oracle.h5": "d"},
    )
    for name, value in changes.items():
        object.__setattr__(plan, name, value)
    return plan


def job(arm: Arm, task: Task = Task.SEGMENTATION, data: DataPlan | None = None) -> Job:
    stages = arm.stages((4, 5, 6), train=BUDGET, pretrain=StageBudget(30.0, 200), pretrain_per_class=(40, 50, 60))
    settings = TrainSettings(batch_size=32, learning_rate=1e-3, weight_decay=1e-4, eval_every=20, patience=8, lr_patience=4, lr_factor=0.3, smoothing=0.6)
    return Job(task, arm, 3, stages, data or data_plan(), ClassifierSection(), SegmenterSection(), AugmentationSection(), settings)


def test_jobs_without_phantoms_keep_their_cache_keys() -> None:
    """Computed with the harness before phantom pools existed: a pool with one source, and no structure
    selection, must hash as it did, or every cached liver and lung job would be recomputed."""
    assert job(Arm("classic+synthetic x3", ArmKind.CLASSIC_SYNTHETIC, 3.0)).content_hash()[:16] == PINNED["segmentation classic+synthetic x3"]
    assert job(Arm("classic+oracle x1", ArmKind.CLASSIC_ORACLE, 1.0), Task.CLASSIFICATION).content_hash()[:16] == PINNED["classification classic+oracle x1"]
    assert job(Arm("classic", ArmKind.CLASSIC)).content_hash()[:16] == PINNED["segmentation classic"]


def test_a_warm_up_changes_the_key_and_no_warm_up_keeps_it() -> None:
    classic = job(Arm("classic", ArmKind.CLASSIC))
    warmed = dataclasses.replace(classic, settings=dataclasses.replace(classic.settings, warmup_steps=200))
    assert warmed.content_hash() != classic.content_hash()
    assert dataclasses.replace(warmed, settings=dataclasses.replace(warmed.settings, warmup_steps=0)).content_hash()[:16] == PINNED["segmentation classic"]


def test_each_translation_model_and_the_phantoms_have_their_own_pool_and_key() -> None:
    arms = expand_arms(["classic+phantom", "classic+translated", "real"], [3, 1], 0.0, (), ["plain", "structure"])
    assert [arm.name for arm in arms] == [
        "real", "classic+phantom x1", "classic+phantom x3",
        "classic+translated(plain) x1", "classic+translated(plain) x3", "classic+translated(structure) x1", "classic+translated(structure) x3",
    ]
    by_name = {arm.name: arm for arm in arms}
    stage = by_name["classic+translated(structure) x3"].stages((4, 5, 6), train=BUDGET, pretrain=BUDGET, pretrain_per_class=(0, 0, 0))[0]
    assert (stage.pool, stage.source, stage.per_class, stage.augment, stage.real) == (Pool.TRANSLATED, "structure", (12, 15, 18), True, True)
    pools = {key: (("x.h5",), (np.arange(30), np.arange(30, 60), np.arange(60, 90))) for key in ("phantom", "translated:plain", "translated:structure")}
    data = data_plan(pools=pools, file_hashes={"x.h5": "same file"})
    keys = {name: job(arm, data=data).content_hash() for name, arm in by_name.items()}
    assert len(set(keys.values())) == len(keys)  # same pool file, same counts: the source still tells the jobs apart


def test_a_structure_selection_changes_the_key_and_must_name_real_labels() -> None:
    from evaluation.run import segmented_structures

    arm = Arm("classic", ArmKind.CLASSIC)
    label_map = np.zeros(256, np.uint8)
    label_map[[8, 9]] = [1, 2]
    assert job(arm, data=data_plan(label_map=label_map)).content_hash() != job(arm).content_hash()

    real = SimpleNamespace(info=SimpleNamespace(mask_label_names=("background", "body", "liver", "hepatic_vessel")))
    recipe = EvaluateRecipe(data=DataSection(cohort="abdomen-ct", structures=("hepatic_vessel", "liver")))
    names, mapping = segmented_structures(recipe, real)  # type: ignore[arg-type]
    assert names == ("hepatic_vessel", "liver") and mapping is not None and mapping[:4].tolist() == [0, 0, 2, 1]
    wrong = EvaluateRecipe(data=DataSection(cohort="abdomen-ct", structures=("livr",)))
    with pytest.raises(AugmentorError, match="did you mean 'liver'"):
        segmented_structures(wrong, real)  # type: ignore[arg-type]


def test_recipes_refuse_phantom_arms_without_models_or_in_classification() -> None:
    from evaluation.recipe import ArmsSection, PhantomSection

    with pytest.raises(ValueError, match=r"needs phantoms\.translation_models"):
        EvaluateRecipe(arms=ArmsSection(classification=(), segmentation=("classic", "classic+translated")))
    with pytest.raises(ValueError, match="are segmentation arms"):
        EvaluateRecipe(arms=ArmsSection(classification=("real", "classic+phantom")))
    with pytest.raises(ValueError, match="distinct names"):
        PhantomSection(translation_models=("models/a", "other/a"))


# content_hash()[:16] of the jobs above, computed with the harness of commit 06a27d9 (before phantom pools)
PINNED = {
    "segmentation classic+synthetic x3": "7d012fff8c0e1370",
    "classification classic+oracle x1": "1a3c5b65373f1963",
    "segmentation classic": "4b7342c9b8a0b8d3",
}


@pytest.fixture(scope="module")
def abdomen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny abdomen-ct cohort (32x32 slices, 2 per patient) as the evaluation builds it."""
    from augmentor.simulate.abdomen import build_abdomen_ct

    folder = tmp_path_factory.mktemp("abdomen-ct")
    build_abdomen_ct(folder, train_size=4, test_size=2, size=32, scan_size=32, slices_per_patient=2, workers=1, progress=False)
    return folder


def test_an_abdomen_ct_cohort_is_reused_only_when_it_matches(abdomen: Path, tmp_path: Path) -> None:
    from evaluation.inputs import cohort_paths

    options = {"cohort": "abdomen-ct", "cohort_train_size": 4, "cohort_test_size": 2, "cohort_dir": str(abdomen)}
    assert cohort_paths(DataSection(**options), tmp_path) == (abdomen, False)  # type: ignore[arg-type]
    for change, message in (({"cohort_test_size": 3}, "sizes"), ({"cohort_seed": 1}, "seed 0 (recipe: 1)")):
        with pytest.raises(AugmentorError, match=re.escape(message)):
            cohort_paths(DataSection(**{**options, **change}), tmp_path)  # type: ignore[arg-type]


def test_phantoms_are_built_at_the_real_size_reused_and_checked(abdomen: Path, tmp_path: Path) -> None:
    from augmentor.data.reader import read_info
    from evaluation.phantoms import build_phantom_pools
    from evaluation.recipe import PhantomSection

    real = read_info(abdomen / "train.h5")
    options = PhantomSection(n_patients=1, slices_per_patient=2, seed=1, dir=str(tmp_path / "pools"))
    first = build_phantom_pools(options, None, real, 2, tmp_path, progress=False)
    assert first.record["built"] and read_info(first.phantom).image_shape == real.image_shape and not first.translated
    again = build_phantom_pools(options, None, real, 2, tmp_path, progress=False)
    assert again.phantom == first.phantom and not again.record["built"]
    with pytest.raises(AugmentorError, match="holds 2 phantom slices, the arms need 3"):
        build_phantom_pools(options, None, real, 3, tmp_path, progress=False)
    with pytest.raises(AugmentorError, match="phantom slices are"):
        build_phantom_pools(PhantomSection(file=str(first.phantom)), None, dataclasses.replace(real, image_shape=(1, 64, 64)), 2, tmp_path, progress=False)
