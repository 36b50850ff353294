"""The README's result tables are generated from the committed results in results/ (evaluation summaries and
difficulty calibrations), never typed: every marked block equals what its file gives, and every committed file
has its block."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evaluation.summary import SUMMARY_FORMAT, readme_block, update_readme

ROOT = Path(__file__).resolve().parents[2]
RESULTS = sorted((ROOT / "results").glob("*.json"))
SUMMARIES = [path for path in RESULTS if path.stem.startswith("evaluate-")]


def test_the_shipped_experiments_have_committed_summaries() -> None:
    assert {path.stem for path in SUMMARIES} >= {"evaluate-liver", "evaluate-lung"}
    assert {path.stem for path in RESULTS} >= {"calibration-liver-lesions", "calibration-lung-nodules"}
    for path in SUMMARIES:
        summary = json.loads(path.read_text())
        assert summary["format"] == SUMMARY_FORMAT and summary["name"] == path.stem
        assert summary["classification"]["arms"] and summary["runtime_s"] > 0


@pytest.mark.parametrize("path", RESULTS, ids=[path.stem for path in RESULTS])
def test_readme_blocks_equal_the_generated_tables(path: Path) -> None:
    name, table = readme_block(json.loads(path.read_text()))
    assert path.stem == name
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- results:{re.escape(name)} -->\n(.*?)<!-- /results:{re.escape(name)} -->", readme, re.S)
    assert match is not None, f"README has no block for {name}"
    assert match.group(1) == table, f"README block {name} differs: run python -m evaluation.summary --update README.md results/*.json"


def test_update_rewrites_a_stale_block(tmp_path: Path) -> None:
    summary = {
        "format": SUMMARY_FORMAT, "name": "demo", "seeds": [0, 1], "runtime_s": 60.0, "cohort": {"name": "liver-lesions", "seed": 0},
        "model": {"name": "m", "weights_sha256": "ab" * 32},
        "classification": {
            "metrics": ["sensitivity_macro", "specificity_macro"],
            "arms": [
                {"name": "classic", "sensitivity_macro": {"estimate": 0.7, "low": 0.6, "high": 0.8}, "specificity_macro": None, "vs_classic": None, "budget_bound_seeds": []},
                {"name": "classic+synthetic x1", "sensitivity_macro": {"estimate": 0.75, "low": 0.7, "high": 0.8}, "specificity_macro": None,
                 "vs_classic": {"sensitivity_macro": {"estimate": 0.05, "low": 0.01, "high": 0.09}}, "budget_bound_seeds": [1]},
            ],
            "efficiency": {"x1": {"synthetic_arm": "classic+synthetic x1", "oracle_arm": "classic+oracle x1",
                                  "sensitivity_macro": {"defined": True, "estimate": 0.5, "low": 0.2, "high": 0.9}}},
        },
    }
    (tmp_path / "demo.json").write_text(json.dumps(summary))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:demo -->\n| stale |\n<!-- /results:demo -->\nend\n")
    assert update_readme(readme, [tmp_path / "demo.json"])
    text = readme.read_text()
    assert "| stale |" not in text and "+0.050 [+0.010, +0.090]" in text and "0.50 [0.20, 0.90]" in text and "1 of 2" in text
    assert not update_readme(readme, [tmp_path / "demo.json"])  # already up to date
