"""``make bench``'s table: benchmarks report figures through bench/results.py, bench/all.py prints them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.all import difficulty_rows, print_table
from bench.results import RESULTS_ENV, record, spread


def test_recorded_figures_reach_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results.jsonl"
    monkeypatch.setenv(RESULTS_ENV, str(results))
    ratios = [0.91, 0.88, 0.97, 0.93, 0.80]
    record("generate / bare forward", 0.91, ">= 0.85", True, spread(ratios))
    record("DDP 2 / 1", 0.74, spread_text=spread(ratios))
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert rows[0] == {"figure": "generate / bare forward", "value": "0.91", "target": ">= 0.85", "passed": True, "spread": "0.80-0.97 over 5"}
    print_table(rows, 90.0)
    table = capsys.readouterr().out.splitlines()
    assert any(line.startswith("generate / bare forward") and "pass" in line and "0.80-0.97 over 5" in line for line in table)
    assert any(line.startswith("DDP 2 / 1") and " - " in line for line in table)
    assert table[-1] == "2 figures in 1.5 min"


def test_the_quick_calibration_is_a_smoke_row_and_the_full_one_is_judged(tmp_path: Path) -> None:
    path = tmp_path / "difficulty.json"
    path.write_text(json.dumps({"across_cohort_seeds": {"small": {"sensitivity_macro": {"mean": 0.78, "sd": None}},
                                                        "gain": {"sensitivity_macro": {"mean": 0.05, "sd": None}}}}))
    (quick,) = difficulty_rows(path, full=False)
    assert quick["passed"] is None and "BENCH_FULL=1" in str(quick["target"])
    sensitivity, gain = difficulty_rows(path, full=True)
    assert sensitivity["passed"] is True and gain["passed"] is False
