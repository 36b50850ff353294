"""Virtual-patient cohorts: ``DIR/train.h5`` and ``DIR/test.h5`` from disjoint virtual patients.

Registered cohorts (``build_cohort(name, ...)``, ``augment cohort NAME``):

- ``liver-lesions``: 64x64 lesion-centred ROIs of liver cysts, metastases and hemangiomas in the
  portal-venous phase. Train = 53 / 64 / 65 lesions (the 182 of Frid-Adar et al. 2018) from about 90
  patients (metastases and cysts often several per patient, sharing the patient's phenotype); test =
  1 500 lesions from other patients.
- ``lung-nodules``: 64x64 nodule-centred ROIs, benign / malignant. Train = 30 / 30 (the 60 of Onishi et
  al. 2019) from about 45 patients (granulomas come in groups); test = 1 000.
- ``abdomen-ct``: whole slices, built by :mod:`augmentor.simulate.abdomen`.

How a lesion sample is made: draw the patient (contrast phase, texture, noise), the lesion's size, render
the scene and the lesion ``SUPERSAMPLE`` times finer than the output (partial volume) with a margin,
scan it (:func:`augmentor.simulate.acquisition.simulate_scan`: projection, Poisson noise, FBP), crop the
margin (it absorbs the reconstruction's edge effects) and store HU as int16.

Determinism: sample i of a split depends only on (seed, split, i) and the split's size -- its patient,
class and random stream come from ``numpy.random.SeedSequence(seed, spawn_key=(stream, split, i))`` --
never on the worker count or chunking, so any number of workers writes identical arrays.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache, partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.errors import AugmentorError, OutputExistsError, look_up_option
from augmentor.simulate import lesions, scenes

# Bump when a change alters the pixels a seed produces; stored in every file's provenance.
SIMULATOR_VERSION = "lesion-roi-3"

SPLITS = ("train", "test")
ROI_SIZE_PX = 64
# The scene is rendered this many output pixels larger on every side and cropped after reconstruction:
# the field of view's edge (tissue against air in the projections) rings for ~2 pixels.
MARGIN_PX = 4
SUPERSAMPLE = 2
CHUNK_SIZE = 16  # samples per worker task; fixed, so results never depend on the worker count

# Random streams (the first element of a SeedSequence spawn key).
_STREAM_PLAN, _STREAM_PATIENT, _STREAM_SAMPLE = 1, 2, 3


@dataclass(frozen=True)
class LesionSample:
    """One reconstructed ROI with its labels (output grid)."""

    image: np.ndarray  # (H, W) float32 HU
    mask: np.ndarray  # (H, W) uint8, 1 = lesion
    class_index: int
    diameter_mm: float
    variant: int
    noise_sd_hu: float


@dataclass(frozen=True)
class LesionCohort:
    """Definition of a lesion-ROI cohort.

    Args:
        name: registry name.
        class_names: ordered class names.
        train_counts: published per-class train counts (scaled by ``train_size``).
        test_size: default number of test lesions (split in the train proportions).
        spacing_mm: output pixel spacing.
        hu_window: window for training (stored in the file).
        lesions_per_patient: per class, probabilities of 1, 2, 3, ... lesions in one patient.
        variants: per class, the names of its appearance variants (stored in provenance).
        patient_prefix: short prefix of patient ids.
        draw_patient: ``rng -> patient traits``.
        draw_diameter: ``(rng, class_index) -> diameter_mm``.
        draw_scene: ``(rng, grid, patient, radius_mm) -> Scene``.
        render_lesion: ``(rng, class_index, scene, grid, patient, diameter_mm) -> RenderedLesion``.
    """

    name: str
    class_names: tuple[str, ...]
    train_counts: tuple[int, ...]
    test_size: int
    spacing_mm: float
    hu_window: tuple[float, float]
    lesions_per_patient: tuple[tuple[float, ...], ...]
    variants: dict[str, tuple[str, ...]]
    patient_prefix: str
    draw_patient: Callable[[np.random.Generator], Any]
    draw_diameter: Callable[[np.random.Generator, Any], float]
    draw_scene: Callable[[np.random.Generator, scenes.Grid, Any, float], scenes.Scene]
    render_lesion: Callable[..., lesions.RenderedLesion]


LIVER_LESIONS = LesionCohort(
    name="liver-lesions",
    class_names=lesions.LIVER_CLASS_NAMES,
    train_counts=(53, 64, 65),
    test_size=1500,
    spacing_mm=0.8,
    hu_window=(-160.0, 240.0),
    # Metastases are often multiple; cysts often a few; hemangiomas mostly solitary.
    lesions_per_patient=((0.38, 0.3, 0.2, 0.12), (0.22, 0.21, 0.2, 0.15, 0.1, 0.08, 0.04), (0.58, 0.3, 0.12)),
    variants=lesions.LIVER_VARIANTS,
    patient_prefix="liver",
    draw_patient=scenes.draw_liver_patient,
    draw_diameter=lesions.draw_liver_diameter,
    draw_scene=scenes.liver_scene,
    render_lesion=lesions.render_liver_lesion,
)

LUNG_NODULES = LesionCohort(
    name="lung-nodules",
    class_names=lesions.LUNG_CLASS_NAMES,
    train_counts=(30, 30),
    test_size=1000,
    spacing_mm=0.7,
    hu_window=(-1000.0, 400.0),
    # Old granulomatous disease often leaves several nodules; a second primary cancer or a satellite
    # nodule is less common.
    lesions_per_patient=((0.45, 0.25, 0.15, 0.1, 0.05), (0.85, 0.15)),
    variants=lesions.LUNG_VARIANTS,
    patient_prefix="lung",
    draw_patient=scenes.draw_lung_patient,
    draw_diameter=lesions.draw_lung_diameter,
    draw_scene=scenes.lung_scene,
    render_lesion=lesions.render_lung_nodule,
)

LESION_COHORTS: dict[str, LesionCohort] = {cohort.name: cohort for cohort in (LIVER_LESIONS, LUNG_NODULES)}


# ------------------------------------------------------------------------------------------- plan ----


@dataclass(frozen=True)
class PlannedLesion:
    """Which class and patient sample i of a split is."""

    class_index: int
    patient_index: int
    lesion_number: int  # 0, 1, ... within the patient


def split_counts(total: int, weights: Sequence[float]) -> tuple[int, ...]:
    """Share ``total`` among classes in proportion to ``weights`` (largest remainder, exact total)."""
    weight_sum = float(sum(weights))
    raw = [total * w / weight_sum for w in weights]
    counts = [math.floor(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda k: (counts[k] - raw[k], k))
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return tuple(counts)


def plan_split(cohort: LesionCohort, counts: Sequence[int], seed: int, split: str) -> list[PlannedLesion]:
    """Group a split's lesions into virtual patients.

    Each patient has a main class and 1..k lesions of it (``lesions_per_patient``); patients are
    shuffled, so the lesions of one patient are consecutive but classes are interleaved.

    Args:
        cohort: the cohort definition.
        counts: lesions per class in this split.
        seed: cohort seed.
        split: "train" or "test".

    Returns:
        One entry per sample, in file order.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_PLAN, SPLITS.index(split))))
    patients: list[tuple[int, int]] = []  # (class, lesion count)
    for class_index, count in enumerate(counts):
        probabilities = np.asarray(cohort.lesions_per_patient[class_index])
        remaining = int(count)
        while remaining > 0:
            lesion_count = min(int(rng.choice(len(probabilities), p=probabilities / probabilities.sum())) + 1, remaining)
            patients.append((class_index, lesion_count))
            remaining -= lesion_count
    order = rng.permutation(len(patients))
    plan: list[PlannedLesion] = []
    for patient_index, position in enumerate(order):
        class_index, lesion_count = patients[int(position)]
        plan.extend(PlannedLesion(class_index, patient_index, number) for number in range(lesion_count))
    return plan


def patient_id(cohort: LesionCohort, seed: int, split: str, patient_index: int) -> str:
    """A virtual patient id that names its cohort, seed and split, so splits can never share a patient."""
    return f"{cohort.patient_prefix}-s{seed}-{split}-{patient_index:05d}"


# -------------------------------------------------------------------------------------- rendering ----


def _area_mean(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = image.shape
    return image.reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3))


@lru_cache(maxsize=8)
def noise_at_unit_dose(size_px: int, spacing_mm: float, supersample: int) -> float:
    """Noise sd (HU) that :func:`simulate_scan` gives a flat water patch at dose 1 on this grid.

    Patients are drawn with a target noise in HU; this converts it to the scanner's dose
    (sigma ~ 1/sqrt(dose)), so cohorts keep their noise if the acquisition's calibration changes.
    A patch is scanned as if inside an average body (the acquisition tops every ray up to the same
    water path), so the noise hardly depends on the patch's own tissue and one calibration serves all.
    """
    from augmentor.simulate.acquisition import simulate_scan

    flat = np.zeros((4, size_px * supersample, size_px * supersample), dtype=np.float32)
    generators = [np.random.default_rng(np.random.SeedSequence(12345, spawn_key=(k,))) for k in range(4)]
    scanned = simulate_scan(flat, spacing_mm, dose=1.0, rng=generators, supersample=supersample)
    inner = scanned[:, MARGIN_PX:-MARGIN_PX, MARGIN_PX:-MARGIN_PX]
    return float(inner.std(axis=(1, 2)).mean())


def render_sample(cohort: LesionCohort, seed: int, split: str, index: int, planned: PlannedLesion) -> LesionSample:
    """Render sample ``index`` of a split: patient, scene, lesion, scan.

    Args:
        cohort: the cohort definition.
        seed: cohort seed.
        split: "train" or "test".
        index: sample index in the split.
        planned: its class and patient (from :func:`plan_split`).

    Returns:
        The reconstructed ROI, its mask and labels.
    """
    from augmentor.simulate.acquisition import simulate_scan

    split_code = SPLITS.index(split)
    patient_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_PATIENT, split_code, planned.patient_index)))
    patient = cohort.draw_patient(patient_rng)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_SAMPLE, split_code, index)))
    full_size = ROI_SIZE_PX + 2 * MARGIN_PX
    grid = scenes.Grid(full_size, cohort.spacing_mm, SUPERSAMPLE)
    diameter_mm = cohort.draw_diameter(rng, planned.class_index)
    scene = cohort.draw_scene(rng, grid, patient, diameter_mm / 2)
    rendered = cohort.render_lesion(rng, planned.class_index, scene, grid, patient, diameter_mm)

    dose = (noise_at_unit_dose(full_size, cohort.spacing_mm, SUPERSAMPLE) / patient.noise_sd_hu) ** 2
    image = simulate_scan(rendered.hu, cohort.spacing_mm, dose=dose, rng=rng, supersample=SUPERSAMPLE)
    # The mask is the lesion's area fraction on the output grid, thresholded at one half.
    mask = (_area_mean(rendered.mask.astype(np.float32), SUPERSAMPLE) >= 0.5).astype(np.uint8)
    crop = slice(MARGIN_PX, MARGIN_PX + ROI_SIZE_PX)
    return LesionSample(
        image=image[crop, crop],
        mask=mask[crop, crop],
        class_index=rendered.class_index,
        diameter_mm=rendered.diameter_mm,
        variant=rendered.variant,
        noise_sd_hu=patient.noise_sd_hu,
    )


@dataclass(frozen=True)
class _Chunk:
    """A worker task: consecutive samples of one split."""

    cohort_name: str
    seed: int
    split: str
    start: int
    planned: tuple[PlannedLesion, ...]


@dataclass(frozen=True)
class _ChunkResult:
    images: np.ndarray  # (B, 1, H, W) int16
    masks: np.ndarray  # (B, H, W) uint8
    labels: np.ndarray  # (B,)
    extras: dict[str, np.ndarray]


EXTRA_COLUMNS = ("diameter_mm", "noise_sd_hu", "variant", "lesion_number")


def _render_chunk(chunk: _Chunk) -> _ChunkResult:
    from augmentor.data.writer import to_int16_hu

    cohort = LESION_COHORTS[chunk.cohort_name]
    samples = [
        render_sample(cohort, chunk.seed, chunk.split, chunk.start + k, planned) for k, planned in enumerate(chunk.planned)
    ]
    return _ChunkResult(
        images=to_int16_hu(np.stack([s.image for s in samples])[:, None]),
        masks=np.stack([s.mask for s in samples]),
        labels=np.asarray([s.class_index for s in samples], dtype=np.int64),
        extras={
            "diameter_mm": np.asarray([s.diameter_mm for s in samples]),
            "noise_sd_hu": np.asarray([s.noise_sd_hu for s in samples]),
            "variant": np.asarray([s.variant for s in samples]),
            "lesion_number": np.asarray([p.lesion_number for p in chunk.planned]),
        },
    )


def _chunks(cohort: LesionCohort, seed: int, split: str, plan: list[PlannedLesion]) -> list[_Chunk]:
    return [
        _Chunk(cohort.name, seed, split, start, tuple(plan[start : start + CHUNK_SIZE]))
        for start in range(0, len(plan), CHUNK_SIZE)
    ]


def _worker_init() -> None:
    # Each worker is one core's worth: keep BLAS/OpenMP pools from oversubscribing the machine.
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency, but the simulator does not need it
        pass


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _run_chunks(chunks: list[_Chunk], workers: int) -> Iterator[_ChunkResult]:
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield _render_chunk(chunk)
        return
    # spawn: a clean interpreter per worker (fork after torch/OpenMP initialised can deadlock).
    pool = ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=get_context("spawn"), initializer=_worker_init)
    try:
        yield from pool.map(_render_chunk, chunks)
    finally:
        # On an error or Ctrl-C, drop the chunks not started instead of rendering them for nothing.
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------ build ----


def _check_size(value: int | None, default: int, what: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise AugmentorError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def output_paths(out_dir: str | Path, overwrite: bool) -> dict[str, Path]:
    """``{split: DIR/split.h5}``; refuses (changing nothing) if one exists and ``overwrite`` is false."""
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise AugmentorError(f"{directory} is a file; give a directory for the cohort")
    paths = {split: directory / f"{split}.h5" for split in SPLITS}
    if not overwrite:
        for path in paths.values():
            if path.exists():
                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    return paths


def build_lesion_cohort(
    cohort: LesionCohort,
    out_dir: str | Path,
    *,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Build a lesion-ROI cohort (see :func:`build_cohort`)."""
    from augmentor.data.provenance import make_provenance, virtual_patient_ids
    from augmentor.data.writer import H5Writer

    train_total = _check_size(train_size, sum(cohort.train_counts), "train size")
    test_total = _check_size(test_size, cohort.test_size, "test size")
    worker_count = default_workers() if workers is None else int(workers)
    if worker_count < 0:
        raise AugmentorError(f"workers must be >= 0, got {workers}")
    paths = output_paths(out_dir, overwrite)
    counts = {
        "train": split_counts(train_total, cohort.train_counts),
        "test": split_counts(test_total, cohort.train_counts),
    }
    plans = {split: plan_split(cohort, counts[split], seed, split) for split in SPLITS}
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    with ExitStack() as stack:
        writers = {}
        for split in SPLITS:
            provenance = make_provenance(
                patient_ids=virtual_patient_ids("augmentor's simulator"),
                seed=seed,
                details={
                    "cohort": cohort.name,
                    "split": split,
                    "simulator_version": SIMULATOR_VERSION,
                    "class_counts": dict(zip(cohort.class_names, counts[split], strict=True)),
                    "train_size": train_total,
                    "test_size": test_total,
                    "num_patients": len({p.patient_index for p in plans[split]}),
                    "variants": cohort.variants,
                    "roi_size_px": ROI_SIZE_PX,
                    "supersample": SUPERSAMPLE,
                    "acquisition": "parallel-beam projection, Poisson noise, FBP standard kernel",
                },
            )
            writers[split] = stack.enter_context(
                H5Writer(
                    paths[split],
                    class_names=cohort.class_names,
                    image_shape=(1, ROI_SIZE_PX, ROI_SIZE_PX),
                    source="real",  # the simulator plays the real cohort; provenance says it is simulated
                    mask_label_names=("background", "lesion"),
                    pixel_spacing_mm=(cohort.spacing_mm, cohort.spacing_mm),
                    hu_window=cohort.hu_window,
                    provenance=provenance,
                    overwrite=overwrite,
                    extras=EXTRA_COLUMNS,
                )
            )
        progress_bar = _progress(progress)
        with progress_bar as bar:
            for split in SPLITS:
                plan = plans[split]
                task = bar.add_task(f"{cohort.name} {split}", total=len(plan)) if bar is not None else None
                ids = [patient_id(cohort, seed, split, p.patient_index) for p in plan]
                position = 0
                for result in _run_chunks(_chunks(cohort, seed, split, plan), worker_count):
                    batch = result.images.shape[0]
                    writers[split].append(result.images, result.masks, result.labels, ids[position : position + batch], result.extras)
                    position += batch
                    if bar is not None and task is not None:
                        bar.advance(task, batch)
    return paths


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()
    )


def _build_abdomen_ct(
    out_dir: str | Path,
    *,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    from augmentor.simulate.abdomen import build_abdomen_ct

    return build_abdomen_ct(
        out_dir, seed=seed, train_size=train_size, test_size=test_size, overwrite=overwrite, workers=workers, progress=progress
    )


COHORT_BUILDERS: dict[str, Callable[..., dict[str, Path]]] = {
    LIVER_LESIONS.name: partial(build_lesion_cohort, LIVER_LESIONS),
    LUNG_NODULES.name: partial(build_lesion_cohort, LUNG_NODULES),
    "abdomen-ct": _build_abdomen_ct,
}


def build_cohort(
    name: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Simulate a cohort of virtual patients into ``out_dir/train.h5`` and ``out_dir/test.h5``.

    Args:
        name: a registered cohort: ``liver-lesions``, ``lung-nodules`` or ``abdomen-ct``.
        out_dir: output directory (created if missing).
        seed: the seed of every random draw; the same seed gives the same arrays.
        train_size: train samples (default: the published count; classes keep their proportions).
        test_size: test samples (default: 1 500 liver lesions, 1 000 lung nodules).
        overwrite: replace existing files; otherwise an existing output is refused and nothing changes.
        workers: processes (default: the cores available; 0 or 1 renders in this process).
        progress: show a progress bar.

    Returns:
        ``{"train": path, "test": path}``.

    Raises:
        AugmentorError: unknown cohort name, bad sizes, or an existing output without ``overwrite``.
    """
    look_up_option(name, COHORT_BUILDERS, "cohort")
    return COHORT_BUILDERS[name](
        out_dir, seed=seed, train_size=train_size, test_size=test_size, overwrite=overwrite, workers=workers, progress=progress
    )
