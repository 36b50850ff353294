"""``augment evaluate tiny-evaluate-phantom-ct`` end to end: two tiny CycleGANs (without and with structure
consistency) trained here on tiny phantom and CT files, then the segmenter arms -- K labelled CT slices,
+ translated phantoms per model, + untranslated phantoms -- through the evaluation's one pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from augmentor.data.reader import H5File
from cli import app
from tests.one_line import assert_one_line_error
from tests.translation.conftest import TINY_RECIPE_OVERRIDES, write_domain

STRUCTURES = ["liver", "kidney"]  # the tiny files' labels (the shipped recipe's are liver and hepatic_vessel)


@pytest.fixture(scope="module")
def phantom_ct(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny CT train/test files from disjoint patients, phantoms, and two tiny CycleGANs trained on them."""
    from augmentor.recipes import load_recipe
    from augmentor.translation.train import train_cyclegan

    folder = tmp_path_factory.mktemp("phantom-ct")
    files = {
        "train": write_domain(folder / "ct-train.h5", count=16, seed=3, ct_like=True, patient_prefix="ct-train-"),
        "test": write_domain(folder / "ct-test.h5", count=8, seed=4, ct_like=True, patient_prefix="ct-test-"),
        "phantoms": write_domain(folder / "phantoms.h5", count=16, seed=5),
    }
    for name, structure in (("tiny-cyclegan", "false"), ("tiny-cyclegan-structure", "true")):
        recipe = load_recipe("tiny-cyclegan", [*TINY_RECIPE_OVERRIDES, f"train.structure_consistency={structure}"], expect="cyclegan")
        files[name] = train_cyclegan(recipe, files["phantoms"], files["train"], folder / "models" / name, device="cpu", progress=False)
    return files


def overrides(files: dict[str, Path], pool_dir: Path, *extra: str) -> list[str]:
    models = json.dumps([str(files["tiny-cyclegan"]), str(files["tiny-cyclegan-structure"])])
    return [
        'data.cohort=""', f'data.train=["{files["train"]}"]', f'data.test=["{files["test"]}"]', f"data.structures={json.dumps(STRUCTURES)}",
        f"phantoms.file={files['phantoms']}", f"phantoms.translation_models={models}", f"phantoms.dir={pool_dir}", *extra,
    ]


def test_every_arm_dice_per_structure_paired_deltas_and_the_cached_translations(phantom_ct: dict[str, Path], tmp_path: Path) -> None:
    from evaluation.run import evaluate
    from evaluation.summary import readme_block

    pool_dir, cache = tmp_path / "pools", tmp_path / "cache"
    out = evaluate("tiny-evaluate-phantom-ct", tmp_path / "report", overrides=overrides(phantom_ct, pool_dir, f"train.cache={cache}"), progress=False)
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.html").stat().st_size > 0
    section = report["segmentation"]
    translated = ["classic+translated(tiny-cyclegan) x1", "classic+translated(tiny-cyclegan-structure) x1"]
    assert [arm["name"] for arm in section["arms"]] == ["real", "classic", *translated, "classic+phantom x1"]
    assert section["structure_names"] == STRUCTURES
    for arm in section["arms"]:
        for structure in STRUCTURES:
            dice = section["metrics"][arm["name"]][f"dice:{structure}"]
            assert 0.0 <= dice["estimate"] <= 1.0 and dice["low"] <= dice["estimate"] <= dice["high"]  # t interval of 2 seeds: wide
    for arm in [*translated, "classic+phantom x1"]:
        for table in (section["paired_differences"], section["paired_differences_vs_classic"]):
            delta = table[arm]["dice:liver"]
            assert delta["low"] <= delta["estimate"] <= delta["high"] and -1.0 <= delta["estimate"] <= 1.0
    assert section["paired_differences"]["baseline"] == "real" and section["paired_differences_vs_classic"]["baseline"] == "classic"
    # each arm trains on its own pool: the translated arms on their model's translation, the phantom arm on the phantoms
    stages = {arm["name"]: arm["stages"][0] for arm in section["arms"]}
    assert [stages[name]["source"] for name in translated] == ["tiny-cyclegan", "tiny-cyclegan-structure"]
    assert stages["classic+phantom x1"]["pool"] == "phantom" and stages["classic"]["pool"] == ""
    assert section["convergence"]["classic+phantom x1"]["steps_run"]  # convergence and budget flags, as for every arm

    phantoms = report["inputs"]["phantoms"]
    assert set(phantoms["translation_models"]) == {"tiny-cyclegan", "tiny-cyclegan-structure"}
    assert phantoms["translation_models"]["tiny-cyclegan-structure"]["structure_consistency"] is True
    assert all(entry["translated"] for entry in phantoms["translations"].values())
    assert len(report["leakage"]["translation"]) == 2 and report["generator_saw_validation"]["status"] == "seen (allowed)"
    for path in pool_dir.glob("translated-*.h5"):  # the translation keeps the phantom's labels byte for byte
        assert np.array_equal(H5File(path).read(np.arange(16))[1], H5File(phantom_ct["phantoms"]).read(np.arange(16))[1])

    name, table = readme_block(json.loads((out / "summary.json").read_text()))
    assert name == "tiny-evaluate-phantom-ct"
    assert "Δ dice:liver vs classic" in table and "Δ dice:kidney vs classic" in table and "classic+phantom x1" in table
    assert "translation models `tiny-cyclegan` (without structure consistency" in table

    # run again: translations and jobs come from their caches
    again = evaluate(
        "tiny-evaluate-phantom-ct", tmp_path / "report", overrides=overrides(phantom_ct, pool_dir, f"train.cache={cache}"), overwrite=True, progress=False
    )
    rerun = json.loads((again / "report.json").read_text())
    assert not any(entry["translated"] for entry in rerun["inputs"]["phantoms"]["translations"].values())
    assert rerun["jobs"]["from_cache"] == rerun["jobs"]["total"] == 10
    assert rerun["segmentation"]["metrics"] == section["metrics"]


def test_a_translation_model_that_is_not_trained_is_refused_in_one_line(phantom_ct: dict[str, Path], tmp_path: Path) -> None:
    missing = json.dumps([str(phantom_ct["tiny-cyclegan"]), "my-cyclegan-phantom-ct"])
    result = CliRunner().invoke(
        app, ["evaluate", "tiny-evaluate-phantom-ct", "--out", str(tmp_path / "report"),
              *(f"--set={value}" for value in overrides(phantom_ct, tmp_path / "pools", f"phantoms.translation_models={missing}"))],
    )
    assert_one_line_error(
        result, "'my-cyclegan-phantom-ct' is neither shipped nor trained", "augment train cyclegan-phantom-ct", "cyclegan-phantom-ct-structure"
    )
    assert not (tmp_path / "report").exists() and not (tmp_path / "pools").exists()


def test_the_shipped_recipe_translates_with_the_shipped_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from augmentor.recipes import load_recipe
    from evaluation.phantoms import precheck_phantoms, resolve_translation_models

    monkeypatch.setenv("AUGMENTOR_HOME", str(tmp_path / "home"))  # no user model of the same name in the way
    recipe = load_recipe("evaluate-phantom-ct", [], expect="evaluate")
    precheck_phantoms(recipe)
    entries = resolve_translation_models(recipe.phantoms)
    assert {label: (entry.origin, entry.algorithm) for label, entry in entries.items()} == {
        "cyclegan-phantom-ct": ("shipped", "cyclegan"), "cyclegan-phantom-ct-structure": ("shipped", "cyclegan")}
    for entry in entries.values():
        assert entry.card["training_data"]["domain_b"]["num_patients"] == 9  # the split's training patients
