"""The translation audit: a model scored on held-out phantoms and CT, and the README tables made from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from augmentor.errors import AugmentorError
from evaluation.summary import AUDIT_FORMAT, readme_block, zoo_markdown
from evaluation.translation_audit import SETS, audit, look, main, markdown
from tests.translation.conftest import LABEL_NAMES, write_domain

NAMES = ("background", "liver", "hepatic_vessel")


def test_look_measures_noise_mean_and_vessel_contrast() -> None:
    labels = np.zeros((2, 48, 48), np.uint8)
    labels[:, 8:40, 8:40] = 1
    labels[:, 20:24, 20:30] = 2
    flat = np.where(labels == 2, 180.0, np.where(labels == 1, 100.0, -1000.0))
    scores = look(flat, labels, NAMES)
    assert scores["liver_hu"] == pytest.approx(100.0, abs=0.5) and scores["liver_noise_hu"] == pytest.approx(0.0, abs=0.5)
    assert scores["vessel_contrast_hu"] == pytest.approx(80.0, abs=0.5)
    noisy = flat + np.random.default_rng(0).normal(0.0, 20.0, flat.shape)
    noise = look(noisy, labels, NAMES)["liver_noise_hu"]
    assert noise is not None and 15.0 < noise < 22.0  # white noise of 20 HU less its 5x5 local mean: ~19.6
    assert look(flat, np.zeros_like(labels), NAMES) == {"liver_hu": None, "liver_noise_hu": None, "vessel_contrast_hu": None}


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("held-out")
    # 64x64: the networks are fully convolutional, and the liver keeps pixels 3 px inside its edge
    return (write_domain(folder / "phantoms-heldout.h5", count=6, size=64, seed=5, patient_prefix="phantom-new-"),
            write_domain(folder / "ct-heldout.h5", count=6, size=64, seed=6, ct_like=True, patient_prefix="ct-new-"))


def test_audit_scores_the_three_sets_and_its_table_is_a_readme_block(tiny_model: Path, held_out: tuple[Path, Path], tmp_path: Path) -> None:
    phantoms, ct = held_out
    record = audit(tiny_model, phantoms, ct, work=tmp_path)
    assert record["format"] == AUDIT_FORMAT and record["name"] == "translation-tiny-cyclegan"
    assert set(record["sets"]) == set(SETS)
    for entry in record["sets"].values():
        assert entry["slices"] == 6 and entry["patients"] == 3
        assert set(entry["dice"]) == set(LABEL_NAMES[1:])  # every structure the labels hold
        for value in [*entry["dice"].values(), entry["mean_dice"]]:
            assert 0.0 <= value["low"] <= value["estimate"] <= value["high"] <= 1.0
    # The look: the phantoms are flat, the held-out CT is noisy; the translated file is what translate wrote.
    assert record["sets"]["phantom"]["liver_noise_hu"] < 1.0 < 10.0 < record["sets"]["ct"]["liver_noise_hu"]
    assert (tmp_path / "translated.h5").is_file() and record["translate"]["slices"] == 6
    assert record["steganography"]["mean_amplification"] > 0
    name, table = readme_block(json.loads(json.dumps(record)))
    assert name == record["name"] and table == markdown(record)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| set")]
    assert [row.split(" | ")[0] for row in rows] == ["| CT (held-out patients): the ceiling", "| phantoms, untranslated", "| phantoms, translated"]
    assert all(" | 6 of 3 patients | " in row for row in rows) and "amplification" in table
    # deterministic: the same inputs give the same record, timing aside
    again = audit(tiny_model, phantoms, ct)
    assert again["sets"] == record["sets"] and again["steganography"] == record["steganography"]


def test_audit_refuses_the_models_own_ct_and_a_missing_judge(tiny_model: Path, domains: tuple[Path, Path], held_out: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(AugmentorError, match="training patients"):
        audit(tiny_model, held_out[0], domains[1])
    status = main(["--model", str(tiny_model), "--phantoms", str(held_out[0]), "--ct", str(domains[1]), "--out", str(tmp_path / "a.json")])
    assert status == 2 and not (tmp_path / "a.json").exists()


def test_zoo_block_lists_translation_models_in_their_own_table() -> None:
    card = {
        "name": "phantom-ct", "algorithm": "cyclegan", "class_names": ["abdomen"], "steps": 8000, "wall_time_s": 6000.0, "device": "cpu",
        "translation": {"from": "phantom (domain A)", "to": "CT (domain B)", "structure_consistency": False},
        "recipe": {"name": "cyclegan-phantom-ct", "model": {}, "train": {}},
        "training_data": {"path": "ct-train.h5", "domain_a": {"path": "phantoms.h5", "num_samples": 320, "num_patients": 40},
                          "domain_b": {"path": "ct-train.h5", "num_samples": 36, "num_patients": 9}},
    }
    table = zoo_markdown([card])
    assert "| translation model |" in table
    assert "| `phantom-ct` | phantom (domain A) → CT (domain B) | 320 phantom slices of 40 patients (`phantoms.h5`) and 36 CT slices of 9 patients (`ct-train.h5`)" in table
    assert "8 000 steps, 100 min on cpu" in table
    assert "abdomen" not in table  # not among the lesion generators' classes
