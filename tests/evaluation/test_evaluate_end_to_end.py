"""``augment evaluate`` on the tiny recipe, end to end through the CLI, and the report it writes."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from evaluation.report import SECTIONS, print_headline

Run = Callable[..., tuple[int, str]]


def test_tiny_recipe_end_to_end(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "reports" / "tiny"
    monkeypatch.setattr(sys, "argv", ["augment", "evaluate", "tiny-evaluate", "--out", str(out), *(f"--set={o}" for o in tiny_inputs.overrides())])
    code, output = run_evaluate(out, tiny_inputs.overrides())
    assert code == 0, output
    *progress, result = output.strip().splitlines()
    assert result == f"wrote {out / 'report.html'} and {out / 'report.json'}"
    assert sorted(p.name for p in out.iterdir()) == ["inputs", "predictions.npz", "report.html", "report.json", "summary.json"]
    # before it: one line per job as it finished, and nothing else (the shipped tiny recipe raises no warning)
    assert len(progress) == json.loads((out / "report.json").read_text())["jobs"]["total"]
    assert all(re.fullmatch(r"evaluate: job \d+ of \d+: (classification|segmentation) '.+' seed \d: .+ steps \(best \d+\).*", line) for line in progress), progress
    assert not list(out.parent.glob(".*"))  # no staging folder left behind

    report = json.loads((out / "report.json").read_text())
    for key in ("format", "format_version", "name", "created", "runtime_s", "recipe", "versions", "inputs", "leakage", "split",
                "seeds", "statistics", "classification", "segmentation", "fidelity", "memorisation", "files"):
        assert key in report, key
    assert report["format"] == "augmentor-evaluation-report" and report["seeds"] == [0, 1]
    assert report["recipe"]["kind"] == "evaluate" and report["recipe"]["synthetic"]["model"] == tiny_inputs.model.name

    classification = report["classification"]
    arms = [arm["name"] for arm in classification["arms"]]
    assert arms == ["real", "classic", "classic+synthetic x1", "classic+synthetic x2", "pretrain-finetune", "synthetic-only"]
    for arm in arms:
        for metric in classification["metric_names"]:
            value = classification["metrics"][arm][metric]
            assert set(value) == {"estimate", "low", "high", "per_seed"} and len(value["per_seed"]) == 2
        head = classification["metrics"][arm]["accuracy"]
        assert head["low"] <= head["estimate"] <= head["high"]
        assert set(classification["roc"][arm]) == {"cyst", "metastasis", "hemangioma"}
        assert np.asarray(classification["confusion_matrices"][arm]).sum() == 2 * 24  # 2 seeds x 24 test samples
    assert classification["paired_differences"]["baseline"] == "real"
    assert set(classification["paired_differences"]) == {"baseline", *arms[1:]}
    assert set(classification["paired_differences"]["classic"]["auc_macro"]) == {"estimate", "low", "high", "p_value"}
    # the synthetic arms are also compared with classic augmentation alone, paired the same way
    versus_classic = classification["paired_differences_vs_classic"]
    assert versus_classic["baseline"] == "classic" and set(versus_classic) == {"baseline", *arms[2:]}
    for arm in arms[2:]:
        difference = versus_classic[arm]["accuracy"]["estimate"]
        expected = classification["metrics"][arm]["accuracy"]["estimate"] - classification["metrics"]["classic"]["accuracy"]["estimate"]
        assert difference == pytest.approx(expected, abs=1e-9)
    # the pretraining arm trained in two stages, on synthetic then real samples
    stages = classification["training"]["pretrain-finetune"][0]["stages"]
    assert [s["name"] for s in stages] == ["pretrain", "finetune"]

    segmentation = report["segmentation"]
    assert [arm["name"] for arm in segmentation["arms"]] == ["real", "classic+synthetic x1"]
    assert 0.0 <= segmentation["metrics"]["real"]["dice_mean"]["estimate"] <= 1.0

    assert set(report["fidelity"]["classes"]) == {"cyst", "metastasis", "hemangioma", "all"}
    assert "trained in this run" in report["fidelity"]["feature_extractor"]
    for row in report["fidelity"]["classes"].values():
        assert {"frechet_distance", "kid_mean", "precision", "recall", "density", "coverage"} <= set(row["synthetic"]) <= set(row["real_test_floor"])
    assert report["memorisation"]["synthetic_audited"] > 0 and "threshold_pixel_rms" in report["memorisation"]
    assert report["leakage"]["synthetic"][0]["status"] == "verified"
    roles = [entry["role"] for entry in report["inputs"]["files"]]
    assert roles == ["real train", "real test", "synthetic (generated in this run)"]
    assert report["inputs"]["files"][2]["path"] == "inputs/synthetic.h5"
    # No folder of any input or output reaches the report (folders may name patients): file names only.
    assert str(tmp_path) not in (out / "report.json").read_text() and str(tmp_path) not in (out / "report.html").read_text()
    assert report["command"].startswith("augment evaluate tiny-evaluate --out tiny ") and report["command"].endswith(" --set=synthetic.model=tiny-gan")
    assert all(len(entry["sha256"]) == 64 for entry in report["inputs"]["files"])

    page = (out / "report.html").read_text()
    for key, title in SECTIONS:
        assert f"<section id='{key}'><h2>{title}</h2>" in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) >= 10 and "src='http" not in page and "<script" not in page
    predictions = np.load(out / "predictions.npz")
    assert predictions["classification/real/probabilities"].shape == (2, 24, 3)

    # augment inspect report.json -> the headline table (the function augmentor.inspect dispatches to)
    print_headline(out / "report.json")
    printed = capsys.readouterr().out
    assert "classification: mean over seeds [0, 1]" in printed and "classic+synthetic x2" in printed and "Δ" in printed

    # the output exists: refused without --overwrite, replaced with it
    before = (out / "report.json").read_bytes()
    code, output = run_evaluate(out, tiny_inputs.overrides())
    assert code == 2 and output.strip() == f"error: {out} exists; pass --overwrite to replace it"
    assert (out / "report.json").read_bytes() == before
    code, output = run_evaluate(out, tiny_inputs.overrides("train.seeds=[3]", 'arms.classification=["real"]', "arms.segmentation=[]"), "--overwrite")
    assert code == 0, output
    assert json.loads((out / "report.json").read_text())["seeds"] == [3]


def test_inspect_dispatches_report_json(tmp_path: Path) -> None:
    bad = tmp_path / "report.json"
    bad.write_text('{"format": "something-else"}')
    result = CliRunner().invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {bad}: not an augmentor evaluation report (no format 'augmentor-evaluation-report')"


@pytest.mark.slow
def test_a_pool_of_workers_gives_the_same_numbers(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    # Each (arm, seed) job draws everything from its seed, so where it runs does not matter.
    extra = ('arms.classification=["real", "pretrain-finetune"]', "arms.segmentation=[]")
    assert run_evaluate(tmp_path / "one", tiny_inputs.overrides(*extra, "train.workers=1"))[0] == 0
    assert run_evaluate(tmp_path / "two", tiny_inputs.overrides(*extra, "train.workers=2"))[0] == 0
    one, two = np.load(tmp_path / "one" / "predictions.npz"), np.load(tmp_path / "two" / "predictions.npz")
    assert one.files == two.files
    for key in one.files:
        np.testing.assert_array_equal(one[key], two[key])
