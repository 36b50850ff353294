"""The ``abdomen-ct`` cohort: whole 256x256 axial slices in the "real CT" domain with organ labels.

A slice is made the way a scanner makes one, then resampled the way a user prepares real CT for
training: the patient's label map is rendered on the scanner's own grid (512 x 512 pixels of 0.7 mm over
the 358 mm field, a routine abdominal reconstruction), each tissue gets its patient's portal-venous CT
number plus its own correlated texture, and :func:`~augmentor.simulate.acquisition.simulate_scan`
projects it, adds photon noise and reconstructs it with the standard soft-tissue kernel rolled off to
zero at the detector's Nyquist frequency (Hann-apodised ramp; without the roll-off a noise-free scan of
flat organs deviates ~10 HU rms in the liver, with streaks and moire beside the spine). The 512 x 512
reconstruction is then resampled to the training size with an anti-aliasing filter
(:func:`~augmentor.data.resample.resample_slices`, the same one ``augment ingest --whole-slices`` uses on
real CT). The mask is the label map rendered directly on the output grid.

Patients are disjoint from ``augment phantom``'s: cohort patients are drawn from the seed stream
``(seed, COHORT_STREAM, split, patient)`` with ids ``ct-<split>-NNNN``, phantom patients from
``(seed, PHANTOM_STREAM, patient)`` with ids ``phantom-NNNN``; train and test use different splits.

Determinism: slice i of a split depends only on (simulator version, seed, split, i): each patient has
its own generator, patients are built whole by one worker, and results are written in patient order, so
the arrays are identical for any worker count. The provenance ``created`` time is the only thing that
differs between two builds; pass ``created`` to fix it and get identical bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from augmentor.data.provenance import make_provenance, virtual_patient_ids
from augmentor.data.resample import resample_slices
from augmentor.data.writer import H5Writer, check_output
from augmentor.errors import AugmentorError
from augmentor.progress import progress_bar
from augmentor.simulate import anatomy
from augmentor.simulate.acquisition import _projector, default_num_views, simulate_scan
from augmentor.simulate.phantom import flat_intensity_image
from augmentor.simulate.texture import textured_tissue_image
from augmentor.simulate.tissues import LABEL_NAMES, tissue_textures

SIMULATOR_VERSION = "abdomen-2"
COHORT_STREAM = 1  # seed stream of cohort patients (phantom.PHANTOM_STREAM is 0)
SPLITS = {"train": 0, "test": 1}
CLASS_NAMES = ("abdomen",)
HU_WINDOW = (-160.0, 240.0)  # abdominal soft-tissue window (W 400, L 40)
DEFAULT_TRAIN_SIZE = 96
DEFAULT_TEST_SIZE = 96
DEFAULT_SLICES_PER_PATIENT = 4
# The scanner's reconstruction grid: 512 x 512 pixels over the field (0.7 mm for 358 mm), a real CT matrix.
SCAN_SIZE = 512
# Truth rendered this many times finer than the scan grid. 1: 0.7 mm pixels are fine enough; partial volume
# at the 1.4 mm output comes from the scanner's blur and the anti-aliased resampling.
SUPERSAMPLE = 1
KERNEL = "standard"
APODISATION = "hann"


@dataclass(frozen=True)
class CtSlices:
    """One patient's scanned stack.

    Attributes:
        images: (S, H, W) float32 HU after the simulated scan.
        masks: (S, H, W) uint8 labels on the output grid.
        z_mm: (S,) slice positions.
    """

    images: np.ndarray
    masks: np.ndarray
    z_mm: np.ndarray


def scan_patient(
    patient: anatomy.VirtualPatient,
    z_mm: np.ndarray,
    rng: np.random.Generator,
    *,
    size: int = anatomy.DEFAULT_SIZE,
    spacing_mm: float = anatomy.DEFAULT_SPACING_MM,
    dose: float = 1.0,
    scan_size: int = SCAN_SIZE,
    textured: bool = True,
) -> CtSlices:
    """Render, scan on the scanner's grid, and resample to the output grid, slices of one patient.

    Args:
        patient: the virtual patient.
        z_mm: slice positions.
        rng: the patient's generator for texture and photon noise.
        size: output pixels per side.
        spacing_mm: output pixel spacing (``size * spacing_mm`` is the field of view).
        dose: relative dose (1 = routine).
        scan_size: pixels per side of the scanner's reconstruction over the same field (at least
            ``size``); 512 is a real CT matrix, smaller values only make tests fast.
        textured: give tissues their texture; False scans flat organs (to measure the scanner alone).

    Returns:
        The scanned :class:`CtSlices`.
    """
    field_mm = size * spacing_mm
    scan_size = max(int(scan_size), size)
    scan_spacing = field_mm / scan_size
    fine_size, fine_spacing = scan_size * SUPERSAMPLE, scan_spacing / SUPERSAMPLE
    tissue_hu = patient.phase.tissue_hu()
    textures = tissue_textures()
    truths, masks = [], []
    for z in z_mm:
        fine_labels = anatomy.render_labels(patient, float(z), fine_size, fine_spacing)
        if textured:
            truths.append(textured_tissue_image(fine_labels, tissue_hu, textures, fine_spacing, rng))
        else:
            truths.append(flat_intensity_image(fine_labels, tissue_hu))
        masks.append(anatomy.render_labels(patient, float(z), size, spacing_mm))
    scanned = simulate_scan(np.stack(truths), scan_spacing, dose=dose, rng=rng, kernel=KERNEL,
                            apodisation=APODISATION, supersample=SUPERSAMPLE)
    images = resample_slices(scanned, (size, size))
    return CtSlices(images=images, masks=np.stack(masks), z_mm=np.asarray(z_mm, dtype=np.float64))


def _patient_generator(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), COHORT_STREAM, SPLITS[split], int(index)])


def _build_patient(job: tuple[int, str, int, int, int, float, int]) -> tuple[str, CtSlices]:
    """Worker: one whole patient (its own generator), so results do not depend on the worker count."""
    seed, split, index, slices, size, spacing, scan_size = job
    rng = _patient_generator(seed, split, index)
    patient_id = f"ct-{split}-{index:04d}"
    patient = anatomy.draw_patient(rng, patient_id)
    dose = float(rng.uniform(0.8, 1.25))  # protocol / tube-current modulation differences
    z_mm = anatomy.slice_positions(patient, slices)
    return patient_id, scan_patient(patient, z_mm, rng, size=size, spacing_mm=spacing, dose=dose, scan_size=scan_size)


def _warm_up(scan_size: int) -> None:
    """Build the projector once before forking, so workers share it (copy-on-write) instead of each building it."""
    _projector(scan_size, default_num_views(scan_size))


def _results(jobs: list[tuple[int, str, int, int, int, float, int]], workers: int) -> Iterator[tuple[str, CtSlices]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_build_patient, jobs)
        return
    # fork: children inherit the warm projector cache; results come back in job order (map).
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        yield from pool.map(_build_patient, jobs, chunksize=1)


def build_abdomen_ct(
    out_dir: str | Path,
    *,
    seed: int = 0,
    train_size: int | None = None,
    test_size: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
    slices_per_patient: int = DEFAULT_SLICES_PER_PATIENT,
    size: int = anatomy.DEFAULT_SIZE,
    created: str | None = None,
    scan_size: int = SCAN_SIZE,
) -> dict[str, Path]:
    """Write the ``abdomen-ct`` cohort: ``train.h5`` and ``test.h5`` of scanned whole slices.

    Args:
        out_dir: the cohort folder (created if missing).
        seed: seed of every random draw.
        train_size: training slices (patients of ``slices_per_patient`` neighbouring slices); None: 96.
        test_size: test slices, from other patients; None: 96.
        overwrite: replace existing files.
        workers: processes (default: one per core); the output does not depend on it.
        progress: show a progress bar.
        slices_per_patient: slices per virtual patient (5 mm apart).
        size: pixels per side (spacing scales to keep the 358 mm field of view).
        created: fixed provenance creation time (ISO 8601), for byte-identical rebuilds.
        scan_size: pixels per side of the scanner's reconstruction (512: 0.7 mm pixels), resampled to
            ``size`` with anti-aliasing; smaller values only make tests fast.

    Returns:
        ``{"train": path, "test": path}``.
    """
    train_size = DEFAULT_TRAIN_SIZE if train_size is None else train_size
    test_size = DEFAULT_TEST_SIZE if test_size is None else test_size
    if train_size < 1 or test_size < 1:
        raise AugmentorError(f"train and test sizes must be positive, got {train_size} and {test_size}")
    if slices_per_patient < 1:
        raise AugmentorError(f"slices per patient must be positive, got {slices_per_patient}")
    if size < 32:
        raise AugmentorError(f"slice size must be at least 32 pixels, got {size}")
    if scan_size < 32:
        raise AugmentorError(f"scan size must be at least 32 pixels, got {scan_size}")
    scan_size = max(scan_size, size)
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise AugmentorError(f"{folder} is a file; give a folder for the cohort")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {split: check_output(folder / f"{split}.h5", overwrite) for split in SPLITS}
    spacing = anatomy.FIELD_OF_VIEW_MM / size
    workers = max(1, workers or os.cpu_count() or 1)
    _warm_up(scan_size)
    for split, count in (("train", train_size), ("test", test_size)):
        patients = math.ceil(count / slices_per_patient)
        jobs = [(seed, split, index, slices_per_patient, size, spacing, scan_size) for index in range(patients)]
        provenance = make_provenance(
            patient_ids=virtual_patient_ids("augmentor's simulator"),
            seed=seed,
            recipe={"cohort": "abdomen-ct", "split": split, "size": count, "slices_per_patient": slices_per_patient,
                    "image_size": size},
            details={"simulator": SIMULATOR_VERSION, "patients": patients, "pixel_spacing_mm": spacing,
                     "slice_spacing_mm": anatomy.SLICE_SPACING_MM, "supersample": SUPERSAMPLE,
                     "acquisition": {"scan_size": scan_size, "scan_pixel_spacing_mm": anatomy.FIELD_OF_VIEW_MM / scan_size,
                                     "kernel": KERNEL, "apodisation": APODISATION,
                                     "resampling": "Lanczos-3 anti-aliased to the output size"}},
        )
        if created is not None:
            provenance["created"] = created
        written = 0
        with H5Writer(
            paths[split], class_names=CLASS_NAMES, image_shape=(1, size, size), source="real",
            mask_label_names=LABEL_NAMES, pixel_spacing_mm=(spacing, spacing), hu_window=HU_WINDOW,
            provenance=provenance, overwrite=overwrite, extras=("z_mm",), block_size=4,
        ) as writer, progress_bar(f"abdomen-ct {split}", len(jobs), enabled=progress) as advance:
            for patient_id, stack in _results(jobs, workers):
                keep = min(len(stack.z_mm), count - written)
                writer.append(
                    stack.images[:keep, None], stack.masks[:keep], np.zeros(keep, dtype=np.int64),
                    [patient_id] * keep, extras={"z_mm": stack.z_mm[:keep]},
                )
                written += keep
                advance()
    return paths
