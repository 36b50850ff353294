"""The README's result tables are generated from the committed results in results/ (evaluation summaries and
difficulty calibrations), never typed: every marked block equals what its file gives, and every committed file
has its block. So is its table of shipped models, from their cards."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from evaluation.summary import SUMMARY_FORMAT, readme_block, shipped_cards, update_readme, zoo_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = sorted((ROOT / "results").glob("*.json"))
SUMMARIES = [path for path in RESULTS if path.stem.startswith("evaluate-")]


def test_the_shipped_experiments_have_committed_summaries() -> None:
    assert {path.stem for path in SUMMARIES} >= {"evaluate-liver", "evaluate-lung", "evaluate-phantom-ct"}
    assert {path.stem for path in RESULTS} >= {"calibration-liver-lesions", "calibration-lung-nodules"}
    for path in SUMMARIES:
        summary = json.loads(path.read_text())
        assert summary["format"] == SUMMARY_FORMAT and summary["name"] == path.stem
        tasks = [task for task in ("classification", "segmentation") if summary.get(task)]
        assert tasks and all(summary[task]["arms"] for task in tasks) and summary["runtime_s"] > 0
    assert json.loads((ROOT / "results" / "evaluate-phantom-ct.json").read_text())["segmentation"]["arms"][0]["name"] == "real"


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


def test_readme_zoo_block_equals_the_shipped_cards() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- zoo -->\n(.*?)<!-- /zoo -->", readme, re.S)
    assert match is not None, "README has no <!-- zoo --> block"
    cards = shipped_cards()
    assert {card["name"] for card in cards} >= {"frid-adar-liver", "onishi-lung-dcgan"}
    assert match.group(1) == zoo_markdown(cards), "README shipped-models block differs: run python -m evaluation.summary --update README.md results/*.json"


def _monitored_card(name: str, class_names: list[str]) -> dict[str, Any]:
    """A small card with a monitor record: every class meets the criteria but the last, which misses the NN distance."""
    def scores(nn_distance: float) -> dict[str, Any]:
        criteria = {"nn_distance": nn_distance, "nn_mask_iou": 0.02, "lesion_area": 1.1, "bright_fraction": 1.3}
        return {"kid": 0.0512, "coverage": 0.613, "near_copy_fraction": 0.0125,
                "diversity": {"criteria": criteria, "passed": [key for key in criteria if key != "nn_distance" or nn_distance >= 0.85]}}

    return {
        "name": name, "class_names": class_names, "algorithm": "cgan", "steps": 3500, "wall_time_s": 4500.0, "device": "cpu",
        "recipe": {"name": name, "model": {"upsample": "resize"}, "train": {"real_dihedral": True, "r1_gamma": 0.0}},
        "training_data": {"path": "liver-split-train.h5", "num_samples": 145, "num_patients": 75},
        "monitor": {"select": "kid-covered", "selected_step": 2500, "reference": {"path": "test.h5"},
                    "scores": {**{cls: scores(1.02) for cls in class_names[:-1]}, class_names[-1]: scores(0.61), "all": scores(0.9)}},
    }


def test_zoo_markdown_shows_the_shipped_step_and_the_missed_criteria() -> None:
    liver = _monitored_card("frid-adar-liver", ["cyst", "metastasis"])
    lung = _monitored_card("onishi-lung-dcgan", ["benign", "malignant"])
    old = {"name": "old-model", "class_names": ["a"], "algorithm": "cgan", "steps": 11000, "wall_time_s": 5805.2,
           "recipe": {"name": "old-model"}, "training_data": {"path": "cohorts/x/train.h5", "num_samples": 182, "num_patients": 94}}
    table = zoo_markdown([liver, lung, old])
    assert "| `frid-adar-liver` | cyst, metastasis | 145 lesions of 75 patients (`liver-split-train.h5`) |" in table
    assert "[`frid-adar-liver`](recipes/frid-adar-liver.toml): cgan, `upsample = \"resize\"`, `real_dihedral` |" in table
    assert "r1_gamma" not in table  # at its default
    assert "3 500 steps, 75 min on cpu; shipped step 2 500 (select `kid-covered`)" in table
    assert "11 000 steps, 97 min" in table and "(`test.h5`)" in table
    scores: dict[tuple[str, str], list[str]] = {}  # (model, class) -> the score cells of the second table
    model = ""
    for line in table.split("| model | class |")[1].splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        model = cells[0] or model
        scores[(model, cells[1])] = cells[2:]
    assert scores[("`frid-adar-liver`", "cyst")] == ["0.051", "0.61", "1.02 ✔", "+0.02 ✔", "1.10 ✔", "1.30 ✔", "1.2 %"]
    assert scores[("`frid-adar-liver`", "metastasis")][2] == "0.61 ✘"  # the missed criterion
    assert scores[("`onishi-lung-dcgan`", "benign")][5] == "–"  # no bright-vessel criterion for the lung
    assert scores[("`old-model`", "–")] == ["–"] * 7  # no monitor record: no scores
    assert [key for key, cells in scores.items() if any("✘" in cell for cell in cells)] == [
        ("`frid-adar-liver`", "metastasis"), ("`onishi-lung-dcgan`", "malignant"),
    ]


def test_update_rewrites_the_zoo_block_from_the_cards(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- zoo -->\n| stale |\n<!-- /zoo -->\nend\n")
    card = _monitored_card("frid-adar-liver", ["cyst", "metastasis"])
    assert update_readme(readme, [], cards=[card])
    assert readme.read_text() == "intro\n<!-- zoo -->\n" + zoo_markdown([card]) + "<!-- /zoo -->\nend\n"
    assert not update_readme(readme, [], cards=[card])
