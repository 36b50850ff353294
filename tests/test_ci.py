"""``.ci/run`` runs the README's ``make test`` and still tells "pytest collected no tests" (pytest's exit
status 5, which make alone would turn into its own 2) from other outcomes. Checked with the real Makefile
and script on a stand-in pytest."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(("pytest_status", "ci_status", "says_no_tests"), [(5, 1, True), (1, 2, False), (0, 0, False)])
def test_ci_run_tells_no_tests_collected_through_make(tmp_path: Path, pytest_status: int, ci_status: int, says_no_tests: bool) -> None:
    (tmp_path / ".ci").mkdir()
    shutil.copy2(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    shutil.copy2(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\necho \"pytest $*\"\nexit {pytest_status}\n")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    stamp = tmp_path / ".venv" / ".installed"
    stamp.touch()
    later = (tmp_path / "pyproject.toml").stat().st_mtime + 10
    os.utime(stamp, (later, later))  # installed after the last change of pyproject.toml: make does not reinstall

    result = subprocess.run([str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=60)
    assert "pytest -m pytest -q -n 2" in result.stdout, result.stdout + result.stderr
    assert result.returncode == ci_status, result.stdout + result.stderr
    assert ("pytest collected no tests" in result.stderr) is says_no_tests
