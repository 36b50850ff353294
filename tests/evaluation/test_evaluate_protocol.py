"""Protocol guarantees of ``augment evaluate``: a generator that saw the validation patients is refused, finished
jobs are cached by content (a rerun or an extended run recomputes only what is new), and the synthetic-only arm is
the pretraining of pretrain-finetune (one computation)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from augmentor.data.provenance import sha256_file, sha256_text
from augmentor.data.reader import H5File
from evaluation.splits import validation_split
from tests.evaluation.conftest import save_tiny_generator

Run = Callable[..., tuple[int, str]]
QUICK = ("arms.segmentation=[]", "fidelity.enabled=false", "memorisation.enabled=false")


def test_a_generator_trained_on_validation_patients_is_refused_unless_allowed(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    strict = tiny_inputs.overrides(*QUICK, 'arms.classification=["classic", "classic+synthetic"]', "arms.sweep=[1]", "synthetic.allow_generator_saw_validation=false")
    code, output = run_evaluate(tmp_path / "refused", strict)
    assert code == 2 and "validation patients" in output and "allow_generator_saw_validation" in output
    assert not (tmp_path / "refused").exists()

    # a generator trained on the split's training patients only is accepted, and the report says it saw none
    file = H5File(tiny_inputs.train)
    split = validation_split(file.labels(), file.patient_ids().astype(str), 0.25, 0)
    record = {"path": "train.h5", "sha256": "0" * 64, "patients_sha256": sha256_text(split.train_patients)}
    model = save_tiny_generator(tmp_path / "clean-gan", record)
    overrides = [*strict[:-1], f"synthetic.model={model}", "synthetic.allow_generator_saw_validation=false"]
    code, output = run_evaluate(tmp_path / "accepted", overrides)
    assert code == 0, output
    report = json.loads((tmp_path / "accepted" / "report.json").read_text())
    assert report["generator_saw_validation"]["status"] == "unseen"


def test_finished_jobs_are_cached_and_an_extended_run_computes_only_what_is_new(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = tiny_inputs.overrides(*QUICK, 'arms.classification=["real", "classic"]', f"train.cache={cache}", "arms.reference=false")
    assert run_evaluate(tmp_path / "first", [*base, "train.seeds=[0]"])[0] == 0
    first = json.loads((tmp_path / "first" / "report.json").read_text())
    assert first["jobs"] == {"total": 2, "from_cache": 0, "cache": str(cache)}
    assert len(list(cache.glob("*.json"))) == 2

    code, output = run_evaluate(tmp_path / "second", [*base, "train.seeds=[0, 1]"])
    assert code == 0
    second = json.loads((tmp_path / "second" / "report.json").read_text())
    assert second["jobs"]["total"] == 4 and second["jobs"]["from_cache"] == 2
    # each job says how it ended as it finishes: the cached ones first, then the new seed's
    lines = [line for line in output.splitlines() if line.startswith("evaluate: job ")]
    assert len(lines) == 4 and all("from the cache" in line for line in lines[:2]) and not any("from the cache" in line for line in lines[2:])
    assert "classification 'classic' seed 1: " in output and " steps (best " in lines[3] and lines[3].endswith(" min")
    # a cached job keeps the time it took when it ran: the summary says what the jobs cost, not only the rerun
    from evaluation.summary import markdown

    summaries = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("first", "second")]
    assert summaries[1]["job_seconds"] > summaries[0]["job_seconds"] > 0
    assert "2 of 4 jobs from the cache (the jobs' own training: " in markdown(summaries[1])
    one, two = np.load(tmp_path / "first" / "predictions.npz"), np.load(tmp_path / "second" / "predictions.npz")
    for arm in ("real", "classic"):
        np.testing.assert_array_equal(one[f"classification/{arm}/probabilities"][0], two[f"classification/{arm}/probabilities"][0])
    # a changed setting is a different job
    assert run_evaluate(tmp_path / "third", [*base, "train.seeds=[0]", "train.learning_rate=0.002"])[0] == 0
    assert json.loads((tmp_path / "third" / "report.json").read_text())["jobs"]["from_cache"] == 0


def test_a_larger_budget_recomputes_only_the_jobs_that_ran_into_the_old_one(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = tiny_inputs.overrides(*QUICK, 'arms.classification=["real", "classic"]', f"train.cache={cache}", "arms.reference=false")
    base += ["train.seeds=[0, 1, 2]", "train.eval_every=2", "train.patience=3", "train.lr_patience=1", "train.min_steps=2"]
    assert run_evaluate(tmp_path / "first", [*base, "train.epochs=3"])[0] == 0
    first = json.loads((tmp_path / "first" / "report.json").read_text())["classification"]["convergence"]
    bound = sum(first[arm]["budget_bound_seeds"] for arm in ("real", "classic"))
    assert 0 < bound < 6  # both kinds of job, or the test shows nothing
    assert run_evaluate(tmp_path / "second", [*base, "train.epochs=30"])[0] == 0
    second = json.loads((tmp_path / "second" / "report.json").read_text())
    assert second["jobs"]["from_cache"] == 6 - bound  # the early-stopped jobs hold under any budget they fit in
    for arm in ("real", "classic"):
        for seed, (steps, budget) in enumerate(zip(first[arm]["steps_run"], first[arm]["budget_steps"], strict=True)):
            if steps < budget:
                assert second["classification"]["convergence"][arm]["steps_run"][seed] == steps


def test_stored_logs_hold_for_a_budget_only_where_the_stage_fits_in_it() -> None:
    from types import SimpleNamespace

    from evaluation.jobs import holds_for_budgets

    def job(epochs: float) -> Any:  # 64 samples in batches of 32: 2 steps an epoch
        return SimpleNamespace(stages=(SimpleNamespace(epochs=epochs, min_steps=10),), settings=SimpleNamespace(batch_size=32))

    stopped = [{"samples": 64, "steps": 40, "budget_steps": 100, "budget_bound": False}]
    bound = [{"samples": 64, "steps": 100, "budget_steps": 100, "budget_bound": True}]
    assert holds_for_budgets(stopped, job(50)) and holds_for_budgets(stopped, job(20)) and holds_for_budgets(stopped, job(500))
    assert not holds_for_budgets(stopped, job(10))  # a 20-step budget would have cut it
    assert holds_for_budgets(bound, job(50)) and not holds_for_budgets(bound, job(100)) and not holds_for_budgets(bound, job(20))
    assert not holds_for_budgets(stopped * 2, job(50))  # another number of stages


def test_synthetic_only_is_the_pretraining_of_pretrain_finetune(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    overrides = tiny_inputs.overrides(*QUICK, 'arms.classification=["pretrain-finetune", "synthetic-only"]', "arms.pretrain_samples=0", "arms.synthetic_only_ratio=0")
    code, output = run_evaluate(tmp_path / "r", overrides)
    assert code == 0, output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["jobs"]["total"] == 2  # one job per seed serves both arms
    training = report["classification"]["training"]
    for only, both in zip(training["synthetic-only"], training["pretrain-finetune"], strict=True):
        assert only["stages"] == both["stages"][:1]
    assert report["classification"]["metrics"]["synthetic-only"]["accuracy"]["estimate"] is not None
    cache = tmp_path / "cache"
    for name in ("first", "again"):
        assert run_evaluate(tmp_path / name, [*overrides, f"train.cache={cache}"])[0] == 0
    assert json.loads((tmp_path / "again" / "report.json").read_text())["jobs"]["from_cache"] == 2  # jobs, not arms


def test_the_reference_row_and_convergence_record_are_reported(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    code, output = run_evaluate(tmp_path / "r", tiny_inputs.overrides(*QUICK, 'arms.classification=["real"]'))
    assert code == 0, output
    classification = json.loads((tmp_path / "r" / "report.json").read_text())["classification"]
    reference = classification["reference"]
    assert reference["name"].startswith("logistic regression") and 0.0 <= reference["metrics"]["accuracy"]["estimate"] <= 1.0
    convergence = classification["convergence"]["real"]
    assert len(convergence["steps_run"]) == 2 and all(best <= run for best, run in zip(convergence["best_step"], convergence["steps_run"], strict=True))
    # the tiny recipe's budgets are tiny, so its arms end on the budget: flagged, and shown in red
    assert classification["budget_bound"]["real"] == [0, 1]
    assert "class='warning'" in (tmp_path / "r" / "report.html").read_text()
    assert sha256_file(tiny_inputs.train)  # inputs untouched


@pytest.mark.slow
def test_the_tiny_recipe_runs_as_shipped(tmp_path: Path, monkeypatch: Any) -> None:
    # As a new user would: no overrides; it builds its tiny cohort and oracle, generates from the shipped model.
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["evaluate", "tiny-evaluate", "--out", "r"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["classification"]["efficiency"] and report["inputs"]["oracle"]["lesions"] > 0


def test_the_cache_key_follows_the_samples_not_the_file_bytes(tiny_file: Callable[..., Path]) -> None:
    import h5py

    from augmentor.data.provenance import sha256_file
    from evaluation.jobs import content_hash

    first, again, other = tiny_file("a.h5", seed=3), tiny_file("b.h5", seed=3), tiny_file("c.h5", seed=4)
    with h5py.File(again, "r+") as handle:  # the same samples, written again at another time
        handle.attrs["provenance"] = handle.attrs["provenance"].replace('"created": "', '"created": "later ')
    assert sha256_file(first) != sha256_file(again)
    assert content_hash(first) == content_hash(again) != content_hash(other)


def test_oracle_pools_of_different_sizes_live_side_by_side(tmp_path: Path) -> None:
    """A run that needs another oracle size (other arms, another sweep) builds its own pool beside the existing one
    instead of replacing it (the lesions drawn depend on the size, so the other run's cached jobs would go stale),
    and a run needing an existing size reuses it."""
    from evaluation.inputs import build_or_reuse_oracle
    from evaluation.recipe import DataSection

    options = DataSection(cohort="lung-nodules", cohort_dir=str(tmp_path / "lung-nodules-seed0"))
    small, record = build_or_reuse_oracle(options, 1000, [3, 3], tmp_path / "staging", progress=False)
    assert record["built"] and small.parent.name == f"lung-nodules-oracle-seed1000-n{record['lesions']}"
    first_bytes = small.read_bytes()
    large, record = build_or_reuse_oracle(options, 1000, [5, 5], tmp_path / "staging", progress=False)
    assert record["built"] and large.parent != small.parent
    assert small.read_bytes() == first_bytes  # the smaller pool is untouched
    again, record = build_or_reuse_oracle(options, 1000, [3, 3], tmp_path / "staging", progress=False)
    assert again == small and not record["built"]


def test_a_floor_above_the_epoch_budget_is_warned_of_before_training(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    # 27 training samples in batches of 8: 4 steps an epoch, so 3 epochs are 12 steps; a floor of 30 steps is
    # then the whole budget, and early stopping (never before the floor) cannot end the stage sooner.
    base = tiny_inputs.overrides(*QUICK, 'arms.classification=["real"]', "arms.reference=false", "train.seeds=[0]", "train.eval_every=2",
                                 "train.patience=2", "train.lr_patience=1", "train.epochs=3")
    code, output = run_evaluate(tmp_path / "floor", [*base, "train.min_steps=30"])
    assert code == 0
    assert "warning: classification: arm 'real', stage train: its floor of 30 steps is its budget (3 epochs of 27 samples are 12 steps)" in output
    report = json.loads((tmp_path / "floor" / "report.json").read_text())
    assert report["floor_bound"] and report["classification"]["convergence"]["real"]["steps_run"] == [30]
    assert "raise the epochs, not the floor" in (tmp_path / "floor" / "report.html").read_text()
    # the same budget given as epochs: no warning
    code, output = run_evaluate(tmp_path / "epochs", [*base, "train.min_steps=2", "train.epochs=8"])
    assert code == 0 and "warning" not in output
    assert "floor_bound" not in json.loads((tmp_path / "epochs" / "report.json").read_text())


def test_plan_lists_the_jobs_and_which_the_cache_holds_without_training(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = tiny_inputs.overrides(*QUICK, 'arms.classification=["real", "classic"]', f"train.cache={cache}", "arms.reference=false", "train.seeds=[0, 1]")
    code, output = run_evaluate(tmp_path / "planned", base, "--plan")
    assert code == 0 and not (tmp_path / "planned").exists() and not cache.exists()  # nothing trained, nothing written
    lines = output.strip().splitlines()
    assert lines[-1] == f"4 jobs, 0 of them in the cache ({cache}): 4 to train"
    assert "classification 'classic' seed 1: train 8 steps at most (2 epochs of 27 samples, floor 8): to train" in lines

    assert run_evaluate(tmp_path / "run", [*base[:-1], "train.seeds=[0]"])[0] == 0  # seed 0 trained and cached
    lines = run_evaluate(tmp_path / "planned", base, "--plan")[1].strip().splitlines()
    assert lines[-1] == f"4 jobs, 2 of them in the cache ({cache}): 2 to train"
    assert sorted(line.endswith("in the cache") for line in lines[:-1]) == [False, False, True, True]
    assert all(line.endswith("in the cache") == (" seed 0: " in line) for line in lines[:-1])


def test_pairs_compare_named_arms_like_the_baselines_do(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    from evaluation.summary import markdown

    arms = ('arms.classification=["real", "classic", "classic+synthetic"]', "arms.sweep=[1, 2]", "arms.reference=false")
    pairs = 'statistics.pairs=[["classic+synthetic x2", "classic+synthetic x1"], ["classic", "real"]]'
    code, output = run_evaluate(tmp_path / "r", tiny_inputs.overrides(*QUICK, *arms, pairs))
    assert code == 0, output
    section = json.loads((tmp_path / "r" / "report.json").read_text())["classification"]
    between = section["paired_differences_between"]
    assert [(entry["arm"], entry["baseline"]) for entry in between] == [("classic+synthetic x2", "classic+synthetic x1"), ("classic", "real")]
    for metric in section["metric_names"]:
        higher, lower = (section["metrics"][name][metric] for name in ("classic+synthetic x2", "classic+synthetic x1"))
        difference = between[0]["differences"][metric]
        if difference["estimate"] is None:
            continue
        assert difference["estimate"] == pytest.approx(higher["estimate"] - lower["estimate"], abs=2e-6)
        assert difference["seeds_higher"] == sum(a > b for a, b in zip(higher["per_seed"], lower["per_seed"], strict=True))
        assert difference["low"] <= difference["estimate"] <= difference["high"]
        # a pair against real is the same computation as the paired difference against real
        against_real = {key: value for key, value in between[1]["differences"][metric].items() if key != "seeds_higher"}
        assert against_real == section["paired_differences"]["classic"][metric]
    assert "classic+synthetic x2 − classic+synthetic x1" in (tmp_path / "r" / "report.html").read_text()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert [pair["arm"] for pair in summary["classification"]["pairs"]] == ["classic+synthetic x2", "classic"]
    table = markdown(summary)
    assert "| arm − baseline |" in table and "| classic − real | " in table and " of 2 seeds higher" in table

    # a name that is no arm is refused before anything trains, naming the arms there are
    code, output = run_evaluate(tmp_path / "bad", tiny_inputs.overrides(*QUICK, *arms, 'statistics.pairs=[["classic+synthetic x3", "classic"]]'))
    assert code == 2 and output.count("\n") == 1 and "no arm named 'classic+synthetic x3'; the arms are 'real'" in output
    assert not (tmp_path / "bad").exists()
    code, output = run_evaluate(tmp_path / "bad", tiny_inputs.overrides(*QUICK, *arms, 'statistics.pairs=[["x", "y"]]'))
    assert code == 2 and "no arm named 'x' or 'y'; the arms are 'real', 'classic'" in output
