"""``evaluate(recipe, out_dir)``: the whole protocol, from inputs to the report.

1. Check the inputs (files, classes, shapes, patient ids, leakage, enough synthetic samples) -- before
   anything is built, generated or trained, so bad inputs fail at once with one line and write nothing.
2. Build or reuse the cohort and generate the synthetic pool when the recipe asks for them.
3. Carve the patient-level validation split from the train patients; plan every arm's stages.
4. Train one network per (task, arm, seed), each tested once on the test set; and the fidelity feature CNN.
5. Statistics (hierarchical bootstrap over seeds and test patients), fidelity and memorisation audits.
6. Write ``report.html``, ``report.json`` and ``predictions.npz`` into a hidden staging folder that
   replaces ``out_dir`` only when everything succeeded.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from augmentor import __version__
from augmentor.atomic import replace_directory, temporary_path
from augmentor.data.intensity import normalise
from augmentor.data.provenance import command_line, stored_path
from augmentor.data.reader import H5File
from augmentor.errors import AugmentorError, OutputExistsError
from augmentor.progress import progress_bar
from augmentor.recipes import load_recipe, to_dict
from evaluation import bootstrap, metrics
from evaluation.arms import BASELINE, CLASSIC_BASELINE, Arm, ArmKind, StagePlan, expand_arms, pretrain_counts
from evaluation.inputs import (
    RealData,
    SyntheticData,
    build_or_reuse_cohort,
    check_real,
    check_synthetic,
    cohort_paths,
    describe_file,
    generate_pool,
    stored_recipe,
)
from evaluation.jobs import DataPlan, Job, JobResult, forget_datasets, run_jobs
from evaluation.recipe import EvaluateRecipe
from evaluation.splits import PatientSplit, validation_split
from evaluation.training import Task, TrainSettings

FEATURE_ARM = Arm("fidelity-features", ArmKind.CLASSIC)
NOT_MEMORISED = "no synthetic data: memorisation audit skipped"


@dataclasses.dataclass
class Plan:
    """What the run will train: the split, the arms and how much synthetic data they need."""

    split: PatientSplit
    real_counts: tuple[int, ...]
    classification_arms: list[Arm]
    segmentation_arms: list[Arm]
    stages: dict[tuple[str, str], tuple[StagePlan, ...]]
    synthetic_needed: tuple[int, ...]  # per class, what the arms use (given files must hold this many)
    synthetic_wanted: tuple[int, ...]  # per class, what a model generates (arms, fidelity and audit)


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise AugmentorError(f"{out} is a file; give a folder for the report")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")


def _plan(recipe: EvaluateRecipe, real: RealData) -> Plan:
    split = validation_split(real.train_labels, real.train_patients, recipe.data.validation_fraction, recipe.data.split_seed)
    num_classes = real.info.num_classes
    train_labels = real.train_labels[split.train]
    real_counts = tuple(int((train_labels == c).sum()) for c in range(num_classes))
    arms_options = recipe.arms
    classification = expand_arms(arms_options.classification, arms_options.sweep, arms_options.synthetic_only_ratio)
    segmentation = expand_arms(arms_options.segmentation, arms_options.segmentation_sweep, arms_options.synthetic_only_ratio)
    pretrain = pretrain_counts(num_classes, arms_options.pretrain_samples, real_counts, arms_options.sweep)
    stages: dict[tuple[str, str], tuple[StagePlan, ...]] = {}
    train = recipe.train
    for task, arms, steps in ((Task.CLASSIFICATION, classification, train.max_steps), (Task.SEGMENTATION, segmentation, train.segmentation_steps)):
        for arm in arms:
            stages[(task.value, arm.name)] = arm.stages(real_counts, max_steps=steps, pretrain_steps=train.pretrain_steps, pretrain_per_class=pretrain)
    needed = tuple(max([0, *(plan.synthetic_per_class[c] for plans in stages.values() for plan in plans)]) for c in range(num_classes))
    wanted = needed
    if recipe.fidelity.enabled:
        # enough for the fidelity comparison, which matches the test set's size per class
        test_counts = [int((real.test_labels == c).sum()) for c in range(num_classes)]
        wanted = tuple(max(n, min(recipe.fidelity.max_samples, t)) for n, t in zip(needed, test_counts, strict=True))
    elif recipe.memorisation.enabled:
        wanted = tuple(max(n, recipe.report.images_per_class) for n in needed)
    return Plan(split, real_counts, classification, segmentation, stages, needed, wanted)


def _check_synthetic(recipe: EvaluateRecipe, real: RealData, plan: Plan) -> SyntheticData | None:
    _precheck_synthetic(recipe)
    train_patients = [str(real.train_patients[i]) for i in plan.split.train]
    synthetic = check_synthetic(recipe.synthetic, real, plan.synthetic_needed, plan.synthetic_wanted, sorted(set(train_patients)))
    if synthetic is not None and any(arm.uses_synthetic for arm in plan.segmentation_arms):
        from augmentor.data.reader import read_info

        synthetic_labels = [read_info(p).mask_label_names for p in synthetic.paths] or [("background", "lesion")]
        for names in synthetic_labels:
            if tuple(names) != real.info.mask_label_names:
                raise AugmentorError(f"synthetic masks label {list(names)}, the real masks {list(real.info.mask_label_names)}: segmentation arms need the same labels")
    return synthetic


def _precheck_synthetic(recipe: EvaluateRecipe) -> None:
    """The synthetic inputs' own problems (missing files, unknown model, no synthetic data for arms that need it)."""
    from augmentor.data.reader import read_info
    from augmentor.zoo import resolve_model

    used_by = [name for name in recipe.arms.classification + recipe.arms.segmentation if name in ("classic+synthetic", "pretrain-finetune", "synthetic-only")]
    if used_by and not (recipe.synthetic.files or recipe.synthetic.model):
        raise AugmentorError(f"arms {', '.join(dict.fromkeys(used_by))} need synthetic data: set synthetic.files or synthetic.model")
    for path in recipe.synthetic.files:
        read_info(Path(path))
    if recipe.synthetic.model:
        resolve_model(recipe.synthetic.model)


def _data_plan(real: RealData, plan: Plan, synthetic: SyntheticData | None) -> DataPlan:
    pool_paths = tuple(str(p) for p in synthetic.paths) if synthetic else ()
    pool_by_class: tuple[np.ndarray, ...] = ()
    if pool_paths:
        labels = np.concatenate([H5File(p).labels() for p in pool_paths])
        pool_by_class = tuple(np.flatnonzero(labels == c) for c in range(real.info.num_classes))
    else:
        pool_by_class = tuple(np.zeros(0, np.int64) for _ in range(real.info.num_classes))
    channels, height, _ = real.info.image_shape
    return DataPlan(
        train_paths=tuple(str(p) for p in real.train_paths),
        test_paths=tuple(str(p) for p in real.test_paths),
        pool_paths=pool_paths,
        window=real.info.hu_window,
        train_indices=plan.split.train,
        validation_indices=plan.split.validation,
        pool_by_class=pool_by_class,
        image_size=height,
        in_channels=channels,
        num_classes=real.info.num_classes,
        num_labels=len(real.info.mask_label_names),
        structure_names=tuple(real.info.mask_label_names[1:]),
        spacing_mm=real.info.pixel_spacing_mm,
    )


def _jobs(recipe: EvaluateRecipe, plan: Plan, data: DataPlan, with_features: bool) -> list[Job]:
    train = recipe.train
    settings = TrainSettings(train.batch_size, train.learning_rate, train.weight_decay, train.eval_every, train.patience)
    template = Job(Task.CLASSIFICATION, FEATURE_ARM, 0, (), data, recipe.classifier, recipe.segmenter, recipe.augmentation, settings)
    jobs = []
    if with_features:
        # The fidelity feature network: a Frid-Adar CNN on the real training patients, classic augmentation.
        features = dataclasses.replace(recipe.classifier, network="frid-adar-cnn")
        stage = StagePlan("train", True, (0,) * data.num_classes, True, train.max_steps)
        jobs.append(dataclasses.replace(template, seed=recipe.fidelity.seed, stages=(stage,), classifier=features, keep_network=True, evaluate_test=False))
    for task, arms in ((Task.CLASSIFICATION, plan.classification_arms), (Task.SEGMENTATION, plan.segmentation_arms)):
        for arm in arms:
            for seed in train.seeds:
                jobs.append(dataclasses.replace(template, task=task, arm=arm, seed=seed, stages=plan.stages[(task.value, arm.name)]))
    return jobs


# ------------------------------------------------------------------------------------ statistics ----


def _analyse(task: Task, arms: Sequence[Arm], results: dict[tuple[str, str, int], JobResult], real: RealData, recipe: EvaluateRecipe, plan: Plan) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Estimates, paired differences, curves and logs of one task's arms; and the raw outputs to save."""
    seeds = list(recipe.train.seeds)
    stats = recipe.statistics
    boot = bootstrap.make_plan(real.test_patients, len(seeds), stats.resamples, stats.confidence, stats.seed)
    class_names = real.info.class_names
    structure_names = tuple(real.info.mask_label_names[1:])
    names = metrics.classification_metric_names(class_names) if task is Task.CLASSIFICATION else metrics.segmentation_metric_names(structure_names)
    points: dict[str, dict[str, np.ndarray]] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    saved: dict[str, np.ndarray] = {}
    extra: dict[str, Any] = {"roc": {}, "confusion_matrices": {}} if task is Task.CLASSIFICATION else {"missed": {}}
    for arm in arms:
        outputs = [results[(task.value, arm.name, seed)].outputs for seed in seeds]
        per_seed_points: list[dict[str, float]] = []
        per_seed_reps: list[dict[str, np.ndarray]] = []
        if task is Task.CLASSIFICATION:
            probabilities = np.stack([o["probabilities"] for o in outputs])  # (S, N, K)
            saved[f"{task.value}/{arm.name}/probabilities"] = probabilities
            for p in probabilities:
                per_seed_points.append(metrics.classification_metrics(real.test_labels, p, class_names))
                per_seed_reps.append(metrics.classification_replicates(real.test_labels, p, class_names, boot.sample_weights))
            pooled_labels = np.tile(real.test_labels, len(seeds))
            pooled = probabilities.reshape(-1, probabilities.shape[-1])
            extra["roc"][arm.name] = {
                name: dict(zip(("fpr", "tpr"), metrics.roc_curve_points(pooled_labels == c, pooled[:, c]), strict=True)) for c, name in enumerate(class_names)
            }
            confusion = np.sum([metrics.confusion_matrix(real.test_labels, p, len(class_names)) for p in probabilities], axis=0)
            extra["confusion_matrices"][arm.name] = confusion.tolist()
        else:
            for o in outputs:
                per_seed_points.append({name: float(np.nanmean(o[name])) if np.isfinite(o[name]).any() else float("nan") for name in names})
                per_seed_reps.append(metrics.weighted_means({name: o[name] for name in names}, boot.sample_weights))
            for name in names:
                saved[f"{task.value}/{arm.name}/{name}"] = np.stack([o[name] for o in outputs])
            # (sample, seed, structure) triples where a present structure got an empty prediction
            extra["missed"][arm.name] = int(sum(np.nansum(o[f"missed:{structure}"]) for o in outputs for structure in structure_names))
        points[arm.name] = {name: np.array([p[name] for p in per_seed_points]) for name in names}
        replicates[arm.name] = {name: np.stack([r[name] for r in per_seed_reps]) for name in names}

    estimates = {arm.name: {name: bootstrap.estimate(points[arm.name][name], replicates[arm.name][name], boot).to_dict() for name in names} for arm in arms}

    def differences(baseline: str, compared: list[Arm]) -> dict[str, Any]:
        """Each arm of ``compared`` minus ``baseline``, paired by seed and test sample."""
        if baseline not in points or not compared:
            return {}
        table: dict[str, Any] = {"baseline": baseline}
        for arm in compared:
            table[arm.name] = {
                name: bootstrap.paired_difference(points[arm.name][name], replicates[arm.name][name], points[baseline][name], replicates[baseline][name], boot).to_dict()
                for name in names
            }
        return table

    paired = differences(BASELINE, [arm for arm in arms if arm.name != BASELINE])
    synthetic_kinds = (ArmKind.CLASSIC_SYNTHETIC, ArmKind.PRETRAIN_FINETUNE, ArmKind.SYNTHETIC_ONLY)
    paired_vs_classic = differences(CLASSIC_BASELINE, [arm for arm in arms if arm.kind in synthetic_kinds])
    training = {
        arm.name: [{"seed": seed, "seconds": round(results[(task.value, arm.name, seed)].seconds, 3), "stages": results[(task.value, arm.name, seed)].logs} for seed in seeds]
        for arm in arms
    }
    section = {
        "metric_names": names,
        "headline_metrics": list(metrics.CLASSIFICATION_HEADLINE if task is Task.CLASSIFICATION else metrics.SEGMENTATION_HEADLINE),
        "lower_is_better": sorted(metrics.LOWER_IS_BETTER & set(names)),
        "arms": [
            {"name": arm.name, "kind": arm.kind.value, "ratio": arm.ratio, "stages": [dataclasses.asdict(s) for s in plan.stages[(task.value, arm.name)]]}
            for arm in arms
        ],
        "metrics": estimates,
        "paired_differences": paired,
        "paired_differences_vs_classic": paired_vs_classic,
        "training": training,
        **extra,
    }
    if task is Task.SEGMENTATION:
        section["structure_names"] = list(structure_names)
    else:
        section["class_names"] = list(class_names)
    return section, saved


# ------------------------------------------------------------------------ fidelity and memorisation ----


def _normalised(path_list: Sequence[str], indices: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Images of the concatenated files at ``indices``, normalised to [-1, 1], (n, C, H, W) float32."""
    from evaluation.jobs import open_dataset

    dataset = open_dataset(path_list, window)
    indices = np.asarray(indices, dtype=np.int64)
    images = np.zeros((indices.size, *dataset.image_shape), np.float32)
    offsets = np.cumsum([0] + [len(f) for f in dataset.files])
    for k, file in enumerate(dataset.files):
        inside = (indices >= offsets[k]) & (indices < offsets[k + 1])
        if inside.any():
            images[inside] = file.read(indices[inside] - offsets[k])[0]  # read() keeps the order given
    return np.asarray(normalise(images, window), dtype=np.float32)


def _feature_extractor(state: dict[str, Any], recipe: EvaluateRecipe, data: DataPlan) -> Any:
    from evaluation.fidelity import FeatureExtractor
    from evaluation.models import FridAdarCNN

    options = recipe.classifier
    network = FridAdarCNN(data.in_channels, data.num_classes, data.image_size, options.channels, options.kernel_size, options.dense_units, options.dropout)
    network.load_state_dict(state)
    return FeatureExtractor(network)


def _gan_training_indices(real: RealData, synthetic: SyntheticData) -> tuple[list[str], np.ndarray, str]:
    """The GAN's training samples for the memorisation audit: (files, indices, description)."""
    for check in synthetic.checks:
        if check.gan_training_file is not None and check.gan_training_file not in real.train_paths:
            file = H5File(check.gan_training_file)
            return [str(check.gan_training_file)], np.arange(len(file)), f"the GAN's training file {check.gan_training_file}"
        if check.gan_training_patients is not None:
            chosen = np.flatnonzero(np.isin(real.train_patients, sorted(check.gan_training_patients)))
            if chosen.size:
                return [str(p) for p in real.train_paths], chosen, f"the GAN's training patients ({len(check.gan_training_patients)}) in the real train files"
    return [str(p) for p in real.train_paths], np.arange(len(real.train_labels)), "the real train files (the GAN's own training set is unknown: its provenance is unverified)"


def _audits(recipe: EvaluateRecipe, real: RealData, synthetic: SyntheticData, data: DataPlan, extractor: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """Fidelity table, memorisation audit, and the images the report shows."""
    from evaluation.fidelity import FEATURE_EXTRACTOR_NOTE, FIDELITY_NOTE, embed, fidelity_table
    from evaluation.memorisation import audit

    window = data.window
    class_names = real.info.class_names
    train_all = np.arange(len(real.train_labels))
    figures: dict[str, np.ndarray] = {}
    fidelity: dict[str, Any] = {"skipped": "fidelity.enabled = false"}
    if recipe.fidelity.enabled:
        options = recipe.fidelity
        real_train = {name: _normalised(data.train_paths, train_all[real.train_labels == c], window) for c, name in enumerate(class_names)}
        test_all = np.arange(len(real.test_labels))
        real_test = {name: _normalised(data.test_paths, test_all[real.test_labels == c], window) for c, name in enumerate(class_names)}
        synthetic_images = {name: _normalised(data.pool_paths, data.pool_by_class[c][: options.max_samples], window) for c, name in enumerate(class_names)}
        table = fidelity_table(
            extractor, real_train, real_test, synthetic_images, max_samples=options.max_samples,
            subsets=options.kid_subsets, subset_size=options.kid_subset_size, k=options.nearest_k, seed=options.seed,
        )
        fidelity = {"method": FIDELITY_NOTE, "feature_extractor": FEATURE_EXTRACTOR_NOTE, "reference": "every sample of the real train files", "classes": table}
    count = recipe.report.images_per_class
    for c, name in enumerate(class_names):
        figures[f"real/{name}"] = _normalised(data.train_paths, train_all[real.train_labels == c][:count], window)
        figures[f"synthetic/{name}"] = _normalised(data.pool_paths, data.pool_by_class[c][:count], window)

    memorisation: dict[str, Any] = {"skipped": "memorisation.enabled = false"}
    if recipe.memorisation.enabled:
        options_m = recipe.memorisation
        files, indices, description = _gan_training_indices(real, synthetic)
        training_images = _normalised(files, indices, window)
        test_images = _normalised(data.test_paths, np.arange(len(real.test_labels)), window)
        pool_size = sum(len(positions) for positions in data.pool_by_class)
        audited = np.arange(pool_size)
        if options_m.max_synthetic and pool_size > options_m.max_synthetic:
            audited = np.sort(np.random.default_rng(recipe.fidelity.seed).choice(pool_size, options_m.max_synthetic, replace=False))
        blocks = (_normalised(data.pool_paths, audited[start : start + 4096], window) for start in range(0, audited.size, 4096))
        result = audit(training_images, test_images, blocks, lambda images: embed(extractor, images), options_m.percentile)
        summary = result.summary(options_m.closest_pairs)
        for pair in summary["closest_pairs"]:
            pair["synthetic_index"] = int(audited[pair["synthetic_index"]])
            pair["training_index"] = int(indices[pair["training_index"]])
        summary["flagged_synthetic_indices"] = [int(audited[i]) for i in np.flatnonzero(result.flagged)]
        memorisation = {"reference": description, "reference_samples": int(indices.size), **summary}
        pairs = summary["closest_pairs"]
        if pairs:
            figures["pairs/synthetic"] = _normalised(data.pool_paths, np.array([p["synthetic_index"] for p in pairs]), window)
            figures["pairs/training"] = np.stack([_normalised(files, np.array([p["training_index"]]), window)[0] for p in pairs])
        figures["histogram/synthetic_pixel"] = result.synthetic_pixel
        figures["histogram/test_pixel"] = result.test_pixel
        figures["histogram/synthetic_feature"] = result.synthetic_feature
        figures["histogram/test_feature"] = result.test_feature
    return fidelity, memorisation, figures


# -------------------------------------------------------------------------------------- provenance ----


def _versions() -> dict[str, str]:
    import importlib.metadata

    versions = {"augmentor": __version__, "python": platform.python_version()}
    for package in ("torch", "monai", "scikit-learn", "torchmetrics", "numpy", "h5py", "matplotlib"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _final_path(path: str | Path, staging: Path, out: Path) -> str:
    """A path as the report records it: relative to the report folder (``staging``, renamed to ``out``)
    when inside it, else its file name (folders may name a patient; see :func:`stored_path`)."""
    return stored_path(path, relative_to=staging)


# --------------------------------------------------------------------------------------------- run ----


def evaluate(recipe: EvaluateRecipe | str | Path, out_dir: str | Path, *, overrides: Sequence[str] = (), overwrite: bool = False, progress: bool = True) -> Path:
    """Run the evaluation protocol of a recipe and write its report.

    Args:
        recipe: a validated ``evaluate`` recipe, or a recipe file / shipped recipe name.
        out_dir: the report folder (gets ``report.html``, ``report.json``, ``predictions.npz`` and, when
            generated or built there, ``inputs/``).
        overrides: ``section.key=value`` overrides (when ``recipe`` is a path).
        overwrite: replace an existing report folder (only once the new report is complete).
        progress: show progress bars.

    Returns:
        The report folder.

    Raises:
        AugmentorError: one line, for bad inputs, leakage or an existing output; nothing is written then.
    """
    resolved = recipe if isinstance(recipe, EvaluateRecipe) else load_recipe(recipe, overrides, expect="evaluate")
    return _evaluate(resolved, Path(out_dir), overwrite=overwrite, progress=progress)


def _evaluate(recipe: EvaluateRecipe, out: Path, *, overwrite: bool, progress: bool) -> Path:
    from evaluation.report import FORMAT, FORMAT_VERSION, write_report

    started = time.perf_counter()
    _check_output(out, overwrite)

    # 1. Check everything that exists already, before writing anything.
    real: RealData | None = None
    plan: Plan | None = None
    synthetic: SyntheticData | None = None
    if recipe.data.cohort:
        # The cohort is built (minutes) before the real data can be checked: catch what can be caught first.
        if recipe.data.cohort_dir:
            cohort_paths(recipe.data, out)  # a mismatching cached cohort fails here
        _precheck_synthetic(recipe)
    else:
        real = check_real(recipe.data.train, recipe.data.test)
        plan = _plan(recipe, real)
        synthetic = _check_synthetic(recipe, real, plan)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_path(out)
    staging.mkdir()
    try:
        # 2. Inputs that are built or generated.
        cohort_record = None
        if recipe.data.cohort:
            train_paths, test_paths, cohort_record = build_or_reuse_cohort(recipe.data, staging, progress)
            real = check_real(train_paths, test_paths)
            real.cohort = cohort_record
            plan = _plan(recipe, real)
            synthetic = _check_synthetic(recipe, real, plan)
        assert real is not None and plan is not None
        if synthetic is not None and synthetic.model_path is not None:
            generate_pool(recipe.synthetic, synthetic, real.info.class_names, staging, progress)

        # 3-4. Train every (task, arm, seed) and the feature network.
        data = _data_plan(real, plan, synthetic)
        with_features = synthetic is not None and (recipe.fidelity.enabled or recipe.memorisation.enabled)
        jobs = _jobs(recipe, plan, data, with_features)
        with progress_bar("evaluate: train and test", len(jobs), enabled=progress) as advance:
            results = run_jobs(jobs, recipe.train.workers, advance)

        # 5. Statistics and audits.
        report: dict[str, Any] = {}
        saved: dict[str, np.ndarray] = {}
        if plan.classification_arms:
            report["classification"], arrays = _analyse(Task.CLASSIFICATION, plan.classification_arms, results, real, recipe, plan)
            saved.update(arrays)
        if plan.segmentation_arms:
            report["segmentation"], arrays = _analyse(Task.SEGMENTATION, plan.segmentation_arms, results, real, recipe, plan)
            saved.update(arrays)
        figures: dict[str, np.ndarray] = {}
        if synthetic is not None and with_features:
            state = results[(Task.CLASSIFICATION.value, FEATURE_ARM.name, recipe.fidelity.seed)].state_dict
            extractor = _feature_extractor(state or {}, recipe, data)
            report["fidelity"], report["memorisation"], figures = _audits(recipe, real, synthetic, data, extractor)
            feature_log = results[(Task.CLASSIFICATION.value, FEATURE_ARM.name, recipe.fidelity.seed)].logs
            report["fidelity"]["feature_network_training"] = feature_log
        else:
            report["fidelity"] = {"skipped": "no synthetic data"}
            report["memorisation"] = {"skipped": NOT_MEMORISED}

        # 6. Provenance and the report.
        train_sha = {f.path: f.sha256 for f in real.train}
        test_sha = {f.path: f.sha256 for f in real.test}
        inputs = [describe_file(p, "real train", train_sha[p]) for p in real.train_paths]
        inputs += [describe_file(p, "real test", test_sha[p]) for p in real.test_paths]
        if synthetic is not None:
            inputs += [describe_file(p, "synthetic (generated in this run)" if synthetic.generated else "synthetic") for p in synthetic.paths]
        for entry in inputs:
            entry["path"] = _final_path(entry["path"], staging, out)
        if cohort_record is not None:
            cohort_record["dir"] = _final_path(cohort_record["dir"], staging, out)
        split = plan.split
        class_names = real.info.class_names
        report.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "name": recipe.name or out.name,
                "description": recipe.description,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": command_line(),
                "recipe": stored_recipe(to_dict(recipe)),
                "versions": _versions(),
                "inputs": {"files": inputs, "cohort": cohort_record, "model": synthetic.model if synthetic else None, "synthetic_seed": recipe.synthetic.seed},
                "leakage": {
                    "real_split": f"no patient in both train ({len(set(real.train_patients.tolist()))} patients) and test ({len(set(real.test_patients.tolist()))} patients)",
                    "synthetic": [check.to_dict() for check in synthetic.checks] if synthetic else [],
                },
                "split": {
                    "validation_fraction": recipe.data.validation_fraction,
                    "seed": recipe.data.split_seed,
                    "train_patients": len(split.train_patients),
                    "validation_patients": len(split.validation_patients),
                    "test_patients": len(set(real.test_patients.tolist())),
                    "train_samples": dict(zip(class_names, plan.real_counts, strict=True)),
                    "validation_samples": {name: int((real.train_labels[split.validation] == c).sum()) for c, name in enumerate(class_names)},
                    "test_samples": {name: int((real.test_labels == c).sum()) for c, name in enumerate(class_names)},
                    "validation_patient_ids": list(split.validation_patients),
                },
                "seeds": list(recipe.train.seeds),
                "statistics": {
                    "method": "hierarchical bootstrap: test patients (cluster bootstrap) and seeds resampled with replacement; percentile intervals; "
                    "paired differences use the same resamples for both arms; two-sided p-value by inverting the percentile interval",
                    "resamples": recipe.statistics.resamples,
                    "confidence": recipe.statistics.confidence,
                    "seed": recipe.statistics.seed,
                },
                "runtime_s": round(time.perf_counter() - started, 1),
            }
        )
        forget_datasets()
        write_report(staging, report, saved, figures)
        _publish(staging, out)
    except BaseException:
        forget_datasets()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _publish(staging: Path, out: Path) -> None:
    """Move the finished report into place (replacing an old one only now)."""
    replace_directory(staging, out)
