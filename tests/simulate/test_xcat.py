"""XCAT reader: a round trip through raw files written here, and one-line errors for bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from augmentor.data.reader import read_info
from augmentor.errors import AugmentorError
from augmentor.simulate.tissues import Tissue
from augmentor.simulate.xcat import convert_xcat, read_xcat_log

SIZE, SLICES, PIXEL_CM = 16, 3, 0.25
WATER_PER_CM = 0.2059  # 60 keV


def _write_xcat(folder: Path, *, with_attenuation: bool = True, log_size: int = SIZE) -> tuple[Path, Path]:
    rows, columns = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    body = rows**2 + columns**2 < 7**2
    liver = body & (columns < -1)
    activity = np.zeros((SLICES, SIZE, SIZE), dtype="<f4")
    activity[:, body] = 1.0  # body -> muscle in the default map
    activity[:, liver] = 8.0  # liver
    activity.tofile(folder / "patient_act_1.bin")
    if with_attenuation:
        attenuation = np.zeros_like(activity)
        # XCAT writes attenuation per pixel: muscle 50 HU, liver 110 HU above water.
        attenuation[:, body] = WATER_PER_CM * PIXEL_CM * 1.050
        attenuation[:, liver] = WATER_PER_CM * PIXEL_CM * 1.110
        attenuation.tofile(folder / "patient_atn_1.bin")
    log = folder / "patient_log"
    log.write_text(
        "XCAT phantom program\n"
        f"  pixel width =  {PIXEL_CM:.4f} (cm/pixel)\n"
        f"  slice width =  {2 * PIXEL_CM:.4f} (cm/pixel)\n"
        f"  array_size = {log_size}\n"
        f"  starting slice number    = 101\n  ending slice number      = {100 + SLICES}\n"
        "  energy = 60 keV\n"
        f"  Body (water) =    {WATER_PER_CM}\n"
    )
    return folder / "patient_act_1.bin", log


def test_log_geometry_is_parsed_in_mm(tmp_path: Path) -> None:
    _, log = _write_xcat(tmp_path)
    parsed = read_xcat_log(log)
    assert parsed.array_size == SIZE and parsed.pixel_mm == pytest.approx(2.5) and parsed.slice_mm == pytest.approx(5.0)
    assert parsed.water_mu_per_cm == pytest.approx(WATER_PER_CM) and parsed.energy_kev == 60.0


@pytest.mark.parametrize("give", ["act", "atn"])
def test_round_trip_labels_and_hu(tmp_path: Path, give: str) -> None:
    activity, log = _write_xcat(tmp_path)
    given = activity if give == "act" else tmp_path / "patient_atn_1.bin"
    out = convert_xcat(given, log, tmp_path / "xcat.h5", progress=False)
    info = read_info(out)
    assert info.num_samples == SLICES and info.source.value == "phantom"
    assert info.pixel_spacing_mm == pytest.approx((2.5, 2.5))
    with h5py.File(out, "r") as handle:
        images, masks = handle["images"][:, 0], handle["masks"][...]
        ids = set(handle["patient_ids"][...].astype(str))
        z = handle["extras/z_mm"][...]
    assert ids == {"xcat-patient"}
    np.testing.assert_allclose(z, [0.0, 5.0, 10.0])
    assert set(np.unique(masks)) == {Tissue.BACKGROUND, Tissue.MUSCLE, Tissue.LIVER}
    assert np.all(np.abs(images[masks == Tissue.LIVER] - 110) <= 1)
    assert np.all(np.abs(images[masks == Tissue.MUSCLE] - 50) <= 1)
    assert np.all(images[masks == Tissue.BACKGROUND] == -1000)


def test_without_attenuation_images_are_flat_nominal_values(tmp_path: Path) -> None:
    activity, log = _write_xcat(tmp_path, with_attenuation=False)
    out = convert_xcat(activity, log, tmp_path / "flat.h5", progress=False)
    with h5py.File(out, "r") as handle:
        images, masks = handle["images"][:, 0], handle["masks"][...]
    assert np.unique(images[masks == Tissue.LIVER]).size == 1


def test_custom_organ_map(tmp_path: Path) -> None:
    activity, log = _write_xcat(tmp_path)
    organ_map = tmp_path / "map.toml"
    organ_map.write_text('[[organ]]\nactivity = 0\nname = "background"\n[[organ]]\nactivity = 1\nname = "subcutaneous_fat"\n'
                         '[[organ]]\nactivity = 8\nname = "spleen"\n')
    out = convert_xcat(activity, log, tmp_path / "mapped.h5", organ_map=organ_map, progress=False)
    with h5py.File(out, "r") as handle:
        assert set(np.unique(handle["masks"][...])) == {Tissue.BACKGROUND, Tissue.SUBCUTANEOUS_FAT, Tissue.SPLEEN}


def _one_line_error(call: Callable[[], object], match: str) -> None:
    with pytest.raises(AugmentorError, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    activity, log = _write_xcat(tmp_path)
    out = tmp_path / "bad.h5"
    _one_line_error(lambda: convert_xcat(activity, tmp_path / "missing_log", out, progress=False), "not found")
    wrong = tmp_path / "wrong_log"
    wrong.write_text(log.read_text().replace(f"array_size = {SIZE}", "array_size = 20"))
    _one_line_error(lambda: convert_xcat(activity, wrong, out, progress=False), "not a whole number of 20x20")
    no_size = tmp_path / "nosize_log"
    no_size.write_text("pixel width = 0.1 (cm)\n")
    _one_line_error(lambda: convert_xcat(activity, no_size, out, progress=False), "array_size")
    strange = np.fromfile(activity, dtype="<f4")
    strange[5] = 3.5
    strange.tofile(activity)
    _one_line_error(lambda: convert_xcat(activity, log, out, progress=False), "activity value 3.5 .* matches no organ")
    bad_map = tmp_path / "bad.toml"
    bad_map.write_text('[[organ]]\nactivity = 1\nname = "livr"\n')
    _one_line_error(lambda: convert_xcat(activity, log, out, organ_map=bad_map, progress=False), "did you mean 'liver'")
    assert not out.exists()


def test_phantom_command_converts_xcat_and_reports_bad_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    activity, log = _write_xcat(tmp_path)
    out = tmp_path / "xcat.h5"
    result = runner.invoke(app, ["phantom", "--xcat", str(activity), "--log", str(log), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{SLICES} phantom slices" in result.output
    missing_log = runner.invoke(app, ["phantom", "--xcat", str(activity), "--out", str(tmp_path / "x.h5")])
    assert missing_log.exit_code == 2 and "--log" in missing_log.output
