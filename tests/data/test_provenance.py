"""Provenance keeps file names, never the folders above them (they may name a patient)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from augmentor.data.provenance import (
    command_line,
    make_provenance,
    stored_command,
    stored_path,
    stored_provenance,
)

PATIENT_FOLDER = "DOE_JOHN_19500101"


def test_stored_path_keeps_the_file_name() -> None:
    assert stored_path(f"/data/{PATIENT_FOLDER}/real.h5") == "real.h5"
    assert stored_path(Path("/data") / PATIENT_FOLDER / "real.h5") == "real.h5"
    assert stored_path(f"C:\\exports\\{PATIENT_FOLDER}\\real.h5") == "real.h5"
    assert stored_path(f"runs/{PATIENT_FOLDER}/") == PATIENT_FOLDER  # a folder's own name is its file name
    assert stored_path("real.h5") == "real.h5"


def test_stored_path_inside_an_artifact_folder_stays_relative(tmp_path: Path) -> None:
    report = tmp_path / PATIENT_FOLDER / "report"
    assert stored_path(report / "inputs" / "synthetic.h5", relative_to=report) == "inputs/synthetic.h5"
    assert stored_path(tmp_path / PATIENT_FOLDER / "train.h5", relative_to=report) == "train.h5"


def test_stored_command_reduces_every_path_argument() -> None:
    argv = [
        f"/home/me/{PATIENT_FOLDER}/.venv/bin/augment", "train", "tiny-cgan",
        "--data", f"/data/{PATIENT_FOLDER}/real.h5", f"--out=/runs/{PATIENT_FOLDER}/model",
        "--set", f'data.train=["/data/{PATIENT_FOLDER}/a.h5", "/data/{PATIENT_FOLDER}/b.h5"]',
        "--set", "train.steps=6", "--hu-window=-160,240",
    ]
    command = stored_command(argv)
    assert PATIENT_FOLDER not in command
    assert command.startswith("augment train tiny-cgan --data real.h5 --out=model --set ")
    assert '"a.h5", "b.h5"' in command and "train.steps=6" in command and "--hu-window=-160,240" in command
    assert stored_command("augment ingest SOURCE --salt (hidden)") == "augment ingest SOURCE --salt (hidden)"  # kept as written


def test_provenance_records_reduced_command_and_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["augment", "phantom", "--xcat", f"/x/{PATIENT_FOLDER}/vol_act_1.bin"])
    assert command_line() == "augment phantom --xcat vol_act_1.bin"
    record = make_provenance(inputs={f"/x/{PATIENT_FOLDER}/vol_act_1.bin": "ab" * 32})
    assert record["command"] == "augment phantom --xcat vol_act_1.bin" and record["inputs"] == {"vol_act_1.bin": "ab" * 32}
    assert record["patient_ids"] is None  # ids of unknown origin unless the writer says how they were made
    given = make_provenance(command=f"augment train x --data /d/{PATIENT_FOLDER}/real.h5")
    assert given["command"] == "augment train x --data real.h5"
    with pytest.raises(ValueError, match="patient_ids kind"):
        make_provenance(patient_ids={"kind": "raw"})


def test_stored_provenance_reduces_what_older_files_recorded() -> None:
    old = {
        "command": f"augment generate --model /m/{PATIENT_FOLDER}/model --out /o/{PATIENT_FOLDER}/s.h5",
        "inputs": {f"/d/{PATIENT_FOLDER}/real.h5": "cd" * 32},
        "model": {"name": "model", "trained_on_path": f"/d/{PATIENT_FOLDER}/real.h5"},
        "seed": 3,
    }
    stored = stored_provenance(old)
    assert PATIENT_FOLDER not in repr(stored)
    assert stored["model"]["trained_on_path"] == "real.h5" and stored["seed"] == 3
    assert PATIENT_FOLDER in old["command"]  # the original is not modified
