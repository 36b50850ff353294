"""The phantom pools of the segmentation arms: phantom slices (domain A) as they are, and translated into the
CT domain by each CycleGAN the recipe names (Russ et al. 2019: vessel segmentation with translated phantoms).

- The phantoms are a given file (``phantoms.file``: ``augment phantom``'s or a user's XCAT slices) or built
  with ``augment phantom``'s simulator at the real slices' size, once, in ``phantoms.dir``.
- Each translation is :func:`augmentor.translation.translate.translate` of that file with one model (the
  masks are the phantom's, byte for byte, and the safety scores travel in the file), written once per
  (model weights, phantom file, probe seed) and reused like the synthetic pool.
- A translation model is a generator like any other: the harness refuses one that saw test patients
  (its card's domain B) and one that saw validation patients unless the recipe allows it, with the same
  checks as a synthetic model (:mod:`evaluation.leakage`).

Everything that can be checked before building is checked by :func:`resolve_translation_models` and
:func:`check_translation_models`: a model that is neither shipped nor trained is refused in one line that
says how to train it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augmentor.data.provenance import sha256_file, stored_path
from augmentor.data.reader import read_info
from augmentor.data.schema import DatasetInfo
from augmentor.errors import AugmentorError
from augmentor.zoo import ModelEntry
from evaluation.inputs import RealData
from evaluation.leakage import SyntheticCheck, check_validation_unseen
from evaluation.leakage import check_synthetic as check_synthetic_provenance
from evaluation.recipe import EvaluateRecipe, PhantomSection, translation_label

TRAIN_HINT = (
    "augment phantom --n-patients 40 --out phantoms.h5; augment train cyclegan-phantom-ct --data-a phantoms.h5 --data-b CT_TRAIN.h5 --out {name} "
    "(recipe cyclegan-phantom-ct-structure for the structure-consistent model)"
)


@dataclass
class TranslationModels:
    """The recipe's translation models, resolved and leakage-checked.

    Attributes:
        entries: by arm label (:func:`~evaluation.recipe.translation_label`), the zoo entries.
        checks: one leakage check per model.
        validation_check: whether a model saw the validation patients (for the report).
    """

    entries: dict[str, ModelEntry]
    checks: list[SyntheticCheck] = field(default_factory=list)
    validation_check: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The models as the report records them."""
        return {
            label: {
                "name": entry.name, "origin": entry.origin, "path": stored_path(entry.path), "weights_sha256": entry.weights_sha256,
                "structure_consistency": bool((entry.card.get("translation") or {}).get("structure_consistency")),
                "steps": entry.card.get("steps"),
            }
            for label, entry in self.entries.items()
        }


@dataclass
class PhantomPools:
    """The phantom file and its translations, by arm label; and a record for the report."""

    phantom: Path
    translated: dict[str, Path]
    record: dict[str, Any]


def resolve_translation_models(options: PhantomSection) -> dict[str, ModelEntry]:
    """The translation models by arm label.

    Raises:
        AugmentorError: a model that is neither shipped nor trained (saying how to train it), or a model
            that is not a complete CycleGAN translation model.
    """
    from augmentor.translation.translate import check_translation_model
    from augmentor.zoo import resolve_model

    entries = {}
    for model in options.translation_models:
        try:
            entry = resolve_model(model)
        except AugmentorError:
            raise AugmentorError(
                f"translation model {model!r} is neither shipped nor trained (phantoms.translation_models); train it: "
                + TRAIN_HINT.format(name=model)
            ) from None
        entries[translation_label(model)] = check_translation_model(entry)
    return entries


def precheck_phantoms(recipe: EvaluateRecipe) -> None:
    """The phantom inputs' own problems, before anything is built: an unreadable phantom file, a missing model."""
    if not recipe.needs_phantoms:
        return
    if recipe.phantoms.file:
        read_info(Path(recipe.phantoms.file))
    if "classic+translated" in recipe.arms.segmentation:
        resolve_translation_models(recipe.phantoms)


def check_translation_models(recipe: EvaluateRecipe, real: RealData, train_patients: Sequence[str], validation_patients: Sequence[str]) -> TranslationModels | None:
    """Resolve the translation models and check what they were trained on against the real split.

    Args:
        recipe: the evaluate recipe (its ``[phantoms]`` models; ``synthetic.allow_unverified`` and
            ``synthetic.allow_generator_saw_validation`` apply to them as to a synthetic model).
        real: the validated real data.
        train_patients: the downstream training patients.
        validation_patients: the patients that early-stop the arms.

    Returns:
        The checked models, or None when no arm translates phantoms.

    Raises:
        AugmentorError: a missing or wrong model, leakage of test patients, or validation patients seen.
    """
    if "classic+translated" not in recipe.arms.segmentation:
        return None
    entries = resolve_translation_models(recipe.phantoms)
    checks = []
    for entry in entries.values():
        if tuple(entry.card.get("mask_label_names") or ()) not in ((), tuple(real.info.mask_label_names)):
            raise AugmentorError(f"translation model {entry.name} knows labels {entry.card.get('mask_label_names')}, the real masks {list(real.info.mask_label_names)}")
        training = entry.card.get("training_data", {}) or {}
        record = {
            "name": entry.name, "trained_on_sha256": training.get("sha256"), "trained_on_patients_sha256": training.get("patients_sha256"),
            "trained_on_path": training.get("path"),
        }
        checks.append(
            check_synthetic_provenance(
                f"model {entry.name}", record, real.train, real.test, train_patients_used=train_patients, allow_unverified=recipe.synthetic.allow_unverified
            )
        )
    validation = check_validation_unseen(checks, validation_patients, allow=recipe.synthetic.allow_generator_saw_validation)
    return TranslationModels(entries, checks, validation)


def _check_phantom_file(info: DatasetInfo, real: DatasetInfo, needed: int) -> None:
    if info.image_shape != real.image_shape:
        raise AugmentorError(f"{stored_path(info.path)}: phantom slices are {info.image_shape}, the real slices {real.image_shape}; build phantoms of the same size")
    if info.class_names != real.class_names:
        raise AugmentorError(f"{stored_path(info.path)}: phantom classes {list(info.class_names)} differ from the real slices' {list(real.class_names)}")
    if info.mask_label_names != real.mask_label_names:
        raise AugmentorError(f"{stored_path(info.path)}: phantom labels {list(info.mask_label_names)} differ from the real masks' {list(real.mask_label_names)}")
    spacing, real_spacing = info.pixel_spacing_mm[0], real.pixel_spacing_mm[0]
    if abs(spacing - real_spacing) > 0.05 * real_spacing:
        raise AugmentorError(f"{stored_path(info.path)}: phantom pixels are {spacing:.3g} mm, the real slices' {real_spacing:.3g} mm; anatomy would differ in scale")
    if info.num_samples < needed:
        raise AugmentorError(f"{stored_path(info.path)}: holds {info.num_samples} phantom slices, the arms need {needed}; raise phantoms.n_patients or lower arms.segmentation_sweep")


def _built_phantoms(options: PhantomSection, size: int, directory: Path, progress: bool) -> tuple[Path, bool]:
    """The simulator's phantoms at ``size`` pixels, built once (the parameters are in the name, so other
    recipes' phantoms live beside them instead of replacing them)."""
    from augmentor.simulate.phantom import PHANTOM_VERSION, write_phantoms

    path = directory / f"phantoms-seed{options.seed}-n{options.n_patients}x{options.slices_per_patient}-{size}px.h5"
    if path.exists():
        provenance = read_info(path).provenance
        wanted = {"n_patients": options.n_patients, "slices_per_patient": options.slices_per_patient, "size": size}
        if (
            (provenance.get("recipe") or {}).get("phantom") == wanted
            and provenance.get("seed") == options.seed
            and (provenance.get("details") or {}).get("simulator") == PHANTOM_VERSION
        ):
            return path, False
    directory.mkdir(parents=True, exist_ok=True)
    write_phantoms(path, options.n_patients, seed=options.seed, slices_per_patient=options.slices_per_patient, size=size, overwrite=path.exists(), progress=progress)
    return path, True


def _translated(entry: ModelEntry, label: str, phantom: Path, options: PhantomSection, directory: Path, progress: bool) -> tuple[Path, bool]:
    """The phantom file translated by one model, written once per (weights, phantom file, probe seed)."""
    from augmentor.translation.translate import translate

    path = directory / f"translated-{label}-{phantom.stem}.h5"
    phantom_sha = sha256_file(phantom)
    if path.exists():
        provenance = read_info(path).provenance
        if (
            (provenance.get("model") or {}).get("weights_sha256") == entry.weights_sha256
            and phantom_sha in (provenance.get("inputs") or {}).values()
            and provenance.get("seed") == options.translation_seed
        ):
            return path, False
    directory.mkdir(parents=True, exist_ok=True)
    translate(
        entry.path, phantom, path, seed=options.translation_seed, batch_size=options.batch_size, device=options.device,
        overwrite=path.exists(), progress=progress,
    )
    return path, True


def build_phantom_pools(
    options: PhantomSection, models: TranslationModels | None, real: DatasetInfo, needed: int, staging: Path, progress: bool
) -> PhantomPools:
    """Build (or reuse) the phantom file and its translations.

    Args:
        options: the recipe's ``[phantoms]`` section.
        models: the checked translation models (None: no translated arm).
        real: the real train file's description (size, spacing and labels the phantoms must match).
        needed: phantom slices the largest arm uses.
        staging: the report's staging folder (the default home of phantoms and translations).
        progress: show progress bars.

    Returns:
        The phantom file, its translations by arm label, and a record for the report.
    """
    directory = Path(options.dir) if options.dir else staging / "inputs" / "phantoms"
    if options.file:
        phantom, built = Path(options.file), False
    else:
        phantom, built = _built_phantoms(options, real.image_shape[-1], directory, progress)
    info = read_info(phantom)
    _check_phantom_file(info, real, needed)
    translated: dict[str, Path] = {}
    records: dict[str, Any] = {}
    for label, entry in (models.entries if models else {}).items():
        translated[label], written = _translated(entry, label, phantom, options, directory, progress)
        details = read_info(translated[label]).provenance.get("details") or {}
        records[label] = {"path": str(translated[label]), "translated": written, "safety": details.get("safety")}
    record = {"path": str(phantom), "built": built, "slices": info.num_samples, "source": info.source.value, "translations": records}
    return PhantomPools(phantom, translated, record)
