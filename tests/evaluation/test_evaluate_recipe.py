"""The ``evaluate`` recipe, the arms it expands into, the validation split, and one-line errors for bad inputs."""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from augmentor.errors import AugmentorError
from augmentor.generate import generate
from augmentor.recipes import RECIPE_DIR, load_recipe
from evaluation.arms import ArmKind, Pool, StageBudget, expand_arms
from evaluation.models import CLASSIFIERS, FridAdarCNN, build_classifier, build_segmenter
from evaluation.recipe import ArmName, ClassifierName, EvaluateRecipe
from evaluation.splits import validation_split

Run = Callable[..., tuple[int, str]]


def test_recipe_names_match_the_registries() -> None:
    assert set(typing.get_args(ClassifierName)) == set(CLASSIFIERS)
    assert set(typing.get_args(ArmName)) == {kind.value for kind in ArmKind}


@pytest.mark.parametrize("name", ["tiny-evaluate", "evaluate-liver", "evaluate-lung"])
def test_shipped_recipes_load(name: str) -> None:
    assert (RECIPE_DIR / f"{name}.toml").exists()
    recipe = load_recipe(name, expect="evaluate")
    assert isinstance(recipe, EvaluateRecipe) and recipe.name == name


def test_published_protocols_in_the_shipped_recipes() -> None:
    liver, lung = load_recipe("evaluate-liver"), load_recipe("evaluate-lung")
    assert liver.data.cohort == "liver-lesions" and liver.synthetic.model == "frid-adar-liver" and len(liver.train.seeds) == 5
    assert liver.arms.sweep == (1.0, 3.0, 10.0) and "classic+oracle" in liver.arms.classification and liver.needs_oracle
    assert liver.train.epochs > 0 and liver.train.min_steps > 0 and liver.train.patience >= 5
    assert lung.data.cohort == "lung-nodules" and lung.synthetic.model == "onishi-lung-dcgan" and lung.arms.pretrain_samples == 60_000


def test_arms_expand_the_sweep_and_put_the_baseline_first() -> None:
    arms = expand_arms(["classic", "classic+synthetic", "real", "synthetic-only", "classic+oracle"], [5, 1], 0)
    assert [arm.name for arm in arms] == [
        "real", "classic", "classic+synthetic x1", "classic+synthetic x5", "synthetic-only", "classic+oracle x1", "classic+oracle x5"
    ]
    assert arms[4].ratio == 5.0  # TSTR defaults to the largest sweep ratio
    train, pretrain_budget = StageBudget(150, 400), StageBudget(30, 300)
    stages = arms[3].stages([10, 20, 30], train=train, pretrain=pretrain_budget, pretrain_per_class=[7, 7, 7])
    assert len(stages) == 1 and stages[0].per_class == (50, 100, 150) and stages[0].pool is Pool.SYNTHETIC and stages[0].real and stages[0].augment
    assert (stages[0].epochs, stages[0].min_steps) == (150, 400)
    oracle = arms[6].stages([10, 20, 30], train=train, pretrain=pretrain_budget, pretrain_per_class=[7, 7, 7])
    assert oracle[0].pool is Pool.ORACLE and oracle[0].per_class == (50, 100, 150) and oracle[0].real and oracle[0].augment
    pretrain = expand_arms(["pretrain-finetune"], [1], 0)[0].stages([10, 20], train=train, pretrain=pretrain_budget, pretrain_per_class=[30, 30])
    assert [(s.name, s.real, s.per_class, s.epochs) for s in pretrain] == [("pretrain", False, (30, 30), 30), ("finetune", True, (0, 0), 150)]
    # synthetic-only on the pretraining's samples is that stage; on other samples it trains with the training budget
    same = expand_arms(["synthetic-only"], [3], 0)[0].stages([10, 10], train=train, pretrain=pretrain_budget, pretrain_per_class=[30, 30])
    other = expand_arms(["synthetic-only"], [2], 0)[0].stages([10, 10], train=train, pretrain=pretrain_budget, pretrain_per_class=[30, 30])
    assert same[0] == pretrain[0] and (other[0].name, other[0].epochs) == ("train", 150)


def test_validation_split_is_by_patient_and_stratified() -> None:
    labels = np.arange(60) % 3
    patients = np.array([f"p{i // 2:02d}" for i in range(60)])  # two lesions per patient
    split = validation_split(labels, patients, 0.2, seed=0)
    assert not set(patients[split.train]) & set(patients[split.validation])
    assert sorted(np.concatenate([split.train, split.validation]).tolist()) == list(range(60))
    assert set(labels[split.validation]) == {0, 1, 2}
    assert 0.1 <= split.validation.size / 60 <= 0.3
    again = validation_split(labels, patients, 0.2, seed=0)
    np.testing.assert_array_equal(split.validation, again.validation)


def test_downstream_networks_build_by_name() -> None:
    import torch

    network = FridAdarCNN(in_channels=1, num_classes=3, image_size=64, channels=(32, 64, 128), dense_units=512)
    images = torch.zeros(2, 1, 64, 64)
    assert network(images).shape == (2, 3) and network.embed(images).shape == (2, 512)
    options = load_recipe("tiny-evaluate").classifier
    for name in ("resnet10", "densenet121"):
        monai_network = build_classifier(name, in_channels=1, num_classes=3, image_size=32, options=options).eval()
        assert monai_network(torch.zeros(1, 1, 32, 32)).shape == (1, 3)
    segmenter = build_segmenter(in_channels=1, num_labels=2, channels=(4, 8), residual_units=0)
    assert segmenter(torch.zeros(1, 1, 16, 16)).shape == (1, 2, 16, 16)
    with pytest.raises(AugmentorError, match=r"unknown classifier network 'resnet9' \(did you mean 'resnet50'\?\); valid: frid-adar-cnn"):
        build_classifier("resnet9", in_channels=1, num_classes=3, image_size=32, options=options)


def test_bad_inputs_are_one_line_errors_and_write_nothing(tiny_inputs: Any, tiny_file: Callable[..., Path], run_evaluate: Run, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "bad"
    few = generate("all", 2, tmp_path / "few.h5", model=tiny_inputs.model, progress=False)
    cases = [
        (tiny_inputs.overrides("train.max_step=5"), "unknown key 'train.max_step' (did you mean 'min_steps'?)"),
        (tiny_inputs.overrides("classifier.network=densenet12"), "classifier.network: 'densenet12' is not one of"),
        (tiny_inputs.overrides(f'data.train=["{tmp_path / "missing.h5"}"]'), "missing.h5: file not found"),
        (tiny_inputs.overrides('data.cohort="liver-lesions"'), "give data.cohort or data.train/data.test files, not both"),
        (tiny_inputs.overrides('synthetic.model=""'), "arms classic+synthetic, pretrain-finetune, synthetic-only need synthetic data"),
        (tiny_inputs.overrides("synthetic.model=no-such-model"), "unknown model 'no-such-model'"),
        (tiny_inputs.overrides('synthetic.model=""', f'synthetic.files=["{few}"]'), "the synthetic files hold 2 samples of class 'cyst', the arms need"),
        (tiny_inputs.overrides("train.seeds=[]"), "seeds must be distinct integers >= 0"),
        (tiny_inputs.overrides("arms.sweep=[0]"), "sweep must be distinct ratios > 0"),
        (tiny_inputs.overrides('statistics.pairs=[["classic", "classic"]]'), "pairs: 'classic' against itself"),
        (tiny_inputs.overrides('statistics.pairs=[["classic", "real", "x"]]'), "statistics.pairs[0]: expected 2 values"),
    ]
    for overrides, message in cases:
        code, output = run_evaluate(out, overrides)
        assert code == 2, (overrides, output)
        assert output.count("\n") == 1 and output.startswith("error: ") and message in output, (message, output)
    # a recipe that builds a cohort checks its synthetic inputs before spending minutes on the cohort
    code, output = run_evaluate(out, [f"data.cohort_dir={tmp_path / 'cohorts'}", "synthetic.model=no-such-model"])
    assert code == 2 and "unknown model 'no-such-model'" in output and not (tmp_path / "cohorts").exists()
    no_ids = tiny_file("no-ids.h5", count=6, with_patient_ids=False)
    code, output = run_evaluate(out, tiny_inputs.overrides(f'data.test=["{no_ids}"]'))
    assert code == 2 and "has no patient_ids" in output
    assert not (tmp_path / "reports").exists()


def test_a_gan_recipe_is_not_an_evaluate_recipe() -> None:
    from augmentor.errors import RecipeError

    with pytest.raises(RecipeError, match="is a 'gan' recipe, this command needs a 'evaluate' recipe"):
        load_recipe("tiny-cgan", expect="evaluate")
