"""``python -m evaluation.compare``: arms of two reports against each other, paired by seed and test sample."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from augmentor.data.provenance import sha256_file
from augmentor.errors import AugmentorError
from cli import app
from evaluation.compare import compare, locate_test_files, main
from tests.evaluation.conftest import save_tiny_generator, training_record

Run = Callable[..., tuple[int, str]]
QUICK = ("arms.segmentation=[]", "fidelity.enabled=false", "memorisation.enabled=false", "arms.reference=false")
ARMS = ('arms.classification=["classic", "classic+synthetic"]', "arms.sweep=[1]")


def test_two_generators_compared_arm_by_arm(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path, capsys: Any) -> None:
    other = save_tiny_generator(tmp_path / "other-gan", training_record(tiny_inputs.train), seed=1)
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_evaluate(a, tiny_inputs.overrides(*QUICK, *ARMS))[0] == 0
    assert run_evaluate(b, tiny_inputs.overrides(*QUICK, *ARMS, f"synthetic.model={other}"))[0] == 0
    reports = [json.loads((folder / "report.json").read_text())["classification"] for folder in (a, b)]

    result = compare(a, b, ["classic+synthetic x1", "classic"], [tiny_inputs.test])
    synthetic, classic = result["arms"]
    for metric in ("accuracy", "sensitivity_macro", "auc_macro"):
        estimates = [report["metrics"]["classic+synthetic x1"][metric] for report in reports]
        difference = synthetic["differences"][metric]
        assert difference["estimate"] == pytest.approx(estimates[0]["estimate"] - estimates[1]["estimate"], abs=2e-6)
        assert difference["seeds_higher"] == sum(x > y for x, y in zip(estimates[0]["per_seed"], estimates[1]["per_seed"], strict=True))
        assert difference["low"] <= difference["estimate"] <= difference["high"]
        # the classic arm does not use the generator: the same training, so no difference at all
        assert classic["differences"][metric]["estimate"] == 0.0 and classic["differences"][metric]["seeds_higher"] == 0
    # without test files they are found by name (here next to the reports) and taken for their SHA-256
    assert compare(a, b, ["classic+synthetic x1", "classic"]) == result
    # B − A is A − B turned round
    back = compare(b, a, ["classic+synthetic x1"], [tiny_inputs.test])["arms"][0]["differences"]["accuracy"]
    forth = synthetic["differences"]["accuracy"]
    assert (back["estimate"], back["low"], back["high"]) == pytest.approx((-forth["estimate"], -forth["high"], -forth["low"]), abs=2e-6)

    out = tmp_path / "comparison.json"
    assert main([str(a), str(b), "--arm", "classic+synthetic x1", "--test", str(tiny_inputs.test), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| classic+synthetic x1 | " in printed and " of 2 seeds higher" in printed
    assert json.loads(out.read_text())["arms"][0]["differences"] == synthetic["differences"]
    # the same through the augment command line, whose errors are one line with exit status 2
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(a), str(b), "--arm", "classic+synthetic x1", "--test", str(tiny_inputs.test)])
    assert result.exit_code == 0 and result.output.strip() == printed.strip()
    result = runner.invoke(app, ["compare", str(a), str(b), "--arm", "classic+synthetic x1"])
    assert result.exit_code == 0 and result.output.strip() == printed.strip()
    result = runner.invoke(app, ["compare", str(a), str(b), "--arm", "classic+synthetic x1", "--test", str(tiny_inputs.test), "--out", str(out)])
    assert result.exit_code == 2 and result.output.strip() == f"error: {out} exists; pass --overwrite to replace it"


def test_reports_that_cannot_be_paired_are_refused_in_one_line(
    tiny_inputs: Any, tiny_file: Callable[..., Path], run_evaluate: Run, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, elsewhere = tmp_path / "a", tmp_path / "elsewhere"
    assert run_evaluate(a, tiny_inputs.overrides(*QUICK, *ARMS))[0] == 0
    other_test = tiny_file("other-test.h5", count=24, patients=8, seed=5, patient_prefix="other-")
    assert run_evaluate(elsewhere, tiny_inputs.overrides(*QUICK, *ARMS, f'data.test=["{other_test}"]'))[0] == 0
    out = tmp_path / "keep.json"
    out.write_text("keep me")
    # a report moved away from its test file, next to another file of the same name: not taken for it
    moved = tmp_path / "moved"
    shutil.copytree(a, moved / "a")
    shutil.copy(other_test, moved / "test.h5")
    monkeypatch.chdir(moved)
    cases = [
        ([str(moved / "a"), str(moved / "a"), "--arm", "classic"], "the reports' test file 'test.h5' (SHA-256"),
        ([str(a), str(elsewhere), "--arm", "classic", "--test", str(tiny_inputs.test)], "were not tested on the same files"),
        ([str(a), str(a), "--arm", "classic", "--test", str(other_test)], "not the reports' test files"),
        ([str(a), str(a), "--arm", "classic+synthetic x3", "--test", str(tiny_inputs.test)], "no arm 'classic+synthetic x3'; its arms are 'classic', 'classic+synthetic x1'"),
        ([str(a), str(tmp_path / "none"), "--arm", "classic", "--test", str(tiny_inputs.test)], "none: file not found"),
        ([str(a), str(a), "--arm", "classic", "--test", str(tiny_inputs.test), "--out", str(out)], "keep.json exists; pass --overwrite"),
    ]
    for arguments, message in cases:
        assert main(arguments) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and error.count("\n") == 1, (message, error)
    assert out.read_text() == "keep me"


def test_test_files_are_found_under_the_recipes_cohort_folder(tiny_file: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cohorts" / "lung-nodules-seed1").mkdir(parents=True)
    test = tiny_file("cohorts/lung-nodules-seed1/test.h5", count=6, patients=3, seed=1)
    decoy = tiny_file("test.h5", count=6, patients=3, seed=2)  # same name in the working folder, other bytes
    report = {
        "recipe": {"data": {"cohort_dir": "lung-nodules-seed1"}},
        "inputs": {"files": [{"role": "real train", "path": "train.h5", "sha256": "0" * 64}, {"role": "real test", "path": "test.h5", "sha256": sha256_file(test)}]},
    }
    monkeypatch.chdir(tmp_path)
    folders = [tmp_path / "reports" / "a", tmp_path / "reports" / "b"]
    assert [p.resolve() for p in locate_test_files([report, report], folders)] == [test.resolve()]
    report["inputs"]["files"][1]["sha256"] = sha256_file(decoy)  # type: ignore[index]
    assert [p.resolve() for p in locate_test_files([report, report], folders)] == [decoy.resolve()]
    report["inputs"]["files"][1]["sha256"] = "f" * 64  # type: ignore[index]
    with pytest.raises(AugmentorError, match=r"test file 'test.h5' \(SHA-256 ffffffffffff…, file 1 of 1\) is not in a report folder"):
        locate_test_files([report, report], folders)
