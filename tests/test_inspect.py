"""inspect: exact HU statistics per class, counts, provenance, the grid PNG, one-line errors."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from augmentor.data.reader import H5File
from augmentor.inspect import inspect_file, write_grid
from cli import app

runner = CliRunner()


def test_summary_matches_numpy(tiny_file: Callable[..., Path]) -> None:
    path = tiny_file(count=12, size=16, patients=4)
    summary = inspect_file(path, make_grid=False)
    file = H5File(path)
    images, masks, labels = file.read(np.arange(len(file)))
    assert summary.valid and summary.num_samples == 12 and summary.patients == 4 and summary.grid is None
    assert summary.counts_per_class == {"cyst": 4, "metastasis": 4, "hemangioma": 4}
    assert summary.counts_per_source == {"real": 12}
    values = images.astype(np.float64).ravel()
    assert summary.hu is not None
    assert (summary.hu.minimum, summary.hu.maximum) == (values.min(), values.max())
    assert summary.hu.mean == pytest.approx(values.mean()) and summary.hu.std == pytest.approx(values.std())
    assert summary.hu.percentiles[50] == np.percentile(values, 50, method="inverted_cdf")
    for index, name in enumerate(summary.class_names):
        lesion = images[labels == index][:, 0][masks[labels == index] > 0].astype(np.float64)
        stats = summary.hu_in_mask_per_class[name]
        assert stats is not None and stats.mean == pytest.approx(lesion.mean())
    assert summary.provenance["seed"] == 0 and "created" in summary.provenance


def test_lesion_diameters_per_class_at_the_files_spacing(tiny_file: Callable[..., Path]) -> None:
    path = tiny_file(count=12, size=16, pixel_spacing_mm=(0.5, 0.8))
    summary = inspect_file(path, make_grid=False)
    file = H5File(path)
    _, masks, labels = file.read(np.arange(len(file)))
    diameters = {}
    for index, name in enumerate(summary.class_names):
        expected = 2.0 * np.sqrt((masks[labels == index] > 0).sum(axis=(1, 2)) * 0.5 * 0.8 / np.pi)
        quartiles = summary.lesion_diameter_mm_per_class[name]
        assert quartiles == pytest.approx(tuple(np.percentile(expected, [25, 50, 75])))
        diameters[name] = quartiles[1]
    assert diameters["cyst"] < diameters["metastasis"] < diameters["hemangioma"]  # the tiny file's disc radii 2, 3, 4
    table = runner.invoke(app, ["inspect", str(path), "--no-grid"])
    assert table.exit_code == 0 and "lesion diameter" in table.output and f"{diameters['metastasis']:.1f}" in table.output

    labelled = tiny_file("labelled.h5", count=6, size=16, mask_label_names=("background", "liver", "vessel"))
    assert inspect_file(labelled, make_grid=False).lesion_diameter_mm_per_class == {}  # organ label maps have no lesion


def test_grid_png_next_to_the_file_rows_per_class(tiny_file: Callable[..., Path], tmp_path: Path) -> None:
    path = tiny_file(count=6, size=16)
    summary = inspect_file(path, per_class=2)
    assert summary.grid == path.with_suffix(".png")
    with Image.open(summary.grid) as picture:
        width, height = picture.size
    assert picture.format == "PNG" and width > 100 and height > 100
    custom = write_grid(path, tmp_path / "custom.png", per_class=3, seed=1)
    assert custom.exists() and not list(tmp_path.glob(".*.tmp.png"))


def test_cli_inspect_prints_tables_and_refuses_bad_files(tiny_file: Callable[..., Path], tmp_path: Path) -> None:
    path = tiny_file(count=3, size=16)
    grid = tmp_path / "grid.png"
    result = runner.invoke(app, ["inspect", str(path), "--grid", str(grid), "--per-class", "1"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "metastasis" in result.output and grid.exists()

    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5")
    refused = runner.invoke(app, ["inspect", str(broken)])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1 and refused.output.startswith(f"error: {broken}: not a readable HDF5 file")
    assert not broken.with_suffix(".png").exists()
    missing = runner.invoke(app, ["inspect", str(tmp_path / "nope.h5")])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1 and "file not found" in missing.output


@pytest.mark.skipif(importlib.util.find_spec("evaluation.report") is not None, reason="the evaluation package shows reports")
def test_json_reports_wait_for_the_evaluation_package(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text("{}")
    result = runner.invoke(app, ["inspect", str(report)])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "evaluation reports cannot be inspected yet" in result.output
