"""The real samples an evaluate recipe trains its arms on, as a file to train a generator on.

A generator that saw the recipe's *validation* patients gives its synthetic arms an advantage the real arms
lack (those patients early-stop every arm), so ``augment evaluate`` refuses such a generator unless the
recipe allows it visibly. ``augment evaluate RECIPE --export-train FILE`` writes exactly the samples of the
split's training patients (same cohort, same ``validation_fraction`` and ``split_seed`` as the run), so a
generator trained on FILE passes that check::

    augment evaluate evaluate-liver --export-train cohorts/liver-split-train.h5
    augment train frid-adar-liver --data cohorts/liver-split-train.h5 --out runs/liver

HU, masks, labels, patient ids, every per-sample extra column and the file attributes are copied unchanged;
the provenance names the source files (SHA-256), the recipe and the split.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from augmentor.data.provenance import make_provenance
from augmentor.data.reader import H5File
from augmentor.data.writer import H5Writer, check_output
from augmentor.errors import AugmentorError
from augmentor.progress import progress_bar
from augmentor.recipes import load_recipe
from evaluation.inputs import build_or_reuse_cohort, check_real
from evaluation.recipe import EvaluateRecipe
from evaluation.splits import validation_split

BLOCK = 256  # samples read and written at a time


def export_training_split(recipe: EvaluateRecipe | str | Path, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> tuple[Path, int, int]:
    """Write the recipe's split-train samples (its training patients less the validation patients) to ``out``.

    Args:
        recipe: a validated ``evaluate`` recipe, or a recipe file / shipped recipe name.
        out: the HDF5 file to write (atomically).
        overwrite: replace an existing file.
        progress: show progress bars (cohort build, copy).

    Returns:
        ``out``, the number of samples and the number of patients written.

    Raises:
        AugmentorError: one line, for an existing output, bad inputs, or a recipe without real train data.
    """
    resolved = recipe if isinstance(recipe, EvaluateRecipe) else load_recipe(recipe, expect="evaluate")
    out = check_output(out, overwrite)
    with tempfile.TemporaryDirectory(prefix="augmentor-export-") as scratch:
        if resolved.data.cohort:
            train_paths, test_paths, _ = build_or_reuse_cohort(resolved.data, Path(scratch), progress)
        else:
            train_paths, test_paths = [Path(p) for p in resolved.data.train], [Path(p) for p in resolved.data.test]
        real = check_real(train_paths, test_paths)
        options = resolved.data
        if out.resolve() in {Path(path).resolve() for path in [*real.train_paths, *real.test_paths]}:
            raise AugmentorError(f"{out} is one of the recipe's input files; write the export elsewhere")
        split = validation_split(real.train_labels, real.train_patients, options.validation_fraction, options.split_seed)
        if not split.train.size:
            raise AugmentorError("the split has no training samples")
        files = [H5File(path) for path in real.train_paths]
        try:
            _write(resolved, files, [f.sha256 for f in real.train], split.train, out, overwrite, progress)
        finally:
            for file in files:
                file.close()
    return out, int(split.train.size), len(split.train_patients)


def _write(recipe: EvaluateRecipe, files: list[H5File], hashes: list[str], rows: np.ndarray, out: Path, overwrite: bool, progress: bool) -> None:
    info = files[0].info
    extras = tuple(name for name in info.extras if all(name in f.info.extras for f in files))
    starts = np.cumsum([0] + [len(f) for f in files])
    options = recipe.data
    provenance = make_provenance(
        inputs={str(f.path): digest for f, digest in zip(files, hashes, strict=True)},
        details={
            "subset": "training patients of an evaluate recipe's validation split (validation patients left out)",
            "evaluate_recipe": recipe.name,
            "cohort": {"name": options.cohort, "seed": options.cohort_seed} if options.cohort else None,
            "validation_fraction": options.validation_fraction,
            "split_seed": options.split_seed,
        },
        patient_ids=info.provenance.get("patient_ids"),
    )
    with (
        H5Writer(
            out, class_names=info.class_names, image_shape=info.image_shape, source=info.source, mask_label_names=info.mask_label_names,
            pixel_spacing_mm=info.pixel_spacing_mm, hu_window=info.hu_window, provenance=provenance, modality=info.modality,
            overwrite=overwrite, extras=extras, extra_shapes={name: files[0].extra(name).shape[1:] for name in extras},
        ) as writer,
        progress_bar(f"export {out.name}", int(rows.size), enabled=progress) as advance,
    ):
        for number, file in enumerate(files):
            local = rows[(rows >= starts[number]) & (rows < starts[number + 1])] - starts[number]
            if not local.size:
                continue
            patients = file.patient_ids()
            columns = {name: file.extra(name) for name in extras}
            for begin in range(0, local.size, BLOCK):
                block = local[begin : begin + BLOCK]
                images, masks, labels = file.read(block)
                writer.append(images, masks, labels, [str(p) for p in patients[block]], extras={name: values[block] for name, values in columns.items()})
                advance(len(block))
