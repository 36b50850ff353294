"""The cohort difficulty bench (bench/cohort_difficulty.py) runs end to end on its --quick path: tiny
cohorts built in a temporary folder, the tiny evaluate recipe, one training seed, two cohort seeds."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from augmentor.simulate import cohorts

BENCH = Path(__file__).resolve().parent.parent / "bench" / "cohort_difficulty.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cohort_difficulty", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_calibration_reports_both_arms_and_the_gain(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # tiny cohorts render faster in this process than in a pool of freshly spawned workers
    monkeypatch.setattr(cohorts, "default_workers", lambda: 1)
    bench = load_bench()
    out = tmp_path / "difficulty.json"
    arguments = ["--quick", "--cohorts-dir", str(tmp_path / "cohorts"), "--cohort-seeds", "2,3", "--large", "60", "--test-size", "40"]
    record = bench.main([*arguments, "--json", str(out)])
    printed = capsys.readouterr().out

    # the table: per cohort seed a row per arm and the gain, then the spread across cohort seeds
    table = printed[printed.index("cohort seed   arm") :]
    for cohort_seed in ("2", "3"):
        for label in ("small", "large", "gain"):
            assert any(line.split()[:2] == [cohort_seed, label] for line in table.splitlines()), (cohort_seed, label, table)
    assert "mean ± sd across cohort seeds (2, 3)" in table
    assert "target (mean over cohort seeds 2, 3): small-arm macro sensitivity" in table

    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert [section["cohort_seed"] for section in record["results"]] == [2, 3]
    for section in record["results"]:
        arms = section["arms"]
        assert set(arms) == {"small", "large"}
        assert arms["large"]["train_samples"] == 60
        assert 0 < arms["small"]["train_samples"] < 36  # the validation patients never train
        for name in ("sensitivity_macro", "specificity_macro"):
            for arm in ("small", "large"):
                value = arms[arm]["metrics"][name]
                assert all(math.isfinite(value[key]) for key in ("estimate", "low", "high")), (arm, name, value)
                assert value["low"] <= value["estimate"] <= value["high"]
            # the gain is paired: the difference of the two arms' means, with its own interval
            gain = section["gain"][name]
            assert gain["estimate"] == pytest.approx(arms["large"]["metrics"][name]["estimate"] - arms["small"]["metrics"][name]["estimate"], abs=2e-6)
            assert gain["low"] <= gain["estimate"] <= gain["high"]
        for arm in arms.values():
            assert 1 <= arm["steps"][0] <= arm["budget_steps"]
    spread = record["across_cohort_seeds"]["gain"]["sensitivity_macro"]
    assert math.isfinite(spread["mean"]) and spread["sd"] is not None and spread["sd"] >= 0
