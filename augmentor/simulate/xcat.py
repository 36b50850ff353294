"""Users' own phantoms: convert XCAT raw volumes into the phantom HDF5 file.

XCAT writes raw little-endian float32 volumes, slice after slice, each ``array_size`` x ``array_size``
(x fastest): ``NAME_act_1.bin`` holds every voxel's organ "activity" (whatever value the parameter file
gave that organ) and ``NAME_atn_1.bin`` its linear attenuation coefficient at the simulated energy. The
text log ``NAME_log`` records the geometry, with lines such as::

    pixel width =  0.0700 (cm)
    slice width =  0.0700 (cm)
    array_size = 512
    starting slice number    =  310
    ending slice number      =  330
    Body (water) =    0.1929

:func:`convert_xcat` reads the geometry from the log (units default to cm, as XCAT writes them), turns
activities into augmentor tissue labels through an organ map (a TOML file; the default,
``xcat_organ_map.toml``, documents the convention) and attenuation into HU,
``HU = 1000 * (mu / mu_water - 1)``. XCAT's attenuation maps are per pixel and the log's are per cm in
the versions we know of; the unit is therefore detected from the data (the body's median must be near
water in one of them). Without an attenuation file the images are the tissues' flat nominal values.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from augmentor.data.provenance import make_provenance, sha256_file, stored_path, virtual_patient_ids
from augmentor.data.writer import H5Writer, check_output
from augmentor.errors import AugmentorError, look_up_option
from augmentor.progress import progress_bar
from augmentor.simulate.phantom import CLASS_NAMES, HU_WINDOW, flat_intensity_image
from augmentor.simulate.tissues import LABEL_NAMES

DEFAULT_ORGAN_MAP = "xcat_organ_map.toml"
DEFAULT_ENERGY_KEV = 70.0
# Water mass attenuation (NIST XCOM, cm^2/g, coherent included) at the energies XCAT is usually run at;
# log-log interpolation in between. Density 1 g/cm^3, so these are also mu in 1/cm.
WATER_MU_PER_CM: dict[float, float] = {
    30.0: 0.3756, 40.0: 0.2683, 50.0: 0.2269, 60.0: 0.2059, 80.0: 0.1837, 100.0: 0.1707, 150.0: 0.1505,
}
BYTES_PER_VOXEL = 4
SLICES_PER_BLOCK = 8


@dataclass(frozen=True)
class XcatLog:
    """What :func:`read_xcat_log` found.

    Attributes:
        array_size: pixels per side of a slice.
        pixel_mm: in-plane pixel width, mm.
        slice_mm: slice width, mm (pixel width when the log does not say).
        water_mu_per_cm: the log's water attenuation, 1/cm, if listed.
        energy_kev: the simulated energy, if listed.
        first_slice: the log's starting slice number, if listed.
        last_slice: its ending slice number, if listed.
    """

    array_size: int
    pixel_mm: float
    slice_mm: float
    water_mu_per_cm: float | None = None
    energy_kev: float | None = None
    first_slice: int | None = None
    last_slice: int | None = None


_NUMBER = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"


def _length_mm(text: str, label: str) -> float | None:
    """A 'label = value (unit)' length in mm; XCAT's unit is cm when none is given."""
    match = re.search(rf"{label}\s*[=:]\s*{_NUMBER}\s*(\(?\s*(cm|mm))?", text, flags=re.IGNORECASE)
    if not match:
        return None
    value = float(match.group(1))
    unit = (match.group(3) or "cm").lower()
    return value * (10.0 if unit == "cm" else 1.0)


def _integer(text: str, label: str) -> int | None:
    match = re.search(rf"{label}\s*[=:]\s*(\d+)", text, flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def read_xcat_log(log_path: str | Path) -> XcatLog:
    """Parse the geometry (and, if present, water attenuation and energy) from an XCAT log.

    Raises:
        AugmentorError: missing file, or no array size / pixel width in it.
    """
    path = Path(log_path)
    if not path.is_file():
        raise AugmentorError(f"XCAT log {path} not found; pass --log with the NAME_log file XCAT wrote next to the .bin files")
    text = path.read_text(errors="replace")
    array_size = _integer(text, r"array[ _]size")
    if array_size is None or array_size < 1:
        raise AugmentorError(f"{path}: no 'array_size = N' line; is this an XCAT log?")
    pixel_mm = _length_mm(text, r"pixel\s+width")
    if pixel_mm is None or not pixel_mm > 0:
        raise AugmentorError(f"{path}: no 'pixel width = W (cm)' line; is this an XCAT log?")
    slice_mm = _length_mm(text, r"slice\s+width") or pixel_mm
    water = re.search(rf"body\s*\(\s*water\s*\)\s*[=:]\s*{_NUMBER}", text, flags=re.IGNORECASE)
    energy = re.search(rf"{_NUMBER}\s*kev", text, flags=re.IGNORECASE)
    return XcatLog(
        array_size=array_size,
        pixel_mm=pixel_mm,
        slice_mm=slice_mm,
        water_mu_per_cm=float(water.group(1)) if water else None,
        energy_kev=float(energy.group(1)) if energy else None,
        first_slice=_integer(text, r"starting\s+slice\s+number"),
        last_slice=_integer(text, r"ending\s+slice\s+number"),
    )


def water_mu_per_cm(energy_kev: float) -> float:
    """Water's linear attenuation at ``energy_kev`` (log-log interpolation of NIST XCOM), 1/cm."""
    energies = sorted(WATER_MU_PER_CM)
    energy = min(max(energy_kev, energies[0]), energies[-1])
    for low, high in itertools.pairwise(energies):
        if low <= energy <= high:
            fraction = math.log(energy / low) / math.log(high / low)
            return math.exp((1 - fraction) * math.log(WATER_MU_PER_CM[low]) + fraction * math.log(WATER_MU_PER_CM[high]))
    return WATER_MU_PER_CM[energies[-1]]


def load_organ_map(path: str | Path | None = None) -> dict[float, int]:
    """Read an organ map: activity value -> augmentor tissue label value.

    Args:
        path: a TOML file of ``[[organ]]`` tables with ``activity`` (number) and ``name`` (tissue name);
            None reads the default map shipped with augmentor.

    Raises:
        AugmentorError: unreadable TOML, a missing key, an unknown tissue name or a duplicated activity.
    """
    if path is None:
        source = "default organ map"
        text = resources.files("augmentor.simulate").joinpath(DEFAULT_ORGAN_MAP).read_text()
    else:
        source = str(path)
        if not Path(path).is_file():
            raise AugmentorError(f"organ map {path} not found")
        text = Path(path).read_text()
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise AugmentorError(f"{source}: not valid TOML ({error})") from None
    organs = document.get("organ")
    if not isinstance(organs, list) or not organs:
        raise AugmentorError(f"{source}: expected [[organ]] tables with 'activity' and 'name'")
    mapping: dict[float, int] = {}
    for index, organ in enumerate(organs):
        if not isinstance(organ, dict) or "activity" not in organ or "name" not in organ:
            raise AugmentorError(f"{source}: [[organ]] number {index + 1} needs 'activity' and 'name'")
        activity = organ["activity"]
        if isinstance(activity, bool) or not isinstance(activity, int | float) or not math.isfinite(activity):
            raise AugmentorError(f"{source}: activity {activity!r} of {organ['name']!r} is not a number")
        name = look_up_option(str(organ["name"]), LABEL_NAMES, "tissue name in the organ map")
        if float(activity) in mapping:
            raise AugmentorError(f"{source}: activity {activity} is listed twice")
        mapping[float(activity)] = LABEL_NAMES.index(name)
    return mapping


def _slice_count(path: Path, array_size: int, log_path: Path) -> int:
    slice_bytes = BYTES_PER_VOXEL * array_size * array_size
    size = path.stat().st_size
    if size == 0 or size % slice_bytes:
        raise AugmentorError(
            f"{path}: {size} bytes is not a whole number of {array_size}x{array_size} float32 slices "
            f"({slice_bytes} bytes each, array_size from {log_path.name}); wrong log or truncated file?"
        )
    return size // slice_bytes


def _siblings(bin_path: Path) -> tuple[Path, Path | None]:
    """(activity file, attenuation file or None) from either one's path."""
    name = bin_path.name
    if "_atn_" in name:
        activity = bin_path.with_name(name.replace("_atn_", "_act_"))
        if not activity.is_file():
            raise AugmentorError(f"labels come from the activity file; {activity} not found next to {bin_path}")
        return activity, bin_path
    attenuation = bin_path.with_name(name.replace("_act_", "_atn_")) if "_act_" in name else None
    return bin_path, attenuation if attenuation is not None and attenuation.is_file() else None


class _ActivityLabeller:
    """Activity values -> labels, with a tolerance for float32 rounding of the .par values."""

    def __init__(self, mapping: dict[float, int], source: str) -> None:
        self.activities = np.array(sorted(mapping), dtype=np.float64)
        self.labels = np.array([mapping[a] for a in sorted(mapping)], dtype=np.uint8)
        self.source = source

    def __call__(self, values: np.ndarray, path: Path) -> np.ndarray:
        flat = values.astype(np.float64).ravel()
        if not np.isfinite(flat).all():
            raise AugmentorError(f"{path}: contains NaN or infinite activity values")
        right = np.clip(np.searchsorted(self.activities, flat), 1, len(self.activities) - 1) if len(self.activities) > 1 else np.zeros(flat.shape, dtype=np.int64)
        left = np.maximum(right - 1, 0)
        nearest = np.where(np.abs(flat - self.activities[left]) <= np.abs(flat - self.activities[right]), left, right)
        tolerance = 1e-4 * np.maximum(1.0, np.abs(self.activities[nearest]))
        unmatched = np.abs(flat - self.activities[nearest]) > tolerance
        if unmatched.any():
            values_left, counts = np.unique(flat[unmatched], return_counts=True)
            worst = int(np.argmax(counts))
            raise AugmentorError(
                f"{path}: activity value {values_left[worst]:g} ({counts[worst]} voxels"
                f"{f', and {len(values_left) - 1} other values' if len(values_left) > 1 else ''}) matches no organ in "
                f"the {self.source}; add an [[organ]] entry with activity = {values_left[worst]:g} (--organ-map)"
            )
        return self.labels[nearest].reshape(values.shape)


def _attenuation_scale(attenuation: np.ndarray, log: XcatLog) -> float:
    """Water's mu in the attenuation file's unit (per pixel or per cm, whichever puts the body near water)."""
    water_per_cm = log.water_mu_per_cm or water_mu_per_cm(log.energy_kev or DEFAULT_ENERGY_KEV)
    body = attenuation[attenuation > 0]
    if body.size == 0:
        return water_per_cm * log.pixel_mm / 10.0
    median = float(np.median(body))
    candidates = (water_per_cm * log.pixel_mm / 10.0, water_per_cm)  # per pixel, per cm
    return min(candidates, key=lambda water: abs(math.log(median / water)))


def convert_xcat(
    bin_path: str | Path,
    log_path: str | Path,
    out: str | Path,
    *,
    organ_map: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert an XCAT phantom (``*_act_1.bin`` and, if present, ``*_atn_1.bin``) to a phantom HDF5 file.

    Args:
        bin_path: the activity or the attenuation file; the other is found by name next to it.
        log_path: XCAT's text log (array size, pixel width).
        out: output .h5 path.
        organ_map: TOML organ map (activity -> tissue name); default: the map shipped with augmentor.
        overwrite: replace an existing output.
        progress: show a progress bar.

    Returns:
        The written path: one sample per slice, ``images`` in HU (from attenuation, or each tissue's
        flat nominal value), ``masks`` the tissue labels, ``patient_ids`` ``xcat-<name>``.

    Raises:
        AugmentorError: missing files, a log without geometry, a volume whose size does not fit the log,
            activity values that match no organ, or a bad organ map (one line each).
    """
    given = Path(bin_path)
    if not given.is_file():
        raise AugmentorError(f"XCAT volume {given} not found")
    log_file = Path(log_path)
    log = read_xcat_log(log_file)
    activity_path, attenuation_path = _siblings(given)
    labeller = _ActivityLabeller(load_organ_map(organ_map), f"organ map {organ_map}" if organ_map else "default organ map")
    final = check_output(out, overwrite)
    size = log.array_size
    slices = _slice_count(activity_path, size, log_file)
    if log.first_slice is not None and log.last_slice is not None and log.last_slice - log.first_slice + 1 != slices:
        raise AugmentorError(
            f"{activity_path} holds {slices} slices but {log_file.name} says slices {log.first_slice}-{log.last_slice}; wrong log?"
        )
    activity = np.memmap(activity_path, dtype="<f4", mode="r", shape=(slices, size, size))
    attenuation = None
    water = 1.0
    if attenuation_path is not None:
        if _slice_count(attenuation_path, size, log_file) != slices:
            raise AugmentorError(f"{attenuation_path} and {activity_path} hold different numbers of slices")
        attenuation = np.memmap(attenuation_path, dtype="<f4", mode="r", shape=(slices, size, size))
        sample = np.asarray(attenuation[:: max(1, slices // 16)])
        if not np.isfinite(sample).all():
            raise AugmentorError(f"{attenuation_path}: contains NaN or infinite values")
        water = _attenuation_scale(sample, log)

    stem = activity_path.name.split("_act_")[0] or activity_path.stem
    patient_id = f"xcat-{stem}"[:48]
    inputs = {str(activity_path): sha256_file(activity_path), str(log_file): sha256_file(log_file)}
    if attenuation_path is not None:
        inputs[str(attenuation_path)] = sha256_file(attenuation_path)
    provenance = make_provenance(
        patient_ids=virtual_patient_ids("an XCAT computational phantom"),
        inputs=inputs,
        recipe={"xcat": {"organ_map": stored_path(organ_map) if organ_map else DEFAULT_ORGAN_MAP}},
        details={"array_size": size, "pixel_mm": log.pixel_mm, "slice_mm": log.slice_mm,
                 "intensities": "attenuation -> HU" if attenuation is not None else "flat nominal HU per tissue",
                 "water_mu_in_file_units": water if attenuation is not None else None},
    )
    with H5Writer(
        final, class_names=CLASS_NAMES, image_shape=(1, size, size), source="phantom",
        mask_label_names=LABEL_NAMES, pixel_spacing_mm=(log.pixel_mm, log.pixel_mm), hu_window=HU_WINDOW,
        provenance=provenance, overwrite=overwrite, extras=("z_mm",), block_size=4,
    ) as writer, progress_bar("xcat", slices, enabled=progress) as advance:
        for start in range(0, slices, SLICES_PER_BLOCK):
            stop = min(start + SLICES_PER_BLOCK, slices)
            labels = labeller(np.asarray(activity[start:stop]), activity_path)
            if attenuation is not None:
                images = 1000.0 * (np.asarray(attenuation[start:stop], dtype=np.float64) / water - 1.0)
            else:
                images = flat_intensity_image(labels)
            count = stop - start
            writer.append(images[:, None], labels, np.zeros(count, dtype=np.int64), [patient_id] * count,
                          extras={"z_mm": np.arange(start, stop) * log.slice_mm})
            advance(count)
    return final
