"""A plain (non-editable) install works: the wheel carries the shipped recipes, and ``augment`` run from
another folder finds them by name. Built offline with the setuptools already installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the wheel is built from (building in the checkout itself would leave build/ and *.egg-info there).
SOURCES = ("pyproject.toml", "README.md", "cli.py", "augmentor", "evaluation", "recipes")


def build_wheel(folder: Path) -> Path:
    source = folder / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(folder / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (folder / "dist").glob("augmentor-*.whl")
    return wheel


def test_wheel_holds_the_recipes_and_a_plain_install_loads_one_by_name(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    shipped = sorted(path.name for path in (ROOT / "recipes").glob("*.toml"))
    assert "tiny-cgan.toml" in shipped
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        for name in shipped:
            assert f"augmentor/recipes_data/{name}" in names, name
            assert archive.read(f"augmentor/recipes_data/{name}") == (ROOT / "recipes" / name).read_bytes()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "augment = cli:app" in entry_points
        # a wheel is installed by unpacking it (pip adds only the metadata and the `augment` script)
        archive.extractall(tmp_path / "site")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    augment = "import sys, augmentor; print(augmentor.__file__); from cli import app; sys.exit(app())"
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}

    # The recipe loads by name; the command then stops, in one line, at the training data that is not there.
    result = subprocess.run(
        [sys.executable, "-c", augment, "train", "tiny-cgan", "--data", "missing.h5", "--out", "run"],
        cwd=elsewhere, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.stdout.startswith(str(tmp_path / "site" / "augmentor")), result.stdout  # the installed copy, not the checkout
    assert result.returncode == 2, result.stderr
    assert result.stderr == "error: missing.h5: file not found\n", result.stderr
