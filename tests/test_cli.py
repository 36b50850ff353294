from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def test_help_lists_the_verbs() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "join" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("augmentor ")


def test_join_command_and_its_one_line_errors(tiny_file, tmp_path: Path) -> None:
    first, second = tiny_file("a.h5", count=3), tiny_file("b.h5", count=4)
    out = tmp_path / "all.h5"
    result = runner.invoke(app, ["join", str(first), str(second), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "7 samples from 2 shards" in result.output
    before = out.read_bytes()
    again = runner.invoke(app, ["join", str(first), "--out", str(out)])
    assert again.exit_code == 2
    assert again.output.strip() == f"error: {out} exists; pass --overwrite to replace it"
    assert out.read_bytes() == before
    missing = runner.invoke(app, ["join", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "x.h5")])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1 and "file not found" in missing.output
    assert not (tmp_path / "x.h5").exists()
