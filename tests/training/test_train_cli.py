"""``augment train`` in-process with typer's CliRunner, on the tiny recipe."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def test_train_command_writes_a_model(tiny_h5: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "tiny"
    args = ["train", "tiny-cgan", "--data", str(tiny_h5), "--out", str(out), "--device", "cpu",
            "--set", "train.steps=6", "--set", "train.sample_every=3", "--set", "train.checkpoint_every=3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "model.json" in result.output
    assert json.loads((out / "model.json").read_text())["steps"] == 6

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output

    resumed = runner.invoke(app, [*args[:-4], "--set", "train.steps=9", "--set", "train.sample_every=3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "model.json").read_text())["steps"] == 9


def test_train_command_reports_bad_recipe_keys_in_one_line(tiny_h5: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "tiny-cgan", "--data", str(tiny_h5), "--out", str(tmp_path / "x"), "--set", "train.stepz=3"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean 'steps'" in lines[0]


def test_train_command_refuses_another_kind_of_recipe(tiny_h5: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "other.toml"
    recipe.write_text('kind = "gann"\n')
    result = runner.invoke(app, ["train", str(recipe), "--data", str(tiny_h5), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "did you mean 'gan'" in result.output
