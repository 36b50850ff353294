"""The phantom domain: virtual patients as XCAT writes them — flat intensity per tissue, plus the labels.

``augment phantom --n-patients K --out phantoms.h5`` writes K patients of ``slices_per_patient``
neighbouring axial slices (5 mm apart). ``images`` hold each tissue's nominal portal-venous CT number
(no texture, no noise, no blur: the idealised domain that phantom->CT translation starts from);
``masks`` hold the label map, whose names are the file's ``mask_label_names``. Phantom patients come
from their own seed stream (``PHANTOM_STREAM``) with ids ``phantom-NNNN``, so they never coincide with
the ``abdomen-ct`` cohort's patients.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from augmentor.data.provenance import make_provenance, virtual_patient_ids
from augmentor.data.writer import H5Writer, check_output
from augmentor.errors import AugmentorError
from augmentor.progress import progress_bar
from augmentor.simulate import anatomy
from augmentor.simulate.tissues import LABEL_NAMES, NOMINAL_HU

PHANTOM_STREAM = 0
PHANTOM_VERSION = "phantom-2"
CLASS_NAMES = ("abdomen",)
HU_WINDOW = (-160.0, 240.0)
DEFAULT_SLICES_PER_PATIENT = 8


def flat_intensity_image(labels: np.ndarray, tissue_hu: dict[int, float] | None = None) -> np.ndarray:
    """Map a label map to flat per-tissue CT numbers (nominal values by default)."""
    values = tissue_hu or NOMINAL_HU
    lookup = np.full(max(max(values) + 1, int(labels.max()) + 1), -1000.0, dtype=np.float32)
    for label, hu in values.items():
        lookup[label] = hu
    return lookup[labels]


def phantom_patient(seed: int, index: int) -> anatomy.VirtualPatient:
    """Phantom patient ``index`` of ``seed`` (its own generator: independent of how many are written)."""
    rng = np.random.default_rng([int(seed), PHANTOM_STREAM, int(index)])
    return anatomy.draw_patient(rng, f"phantom-{index:04d}")


def write_phantoms(
    out: str | Path,
    n_patients: int,
    *,
    seed: int = 0,
    slices_per_patient: int = DEFAULT_SLICES_PER_PATIENT,
    size: int = anatomy.DEFAULT_SIZE,
    overwrite: bool = False,
    progress: bool = True,
    created: str | None = None,
) -> Path:
    """Write the XCAT-like phantom domain.

    Args:
        out: output .h5 path.
        n_patients: virtual patients.
        seed: seed of every random draw.
        slices_per_patient: neighbouring slices per patient, 5 mm apart.
        size: pixels per side (the field of view stays 358 mm: 256 -> 1.4 mm, 512 -> 0.7 mm).
        overwrite: replace an existing file.
        progress: show a progress bar.
        created: fixed provenance creation time (ISO 8601), for byte-identical rebuilds.

    Returns:
        The written path.
    """
    if n_patients < 1:
        raise AugmentorError(f"--n-patients must be at least 1, got {n_patients}")
    if slices_per_patient < 1:
        raise AugmentorError(f"slices per patient must be at least 1, got {slices_per_patient}")
    if size < 32:
        raise AugmentorError(f"slice size must be at least 32 pixels, got {size}")
    path = check_output(out, overwrite)
    spacing = anatomy.FIELD_OF_VIEW_MM / size
    provenance = make_provenance(
        patient_ids=virtual_patient_ids("augmentor's simulator"),
        seed=seed,
        recipe={"phantom": {"n_patients": n_patients, "slices_per_patient": slices_per_patient, "size": size}},
        details={"simulator": PHANTOM_VERSION, "slice_spacing_mm": anatomy.SLICE_SPACING_MM,
                 "intensities": "flat nominal portal-venous HU per tissue"},
    )
    if created is not None:
        provenance["created"] = created
    with H5Writer(
        path, class_names=CLASS_NAMES, image_shape=(1, size, size), source="phantom",
        mask_label_names=LABEL_NAMES, pixel_spacing_mm=(spacing, spacing), hu_window=HU_WINDOW,
        provenance=provenance, overwrite=overwrite, extras=("z_mm",), block_size=4,
    ) as writer, progress_bar("phantom", n_patients, enabled=progress) as advance:
        for index in range(n_patients):
            patient = phantom_patient(seed, index)
            z_mm = anatomy.slice_positions(patient, slices_per_patient)
            masks = np.stack([anatomy.render_labels(patient, float(z), size, spacing) for z in z_mm])
            images = flat_intensity_image(masks)[:, None]
            writer.append(images, masks, np.zeros(len(z_mm), dtype=np.int64), [patient.patient_id] * len(z_mm),
                          extras={"z_mm": z_mm})
            advance()
    return path
