"""A model trained on data in a folder named after a patient: the folder's name reaches neither the model
directory nor the synthetic files generated from it (file names only, in the card, the provenance and the
recorded commands)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
PATIENT_FOLDER = "DOE_JOHN_19500101"


def invoke(monkeypatch: pytest.MonkeyPatch, program: Path, arguments: list[str]) -> None:
    """Run ``augment ARGUMENTS`` in-process, with ``sys.argv`` as the shell would have set it."""
    monkeypatch.setattr(sys, "argv", [str(program), *arguments])
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output


def test_patient_folder_reaches_no_model_card_or_synthetic_file(
    tiny_file: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / PATIENT_FOLDER
    folder.mkdir()
    data = tiny_file(f"{PATIENT_FOLDER}/real.h5", count=24, size=16, patients=6)
    program = folder / ".venv" / "bin" / "augment"
    model = folder / "model"
    invoke(monkeypatch, program, [
        "train", "tiny-cgan", "--data", str(data), "--out", str(model), "--device", "cpu",
        "--set", "train.steps=2", "--set", "train.sample_every=2", "--set", "train.checkpoint_every=2", "--set", "train.log_every=1",
    ])
    card = json.loads((model / "model.json").read_text())
    assert card["training_data"]["path"] == "real.h5"
    assert card["command"].startswith("augment train tiny-cgan --data real.h5 --out model ")
    for path in model.rglob("*"):  # card, recipe, metrics, checkpoints, sample grids
        if path.is_file():
            assert PATIENT_FOLDER.encode() not in path.read_bytes(), path

    synthetic = folder / "synthetic.h5"
    invoke(monkeypatch, program, ["generate", "--model", str(model), "--class", "all", "--n", "3", "--out", str(synthetic), "--device", "cpu"])
    with h5py.File(synthetic, "r") as handle:
        attributes = {key: str(value) for key, value in handle.attrs.items()}
        provenance = json.loads(handle.attrs["provenance"])
    assert not [key for key, value in attributes.items() if PATIENT_FOLDER in value]
    assert provenance["model"]["trained_on_path"] == "real.h5"
    assert provenance["command"] == "augment generate --model model --class all --n 3 --out synthetic.h5 --device cpu"
    assert PATIENT_FOLDER.encode() not in synthetic.read_bytes()
