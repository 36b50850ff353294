"""The training monitor: scores at the right steps, ships the best step, resumes exactly, refuses a reference
that shares patients with the training data, and leaves the training run itself untouched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from augmentor.data.provenance import sha256_file
from augmentor.errors import AugmentorError, RecipeError
from augmentor.models import MODEL_CARD, MODEL_WEIGHTS
from augmentor.recipes import load_recipe
from augmentor.training.cgan import ConditionalGAN
from augmentor.training.checkpoint import list_checkpoints, load_checkpoint
from augmentor.training.run import standing_generator, train
from augmentor.training.trainer import CHECKPOINTS
from evaluation import monitor as monitor_module
from evaluation.monitor import FEATURE_CACHE, MIN_COVERAGE, MONITOR_LOG, POSTHOC_LOG, criterion, main
from tests.training.conftest import crash_at_update, write_tiny_dataset


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lesions of other (virtual) patients, as the tuning cohort holds."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tuning") / "test.h5", count=32, seed=1, patient_prefix="tuning")


def monitored(reference: Path, *overrides: str) -> Any:
    return load_recipe("tiny-cgan", [
        "train.steps=12", "train.checkpoint_every=4", "train.sample_every=0", "train.log_every=4", "train.keep_checkpoints=5",
        f"monitor.reference={json.dumps(str(reference))}", "monitor.every=4", "monitor.samples_per_class=16", *overrides,
    ])


def log(run: Path, name: str = MONITOR_LOG) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


def test_monitor_scores_at_its_steps_and_ships_the_best(tiny_h5: Path, reference: Path, tmp_path: Path) -> None:
    out = train(monitored(reference, "train.steps=10"), tiny_h5, tmp_path / "run", progress=False)
    lines = log(out)
    assert [line["step"] for line in lines] == [4, 8, 10]  # every 4 steps and at the end
    scores = lines[0]["scores"]
    assert set(scores) == {"round", "square", "all"}
    assert set(scores["all"]) >= {"kid", "kid_std", "precision", "recall", "density", "coverage", "diversity", "near_copy_fraction", "n"}
    assert scores["round"]["n"] == 16 and scores["all"]["n"] == 32
    assert set(scores["all"]["diversity"]["criteria"]) == {"nn_distance", "nn_mask_iou", "lesion_area", "bright_fraction"}
    assert (out / FEATURE_CACHE).is_file()

    card = json.loads((out / MODEL_CARD).read_text())
    values = {line["step"]: criterion(line["scores"], "kid-covered") for line in lines}
    qualified = [step for step in values if values[step] < float("inf")]
    best = min(qualified, key=lambda step: (values[step], step)) if qualified else lines[0]["step"]
    assert card["monitor"]["selected_step"] == best and card["monitor"]["select"] == "kid-covered"
    assert card["monitor"]["scores"] == next(line["scores"] for line in lines if line["step"] == best)
    assert card["monitor"]["reference"] == {"path": "test.h5", "sha256": sha256_file(reference), "num_samples": 32}
    assert card["recipe"]["monitor"]["reference"] == "test.h5"  # no folder in the card


def test_detectability_is_scored_at_every_check_and_select_c2st_ships_the_least_detectable_covered_step(
    tiny_h5: Path, reference: Path, tmp_path: Path
) -> None:
    out = train(monitored(reference, "train.steps=8", "monitor.detectability=true", "monitor.select=c2st"), tiny_h5, tmp_path / "run", progress=False)
    lines = log(out)
    assert [line["step"] for line in lines] == [4, 8]
    for line in lines:
        assert 0.0 <= line["scores"]["all"]["c2st_auc"] <= 1.0 and 0.0 <= line["scores"]["all"]["c2st_accuracy"] <= 1.0
        assert "c2st_auc" not in line["scores"]["round"]  # all classes together only
    values = {line["step"]: criterion(line["scores"], "c2st") for line in lines}
    qualified = [step for step in values if values[step] < float("inf")]
    best = min(qualified, key=lambda step: (values[step], step)) if qualified else lines[0]["step"]
    assert json.loads((out / MODEL_CARD).read_text())["monitor"]["selected_step"] == best
    # the rule itself: covered steps only, the lower AUC first
    assert criterion({"all": {"kid": 0.1, "coverage": 0.6, "c2st_auc": 0.9}}, "c2st") > criterion({"all": {"kid": 0.9, "coverage": 0.6, "c2st_auc": 0.7}}, "c2st")
    assert criterion({"all": {"kid": 0.1, "coverage": 0.1, "c2st_auc": 0.5}}, "c2st") == float("inf")


def test_the_selected_step_ships_not_the_last(tiny_h5: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KID is made lowest at step 8 of 12: the model must be step 8's EMA generator."""
    kid_of_step = iter([0.5, 0.1, 0.3])
    original = monitor_module.Scorer.score

    def score(self: Any, generator: torch.nn.Module) -> dict[str, Any]:
        scores = original(self, generator)
        scores["all"]["kid"] = next(kid_of_step)
        scores["all"]["coverage"] = 0.6  # every step covers the reference: KID decides
        return scores

    monkeypatch.setattr(monitor_module.Scorer, "score", score)
    recipe = monitored(reference)
    out = train(recipe, tiny_h5, tmp_path / "run", progress=False)
    card = json.loads((out / MODEL_CARD).read_text())
    assert card["monitor"]["selected_step"] == 8 and card["steps"] == 12

    network, _ = load_checkpoint(out / CHECKPOINTS / "step-00000008.json")
    from augmentor.models import load_generator

    shipped, _ = load_generator(out)
    step_8 = shipped.__class__(**card["architecture"]["config"])
    step_8.load_state_dict(network["ema"]["shadow"])
    expected = standing_generator(step_8, recipe.train).state_dict()
    weights = load_file(str(out / MODEL_WEIGHTS))
    assert all(torch.equal(weights[key], value.to(weights[key].dtype)) for key, value in expected.items())
    last, _ = load_checkpoint(out / CHECKPOINTS / "step-00000012.json")
    assert any(not torch.equal(last["ema"]["shadow"][key], value) for key, value in network["ema"]["shadow"].items())



def test_resume_continues_the_monitor_exactly(tiny_h5: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = monitored(reference)
    straight = train(recipe, tiny_h5, tmp_path / "straight", progress=False)

    # update 10: after the score and checkpoint at step 8
    crash_at_update(monkeypatch, ConditionalGAN, 10, lambda: train(recipe, tiny_h5, tmp_path / "resumed", progress=False))
    resumed_dir = tmp_path / "resumed"
    # a score the checkpoint does not know of (as if the crash came after it): the resumed run must drop it
    with open(resumed_dir / MONITOR_LOG, "a") as stream:
        stream.write(json.dumps({"step": 9, "seconds": 0.0, "scores": {}}) + "\n")
    assert [step for step, _ in list_checkpoints(resumed_dir / CHECKPOINTS)] == [4, 8]
    (resumed_dir / CHECKPOINTS / "step-00000008.json").unlink()  # resume from step 4: one score to redo
    cache = (resumed_dir / FEATURE_CACHE).stat().st_mtime_ns
    resumed = train(recipe, tiny_h5, resumed_dir, resume=True, progress=False)

    assert (resumed / FEATURE_CACHE).stat().st_mtime_ns == cache  # the feature CNN was not retrained
    strip = lambda lines: [{k: v for k, v in line.items() if k != "seconds"} for line in lines]  # noqa: E731
    assert strip(log(resumed)) == strip(log(straight))
    assert (straight / MODEL_WEIGHTS).read_bytes() == (resumed / MODEL_WEIGHTS).read_bytes()
    a, b = (json.loads((run / MODEL_CARD).read_text())["monitor"] for run in (straight, resumed))
    assert a == b


def test_the_monitor_does_not_change_training(tiny_h5: Path, reference: Path, tmp_path: Path) -> None:
    plain = load_recipe("tiny-cgan", ["train.steps=8", "train.checkpoint_every=8", "train.sample_every=0"])
    watched = monitored(reference, "train.steps=8", "train.checkpoint_every=8")
    runs = [train(r, tiny_h5, tmp_path / name, progress=False) for r, name in ((plain, "plain"), (watched, "watched"))]
    a, b = (load_checkpoint(run / CHECKPOINTS / "step-00000008.json")[0] for run in runs)
    assert all(torch.equal(a["algorithm"]["generator"][k], v) for k, v in b["algorithm"]["generator"].items())
    assert all(torch.equal(a["ema"]["shadow"][k], v) for k, v in b["ema"]["shadow"].items())


def test_a_reference_sharing_patients_is_refused(tiny_h5: Path, tmp_path: Path) -> None:
    shared = write_tiny_dataset(tmp_path / "shared.h5", count=8, seed=3)  # patient-000 ... patient-003: in the training file
    with pytest.raises(AugmentorError, match=r"monitor\.reference shared\.h5 must hold other patients.*share 4 patient id"):
        train(monitored(shared), tiny_h5, tmp_path / "run", progress=False)
    with pytest.raises(AugmentorError, match="same file"):
        train(monitored(tiny_h5), tiny_h5, tmp_path / "run", progress=False)
    # a missing reference (a shipped recipe's tuning cohort not built yet): one line saying how to go on
    with pytest.raises(AugmentorError, match=r"monitor\.reference .*missing\.h5: file not found .* or monitor\.every=0 to train without"):
        train(monitored(tmp_path / "missing.h5"), tiny_h5, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("monitor.every=-1", "every must be >= 0"),
        ("monitor.every=10", "set monitor.reference"),
        ("monitor.samples_per_class=4", "samples_per_class must be >= 8"),
        ("monitor.select=fid", "'fid' is not one of 'kid-covered', 'kid', 'criteria', 'c2st'"),
        ("monitor.select=c2st", "set monitor.detectability = true"),
        ("monitor.evry=3", "did you mean 'every'"),
    ],
)
def test_monitor_section_is_validated(override: str, expected: str) -> None:
    with pytest.raises(RecipeError, match=expected):
        load_recipe("tiny-cgan", [override])


def test_monitor_defaults_leave_recipes_unchanged() -> None:
    recipe = load_recipe("tiny-cgan")
    assert recipe.monitor.every == 0 and recipe.monitor.reference == "" and recipe.monitor.samples_per_class == 256
    assert load_recipe("tiny-cgan", ["monitor.reference=cohorts/x/test.h5"]).monitor.reference == "cohorts/x/test.h5"


@pytest.mark.parametrize("switches", [(), ("model.upsample=resize", "model.mask_output=logits")], ids=["default", "resize-logits"])
def test_posthoc_scores_every_checkpoint(
    switches: tuple[str, ...], tiny_h5: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Post hoc, the generator is built with the run's model switches (resize upsampling has other weights' shapes)."""
    recipe = load_recipe("tiny-cgan", ["train.steps=8", "train.checkpoint_every=4", "train.sample_every=0", "train.keep_checkpoints=5", *switches])
    out = train(recipe, tiny_h5, tmp_path / "run", progress=False)
    assert main([str(out), "--reference", str(reference), "--data", str(tiny_h5), "--samples-per-class", "16"]) == 0
    lines = log(out, POSTHOC_LOG)
    assert [line["step"] for line in lines] == [4, 8]
    assert lines[0]["scores"]["all"]["near_copy_fraction"] is not None
    assert "best: step" in capsys.readouterr().out
    assert main([str(out), "--reference", str(tiny_h5), "--data", str(tiny_h5)]) == 1  # the training file itself


def test_a_checkpoint_from_before_the_monitor_section_resumes(tiny_h5: Path, tmp_path: Path) -> None:
    recipe = load_recipe("tiny-cgan", ["train.steps=4", "train.checkpoint_every=4", "train.sample_every=0"])
    out = train(recipe, tiny_h5, tmp_path / "run", progress=False)
    marker = out / CHECKPOINTS / "step-00000004.json"
    record = json.loads(marker.read_text())
    del record["metadata"]["recipe"]["monitor"]  # as written before [monitor] existed
    marker.write_text(json.dumps(record))
    longer = load_recipe("tiny-cgan", ["train.steps=8", "train.checkpoint_every=4", "train.sample_every=0"])
    train(longer, tiny_h5, out, resume=True, progress=False)
    assert json.loads((out / MODEL_CARD).read_text())["steps"] == 8
    with pytest.raises(AugmentorError, match=r"monitor\.every was 0"):
        train(monitored(tiny_h5, "train.steps=12"), tiny_h5, out, resume=True, progress=False)


def _monitored_rank(rank: int, port: int, reference: Path, data: Path, out: Path) -> None:
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(monitored(reference, "train.steps=8"), data, out, device="cpu", progress=False)


def test_under_data_parallel_rank_zero_alone_scores(tiny_h5: Path, reference: Path, tmp_path: Path) -> None:
    from tests.training.test_distributed import _free_port

    context = torch.multiprocessing.get_context("fork")
    port = _free_port()
    processes = [context.Process(target=_monitored_rank, args=(rank, port, reference, tiny_h5, tmp_path / "run")) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
        if process.is_alive():
            process.kill()
    assert [process.exitcode for process in processes] == [0, 0]
    assert [line["step"] for line in log(tmp_path / "run")] == [4, 8]  # one writer: no line twice
    card = json.loads((tmp_path / "run" / MODEL_CARD).read_text())
    assert card["processes"] == 2 and card["monitor"]["selected_step"] in (4, 8)


def test_features_are_standardised_by_the_reference(reference: Path, tmp_path: Path) -> None:
    """KID's cubic kernel on raw CNN features lets the largest-scale class decide alone: the scorer standardises
    every feature by the reference's mean and spread, the same map for real and generated images."""
    import numpy as np

    from augmentor.data.reader import read_info
    from evaluation.monitor import Scorer, load_reference

    info = read_info(reference)
    loaded = load_reference(reference, info.class_names, info.image_shape)
    scorer = Scorer(loaded, info.class_names, info.hu_window, None, latent_dim=8, samples_per_class=16, seed=0, cache=tmp_path / "features.safetensors")
    pooled = np.concatenate(list(scorer.real_features.values()))
    np.testing.assert_allclose(pooled.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(pooled.std(axis=0)[pooled.std(axis=0) > 1e-3], 1.0, rtol=1e-3)
    images = np.concatenate([scorer._normalised(lesions.hu) for lesions in scorer.real.values()])
    np.testing.assert_allclose(scorer._embed(images), pooled, atol=1e-4)  # generated images go through the same map


def test_a_collapsed_step_with_the_lowest_kid_is_not_selected() -> None:
    """A generator collapsed onto the mean lesion can score the lowest KID; "kid-covered" passes it over."""
    collapsed = {"all": {"kid": 0.7, "coverage": 0.0}}
    diverse = {"all": {"kid": 1.2, "coverage": 0.6}}
    assert criterion(collapsed, "kid") < criterion(diverse, "kid")
    assert criterion(collapsed, "kid-covered") == float("inf") and criterion(diverse, "kid-covered") == 1.2
    assert criterion({"all": {"kid": 0.5, "coverage": MIN_COVERAGE}}, "kid-covered") == 0.5
    with pytest.raises(ValueError, match="valid: kid, kid-covered"):
        criterion(diverse, "fid")


def test_select_criteria_prefers_the_step_missing_fewer_diversity_criteria_then_the_lower_kid() -> None:
    def step(kid: float, missed: dict[str, int], coverage: float = 0.6) -> dict[str, Any]:
        names = ["nn_distance", "nn_mask_iou", "lesion_area", "bright_fraction"]
        scores: dict[str, Any] = {
            name: {"diversity": {"criteria": dict.fromkeys(names, 1.0), "passed": names[count:]}} for name, count in missed.items()
        }
        scores["all"] = {"kid": kid, "coverage": coverage, "diversity": {"criteria": dict.fromkeys(names, 1.0), "passed": []}}
        return scores

    early = step(0.2, {"benign": 1, "malignant": 1})  # the lower KID, two criteria missed
    late = step(1.5, {"benign": 0, "malignant": 1})  # a higher KID, one missed
    assert criterion(early, "kid-covered") < criterion(late, "kid-covered")
    assert criterion(late, "criteria") < criterion(early, "criteria")
    assert criterion(step(0.9, {"benign": 0, "malignant": 1}), "criteria") < criterion(late, "criteria")  # same count: the KID decides
    assert criterion(step(-0.01, {"benign": 2, "malignant": 0}), "criteria") > criterion(step(40.0, {"benign": 1, "malignant": 0}), "criteria")
    assert criterion(step(0.1, {"benign": 0, "malignant": 0}, coverage=0.1), "criteria") == float("inf")  # collapsed: never


def test_select_last_ships_the_last_step_whatever_its_scores() -> None:
    """``"last"``: a later step beats an earlier one with a far better KID (the scores are only a record)."""
    better, worse = {"all": {"kid": 0.1, "coverage": 0.9}}, {"all": {"kid": 9.0, "coverage": 0.0}}
    assert criterion(worse, "last", 3500) < criterion(better, "last", 500)
    assert criterion(better, "kid-covered", 500) < criterion(worse, "kid-covered", 3500)
