"""``evaluate(recipe, out_dir)``: the whole protocol, from inputs to the report.

1. Check the inputs (files, classes, shapes, patient ids, leakage, enough synthetic samples) -- before
   anything is built, generated or trained, so bad inputs fail at once with one line and write nothing.
2. Build or reuse the cohort and generate the synthetic pool when the recipe asks for them; build (or reuse)
   the phantoms and their CycleGAN translations for the phantom -> CT segmentation arms.
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
import sys
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
from evaluation.arms import (
    BASELINE,
    CLASSIC_BASELINE,
    PHANTOM_KINDS,
    SYNTHETIC_KINDS,
    Arm,
    ArmKind,
    Pool,
    StageBudget,
    StagePlan,
    expand_arms,
    pool_key,
    pretrain_counts,
)
from evaluation.inputs import (
    RealData,
    SyntheticData,
    build_or_reuse_cohort,
    build_or_reuse_oracle,
    check_real,
    check_synthetic,
    cohort_paths,
    describe_file,
    generate_pool,
    stored_recipe,
)
from evaluation.jobs import (
    IN_CACHE,
    DataPlan,
    Job,
    JobResult,
    floor_bound,
    forget_datasets,
    job_line,
    plan_line,
    run_jobs,
)
from evaluation.phantoms import (
    PhantomPools,
    TranslationModels,
    build_phantom_pools,
    check_translation_models,
    precheck_phantoms,
)
from evaluation.recipe import EvaluateRecipe, translation_label
from evaluation.splits import PatientSplit, validation_split
from evaluation.training import Task, TrainSettings

FEATURE_ARM = Arm("fidelity-features", ArmKind.CLASSIC)
NOT_MEMORISED = "no synthetic data: memorisation audit skipped"
STATISTICS_METHOD = (
    "mean over seeds on the full test set; 95 % interval = t interval over seeds (S - 1 degrees of freedom) combined with the test-patient "
    "variance the seeds share (cluster bootstrap over test patients: the covariance of different seeds' replicates), Welch-Satterthwaite "
    "degrees of freedom; paired differences per seed with the same resamples for both arms; two-sided p-value from the same t statistic"
)


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
    oracle_needed: tuple[int, ...]  # per class, oracle lesions the classic+oracle arms use
    shared_first_stage: dict[str, str]  # task/arm name whose network is another arm's after its first stage -> that arm
    phantoms_needed: int = 0  # phantom slices the classic+phantom / classic+translated arms use (the largest)


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise AugmentorError(f"{out} is a file; give a folder for the report")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")


def plan_arms(recipe: EvaluateRecipe, real: RealData) -> Plan:
    split = validation_split(real.train_labels, real.train_patients, recipe.data.validation_fraction, recipe.data.split_seed)
    num_classes = real.info.num_classes
    train_labels = real.train_labels[split.train]
    real_counts = tuple(int((train_labels == c).sum()) for c in range(num_classes))
    arms_options = recipe.arms
    classification = expand_arms(arms_options.classification, arms_options.sweep, arms_options.synthetic_only_ratio, arms_options.oracle_sweep)
    segmentation = expand_arms(
        arms_options.segmentation, arms_options.segmentation_sweep, arms_options.synthetic_only_ratio, arms_options.segmentation_sweep,
        [translation_label(model) for model in recipe.phantoms.translation_models],
    )
    if not recipe.needs_oracle:  # real data: no new patients to draw, so no oracle arms
        classification = [arm for arm in classification if arm.kind is not ArmKind.CLASSIC_ORACLE]
        segmentation = [arm for arm in segmentation if arm.kind is not ArmKind.CLASSIC_ORACLE]
    pretrain = pretrain_counts(num_classes, arms_options.pretrain_samples, real_counts, arms_options.sweep)
    stages: dict[tuple[str, str], tuple[StagePlan, ...]] = {}
    train = recipe.train
    pretrain_budget = StageBudget(train.pretrain_epochs, train.pretrain_min_steps)
    budgets = (
        (Task.CLASSIFICATION, classification, StageBudget(train.epochs, train.min_steps)),
        (Task.SEGMENTATION, segmentation, StageBudget(train.segmentation_epochs, train.segmentation_min_steps)),
    )
    shared: dict[str, str] = {}
    for task, arms, budget in budgets:
        for arm in arms:
            stages[(task.value, arm.name)] = arm.stages(real_counts, train=budget, pretrain=pretrain_budget, pretrain_per_class=pretrain)
        # synthetic-only is pretrain-finetune's first stage when they train on the same samples: one computation.
        names = {arm.kind: arm.name for arm in arms}
        if ArmKind.SYNTHETIC_ONLY in names and ArmKind.PRETRAIN_FINETUNE in names:
            only = stages[(task.value, names[ArmKind.SYNTHETIC_ONLY])]
            if only[0] == stages[(task.value, names[ArmKind.PRETRAIN_FINETUNE])][0]:
                shared[f"{task.value}/{names[ArmKind.SYNTHETIC_ONLY]}"] = names[ArmKind.PRETRAIN_FINETUNE]

    def most(pool: Pool) -> tuple[int, ...]:
        return tuple(max([0, *(plan.per_class[c] for plans in stages.values() for plan in plans if plan.pool is pool)]) for c in range(num_classes))

    needed = most(Pool.SYNTHETIC)
    wanted = needed
    if recipe.fidelity.enabled:
        # enough for the fidelity comparison, which matches the test set's size per class
        test_counts = [int((real.test_labels == c).sum()) for c in range(num_classes)]
        wanted = tuple(max(n, min(recipe.fidelity.max_samples, t)) for n, t in zip(needed, test_counts, strict=True))
    elif recipe.memorisation.enabled:
        wanted = tuple(max(n, recipe.report.images_per_class) for n in needed)
    phantoms = max(sum(most(Pool.PHANTOM)), sum(most(Pool.TRANSLATED)))
    _check_pairs(recipe.statistics.pairs, classification, segmentation)
    return Plan(split, real_counts, classification, segmentation, stages, needed, wanted, most(Pool.ORACLE), shared, phantoms)


def _check_pairs(pairs: Sequence[tuple[str, str]], classification: Sequence[Arm], segmentation: Sequence[Arm]) -> None:
    """``statistics.pairs`` name two arms of one task each; refused before anything trains."""
    tasks = [{arm.name for arm in arms} for arms in (classification, segmentation)]
    every = list(dict.fromkeys(arm.name for arm in [*classification, *segmentation]))
    for pair in pairs:
        if any(set(pair) <= names for names in tasks):
            continue
        missing = [name for name in pair if name not in every]
        if missing:
            listed = ", ".join(repr(name) for name in every)
            raise AugmentorError(f"statistics.pairs: no arm named {' or '.join(repr(name) for name in missing)}; the arms are {listed}")
        raise AugmentorError(f"statistics.pairs: {pair[0]!r} and {pair[1]!r} are arms of different tasks")


def _check_synthetic(recipe: EvaluateRecipe, real: RealData, plan: Plan) -> SyntheticData | None:
    _precheck_synthetic(recipe)
    train_patients = [str(real.train_patients[i]) for i in plan.split.train]
    synthetic = check_synthetic(recipe.synthetic, real, plan.synthetic_needed, plan.synthetic_wanted, sorted(set(train_patients)))
    if synthetic is not None:
        from evaluation.leakage import check_validation_unseen

        synthetic.validation_check = check_validation_unseen(
            synthetic.checks, plan.split.validation_patients, allow=recipe.synthetic.allow_generator_saw_validation
        )
    if synthetic is not None and any(arm.uses_synthetic for arm in plan.segmentation_arms):
        from augmentor.data.reader import read_info

        synthetic_labels = [read_info(p).mask_label_names for p in synthetic.paths] or [("background", "lesion")]
        for names in synthetic_labels:
            if tuple(names) != real.info.mask_label_names:
                raise AugmentorError(f"synthetic masks label {list(names)}, the real masks {list(real.info.mask_label_names)}: segmentation arms need the same labels")
    return synthetic


def _check_translation(recipe: EvaluateRecipe, real: RealData, plan: Plan) -> TranslationModels | None:
    """The translation models, checked like a synthetic model against the split (test and validation patients)."""
    train_patients = sorted({str(real.train_patients[i]) for i in plan.split.train})
    return check_translation_models(recipe, real, train_patients, plan.split.validation_patients)


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


def _by_class(paths: Sequence[str], num_classes: int) -> tuple[np.ndarray, ...]:
    if not paths:
        return tuple(np.zeros(0, np.int64) for _ in range(num_classes))
    labels = np.concatenate([H5File(p).labels() for p in paths])
    return tuple(np.flatnonzero(labels == c) for c in range(num_classes))


def segmented_structures(recipe: EvaluateRecipe, real: RealData) -> tuple[tuple[str, ...], np.ndarray | None]:
    """The structures the segmenter learns (mask labels 1...) and the file label -> label map that selects
    them (None: every label of the files, as they are).

    Raises:
        AugmentorError: a structure the files do not label (with the names they do).
    """
    from augmentor.errors import look_up_option

    names = real.info.mask_label_names
    if not recipe.data.structures:
        return tuple(names[1:]), None
    label_map = np.zeros(256, np.uint8)
    for label, name in enumerate(recipe.data.structures, start=1):
        label_map[names.index(look_up_option(name, list(names[1:]), "structure (data.structures)"))] = label
    return tuple(recipe.data.structures), label_map


def data_plan(
    real: RealData, plan: Plan, synthetic: SyntheticData | None, oracle: Path | None, phantoms: PhantomPools | None = None, recipe: EvaluateRecipe | None = None
) -> DataPlan:
    from evaluation.jobs import content_hash

    pool_paths = tuple(str(p) for p in synthetic.paths) if synthetic else ()
    oracle_paths = (str(oracle),) if oracle is not None else ()
    num_classes = real.info.num_classes
    pools: dict[str, tuple[tuple[str, ...], tuple[np.ndarray, ...]]] = {}
    if phantoms is not None:
        sources = {pool_key(Pool.PHANTOM): phantoms.phantom, **{pool_key(Pool.TRANSLATED, label): path for label, path in phantoms.translated.items()}}
        pools = {key: ((str(path),), _by_class([str(path)], num_classes)) for key, path in sources.items()}
    extra_paths = [path for paths, _ in pools.values() for path in paths]
    every_file = (*(str(p) for p in real.train_paths), *(str(p) for p in real.test_paths), *pool_paths, *oracle_paths, *extra_paths)
    hashes = {path: content_hash(path) for path in every_file}
    structures, label_map = segmented_structures(recipe, real) if recipe is not None else (tuple(real.info.mask_label_names[1:]), None)
    channels, height, _ = real.info.image_shape
    return DataPlan(
        train_paths=tuple(str(p) for p in real.train_paths),
        test_paths=tuple(str(p) for p in real.test_paths),
        pool_paths=pool_paths,
        oracle_paths=oracle_paths,
        window=real.info.hu_window,
        train_indices=plan.split.train,
        validation_indices=plan.split.validation,
        pool_by_class=_by_class(pool_paths, num_classes),
        oracle_by_class=_by_class(oracle_paths, num_classes),
        image_size=height,
        in_channels=channels,
        num_classes=num_classes,
        num_labels=len(structures) + 1,
        structure_names=structures,
        spacing_mm=real.info.pixel_spacing_mm,
        file_hashes=hashes,
        pools=pools,
        label_map=label_map,
    )


def train_settings(recipe: EvaluateRecipe) -> TrainSettings:
    """The loop's settings from the recipe's ``[train]`` section."""
    train = recipe.train
    return TrainSettings(
        batch_size=train.batch_size,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        eval_every=train.eval_every,
        patience=train.patience,
        lr_patience=train.lr_patience,
        lr_factor=train.lr_factor,
        smoothing=train.smoothing,
        criterion=train.criterion,
        warmup_steps=train.warmup_steps,
    )


def _jobs(recipe: EvaluateRecipe, plan: Plan, data: DataPlan, with_features: bool, network_factory: Any = None) -> list[Job]:
    train = recipe.train
    template = Job(Task.CLASSIFICATION, FEATURE_ARM, 0, (), data, recipe.classifier, recipe.segmenter, recipe.augmentation, train_settings(recipe))
    template = dataclasses.replace(template, network_factory=network_factory)
    jobs = []
    feature_seed = recipe.fidelity.seed
    classic_is_feature_network = (
        with_features and network_factory is None and recipe.classifier.network == "frid-adar-cnn" and feature_seed in train.seeds
        and any(arm.kind is ArmKind.CLASSIC for arm in plan.classification_arms)
    )
    if with_features and not classic_is_feature_network:
        # The fidelity feature network: a Frid-Adar CNN on the real training patients, classic augmentation.
        features = dataclasses.replace(recipe.classifier, network="frid-adar-cnn")
        stage = StagePlan("train", True, Pool.NONE, (0,) * data.num_classes, True, train.epochs, train.min_steps)
        jobs.append(dataclasses.replace(template, seed=feature_seed, stages=(stage,), classifier=features, network_factory=None, keep_network=True, evaluate_test=False))
    for task, arms in ((Task.CLASSIFICATION, plan.classification_arms), (Task.SEGMENTATION, plan.segmentation_arms)):
        served = {host: f"{task.value}/{name}" for name, host in ((k.split("/", 1)[1], v) for k, v in plan.shared_first_stage.items() if k.startswith(f"{task.value}/"))}
        for arm in arms:
            if f"{task.value}/{arm.name}" in plan.shared_first_stage:
                continue  # trained by the arm whose first stage it is
            for seed in train.seeds:
                keep = classic_is_feature_network and task is Task.CLASSIFICATION and arm.kind is ArmKind.CLASSIC and seed == feature_seed
                jobs.append(
                    dataclasses.replace(
                        template, task=task, arm=arm, seed=seed, stages=plan.stages[(task.value, arm.name)], keep_network=keep,
                        also_after_first_stage=served.get(arm.name, ""), network_factory=network_factory if task is Task.CLASSIFICATION else None,
                    )
                )
    return jobs


def _feature_result(results: dict[tuple[str, str, int], JobResult], seed: int) -> JobResult:
    """The job that kept the fidelity feature network (its own job, or the classic arm's)."""
    for result in results.values():
        if result.state_dict is not None and result.key[2] == seed:
            return result
    raise KeyError("no job kept the feature network")


def _expand_shared(results: dict[tuple[str, str, int], JobResult], plan: Plan) -> None:
    """Give the arms trained inside another arm's job (synthetic-only) their own results."""
    for shared, host in plan.shared_first_stage.items():
        task, name = shared.split("/", 1)
        for (result_task, arm_name, seed), result in list(results.items()):
            if result_task == task and arm_name == host:
                results[(task, name, seed)] = JobResult((task, name, seed), result.first_stage_outputs, result.logs[:1], result.seconds, cached=result.cached)


# ------------------------------------------------------------------------------------ statistics ----


def _analyse(task: Task, arms: Sequence[Arm], results: dict[tuple[str, str, int], JobResult], real: RealData, recipe: EvaluateRecipe, plan: Plan) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Estimates, paired differences, curves and logs of one task's arms; and the raw outputs to save."""
    seeds = list(recipe.train.seeds)
    stats = recipe.statistics
    boot = bootstrap.make_plan(real.test_patients, len(seeds), stats.resamples, stats.confidence, stats.seed)
    class_names = real.info.class_names
    structure_names = segmented_structures(recipe, real)[0]
    names = metrics.classification_metric_names(class_names) if task is Task.CLASSIFICATION else metrics.segmentation_metric_names(structure_names)
    points: dict[str, dict[str, np.ndarray]] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    saved: dict[str, np.ndarray] = {}
    extra: dict[str, Any] = {"roc": {}, "confusion_matrices": {}} if task is Task.CLASSIFICATION else {"missed": {}}
    for arm in arms:
        outputs = [results[(task.value, arm.name, seed)].outputs for seed in seeds]
        if task is Task.CLASSIFICATION:
            probabilities = np.stack([o["probabilities"] for o in outputs])  # (S, N, K)
            saved[f"{task.value}/{arm.name}/probabilities"] = probabilities
            points[arm.name], replicates[arm.name] = metrics.arm_statistics(
                names, boot.sample_weights, labels=real.test_labels, probabilities=probabilities, class_names=class_names
            )
            pooled_labels = np.tile(real.test_labels, len(seeds))
            pooled = probabilities.reshape(-1, probabilities.shape[-1])
            extra["roc"][arm.name] = {
                name: dict(zip(("fpr", "tpr"), metrics.roc_curve_points(pooled_labels == c, pooled[:, c]), strict=True)) for c, name in enumerate(class_names)
            }
            confusion = np.sum([metrics.confusion_matrix(real.test_labels, p, len(class_names)) for p in probabilities], axis=0)
            extra["confusion_matrices"][arm.name] = confusion.tolist()
        else:
            per_sample = {name: np.stack([o[name] for o in outputs]) for name in names}  # (S, N) each
            for name in names:
                saved[f"{task.value}/{arm.name}/{name}"] = per_sample[name]
            points[arm.name], replicates[arm.name] = metrics.arm_statistics(names, boot.sample_weights, per_sample=per_sample)
            # (sample, seed, structure) triples where a present structure got an empty prediction
            extra["missed"][arm.name] = int(sum(np.nansum(o[f"missed:{structure}"]) for o in outputs for structure in structure_names))

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
    paired_vs_classic = differences(CLASSIC_BASELINE, [arm for arm in arms if arm.kind in (*SYNTHETIC_KINDS, ArmKind.CLASSIC_ORACLE, *PHANTOM_KINDS)])
    # statistics.pairs: any arm against any other of this task, with how many seeds came out higher
    between = [
        {
            "arm": name,
            "baseline": baseline,
            "differences": {
                metric: bootstrap.paired_difference(points[name][metric], replicates[name][metric], points[baseline][metric], replicates[baseline][metric], boot).to_dict()
                | {"seeds_higher": int(np.sum(points[name][metric] > points[baseline][metric]))}
                for metric in names
            },
        }
        for name, baseline in stats.pairs
        if name in points and baseline in points
    ]
    training: dict[str, list[dict[str, Any]]] = {
        arm.name: [{"seed": seed, "seconds": round(results[(task.value, arm.name, seed)].seconds, 3), "stages": results[(task.value, arm.name, seed)].logs} for seed in seeds]
        for arm in arms
    }
    budget_bound = {
        arm.name: sorted({seed for seed in seeds if any(stage.get("budget_bound") for stage in results[(task.value, arm.name, seed)].logs)}) for arm in arms
    }
    headline = metrics.CLASSIFICATION_HEADLINE if task is Task.CLASSIFICATION else metrics.SEGMENTATION_HEADLINE
    efficiencies = _efficiencies(arms, points, replicates, [name for name in headline if name not in metrics.LOWER_IS_BETTER], stats.confidence, boot.num_patients)
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
        **({"paired_differences_between": between} if between else {}),
        "efficiency": efficiencies,
        "budget_bound": {name: bound for name, bound in budget_bound.items() if bound},
        "convergence": {name: _convergence(training[name]) for name in training},
        "training": training,
        **extra,
    }
    if task is Task.SEGMENTATION:
        section["structure_names"] = list(structure_names)
    else:
        section["class_names"] = list(class_names)
    return section, saved


def _efficiencies(
    arms: Sequence[Arm], points: dict[str, dict[str, np.ndarray]], replicates: dict[str, dict[str, np.ndarray]], names: Sequence[str], confidence: float, num_patients: int
) -> dict[str, Any]:
    """Augmentation efficiency Δ(synthetic xk) / Δ(oracle xk), both against classic, per ratio and metric."""
    from evaluation.efficiency import efficiency

    if CLASSIC_BASELINE not in points:
        return {}
    synthetic = {arm.ratio: arm.name for arm in arms if arm.kind is ArmKind.CLASSIC_SYNTHETIC}
    oracle = {arm.ratio: arm.name for arm in arms if arm.kind is ArmKind.CLASSIC_ORACLE}
    table: dict[str, Any] = {}
    for ratio in sorted(set(synthetic) & set(oracle)):
        entry: dict[str, Any] = {"synthetic_arm": synthetic[ratio], "oracle_arm": oracle[ratio]}
        for name in names:
            base_points, base_reps = points[CLASSIC_BASELINE][name], replicates[CLASSIC_BASELINE][name]
            entry[name] = efficiency(
                points[synthetic[ratio]][name] - base_points, points[oracle[ratio]][name] - base_points,
                replicates[synthetic[ratio]][name] - base_reps, replicates[oracle[ratio]][name] - base_reps, confidence, num_patients,
            ).to_dict()
        table[f"x{ratio:g}"] = entry
    return table


def _convergence(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How an arm's training ended, over seeds: steps run, best step, budget, budget-bound seeds (last stage)."""
    last = [entry["stages"][-1] for entry in entries]
    return {
        "steps_run": [stage["steps"] for stage in last],
        "best_step": [stage["best_step"] for stage in last],
        "budget_steps": [stage["budget_steps"] for stage in last],
        "budget_bound_seeds": sum(any(stage.get("budget_bound") for stage in entry["stages"]) for entry in entries),
        "stages": [stage["name"] for stage in entries[0]["stages"]] if entries else [],
    }


def _reference(real: RealData, plan: Plan, recipe: EvaluateRecipe) -> dict[str, Any]:
    """The reference row: logistic regression on lesion features, with the same metrics and intervals."""
    from evaluation.jobs import read_samples
    from evaluation.reference import FEATURE_NAMES, reference_probabilities

    window = real.info.hu_window
    train = read_samples([str(p) for p in real.train_paths], plan.split.train, window)
    test = read_samples([str(p) for p in real.test_paths], np.arange(len(real.test_labels)), window)
    class_names = real.info.class_names
    probabilities = reference_probabilities(
        train.images.numpy(), train.masks.numpy(), train.labels.numpy(), test.images.numpy(), test.masks.numpy(), real.info.pixel_spacing_mm, len(class_names)
    )
    stats = recipe.statistics
    boot = bootstrap.make_plan(real.test_patients, 1, stats.resamples, stats.confidence, stats.seed)
    point = metrics.classification_metrics(real.test_labels, probabilities, class_names)
    reps = metrics.classification_replicates(real.test_labels, probabilities, class_names, boot.sample_weights)
    names = metrics.classification_metric_names(class_names)
    return {
        "name": "logistic regression on lesion features",
        "features": list(FEATURE_NAMES),
        "note": "fitted on the training patients' lesions, with their masks; deterministic (one fit), so its interval is the test-patient bootstrap alone",
        "metrics": {name: bootstrap.estimate(np.array([point[name]]), reps[name][None, :], boot).to_dict() for name in names},
    }


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


def _phantom_figures(recipe: EvaluateRecipe, real: RealData, data: DataPlan, phantoms: PhantomPools) -> dict[str, np.ndarray]:
    """Real training slices, and the same phantom slices as they are and as each model translated them."""
    count = recipe.report.images_per_class
    first = np.arange(min(count, phantoms.record["slices"]))
    figures = {f"real/{real.info.class_names[0]}": _normalised(data.train_paths, data.train_indices[:count], data.window)}
    figures["pool/phantom"] = _normalised([str(phantoms.phantom)], first, data.window)
    for label, path in phantoms.translated.items():
        figures[f"pool/translated ({label})"] = _normalised([str(path)], first, data.window)
    return figures


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


def evaluate(
    recipe: EvaluateRecipe | str | Path,
    out_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = True,
    network_factory: Any = None,
) -> Path:
    """Run the evaluation protocol of a recipe and write its report.

    Args:
        recipe: a validated ``evaluate`` recipe, or a recipe file / shipped recipe name.
        out_dir: the report folder (gets ``report.html``, ``report.json``, ``predictions.npz`` and, when
            generated or built there, ``inputs/``).
        overrides: ``section.key=value`` overrides (when ``recipe`` is a path).
        overwrite: replace an existing report folder (only once the new report is complete).
        progress: show progress bars.
        network_factory: your own classifier, ``(in_channels, num_classes, image_size) -> torch.nn.Module``
            returning logits, in place of the recipe's ``[classifier]`` (recipes hold values, never code).
            Define it at module level so that it pickles into worker processes.

    Returns:
        The report folder.

    Raises:
        AugmentorError: one line, for bad inputs, leakage or an existing output; nothing is written then.
    """
    resolved = recipe if isinstance(recipe, EvaluateRecipe) else load_recipe(recipe, overrides, expect="evaluate")
    return _evaluate(resolved, Path(out_dir), overwrite=overwrite, progress=progress, network_factory=network_factory)


def plan_evaluation(recipe: EvaluateRecipe | str | Path, *, overrides: Sequence[str] = (), progress: bool = True, network_factory: Any = None) -> list[str]:
    """What :func:`evaluate` would train, without training: one line per job (its stages' budgets, and whether
    the cache holds it), then a total. Inputs are checked and built as for a run (a recipe's ``cohort_dir``
    and ``phantoms.dir`` keep what is built there; the rest is discarded); nothing else is written."""
    import tempfile

    resolved = recipe if isinstance(recipe, EvaluateRecipe) else load_recipe(recipe, overrides, expect="evaluate")
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="augment-plan-") as folder:
        _evaluate(resolved, Path(folder) / "plan", overwrite=False, progress=progress, network_factory=network_factory, plan_lines=lines)
    return lines


def _evaluate(
    recipe: EvaluateRecipe, out: Path, *, overwrite: bool, progress: bool, network_factory: Any = None, plan_lines: list[str] | None = None
) -> Path:
    """Run the protocol (see :func:`evaluate`); with ``plan_lines``, stop before training and fill it with the plan."""
    from evaluation.report import FORMAT, FORMAT_VERSION, load_report, write_report
    from evaluation.summary import SUMMARY_JSON, write_summary

    started = time.perf_counter()
    _check_output(out, overwrite)

    # 1. Check everything that exists already, before writing anything.
    real: RealData | None = None
    plan: Plan | None = None
    synthetic: SyntheticData | None = None
    translation: TranslationModels | None = None
    precheck_phantoms(recipe)  # a translation model that is neither shipped nor trained: refused before anything is built
    if recipe.data.cohort:
        # The cohort is built (minutes) before the real data can be checked: catch what can be caught first.
        if recipe.data.cohort_dir:
            cohort_paths(recipe.data, out)  # a mismatching cached cohort fails here
        _precheck_synthetic(recipe)
    else:
        real = check_real(recipe.data.train, recipe.data.test)
        plan = plan_arms(recipe, real)
        synthetic = _check_synthetic(recipe, real, plan)
        translation = _check_translation(recipe, real, plan)

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
            plan = plan_arms(recipe, real)
            synthetic = _check_synthetic(recipe, real, plan)
            translation = _check_translation(recipe, real, plan)
        assert real is not None and plan is not None
        if synthetic is not None and synthetic.model_path is not None:
            generate_pool(recipe.synthetic, synthetic, real.info.class_names, staging, progress)
        oracle_path, oracle_record = None, None
        if any(plan.oracle_needed):
            oracle_path, oracle_record = build_or_reuse_oracle(recipe.data, recipe.arms.oracle_seed, plan.oracle_needed, staging, progress)
        phantoms = build_phantom_pools(recipe.phantoms, translation, real.info, plan.phantoms_needed, staging, progress) if recipe.needs_phantoms else None

        # 3-4. Train every (task, arm, seed) and the feature network.
        data = data_plan(real, plan, synthetic, oracle_path, phantoms, recipe)
        with_features = synthetic is not None and (recipe.fidelity.enabled or recipe.memorisation.enabled)
        jobs = _jobs(recipe, plan, data, with_features, network_factory)
        floor_bound_stages = floor_bound(jobs)
        for line in floor_bound_stages:  # before hours of training, not after
            print(f"warning: {line}", file=sys.stderr)
        cache = Path(recipe.train.cache) if recipe.train.cache else None
        if plan_lines is not None:
            plan_lines += [plan_line(job, cache) for job in jobs]
            cached = sum(line.endswith(IN_CACHE) for line in plan_lines)
            plan_lines.append(f"{len(jobs)} jobs, {cached} of them in the cache ({cache or 'no cache'}): {len(jobs) - cached} to train")
            shutil.rmtree(staging, ignore_errors=True)
            return out
        count = iter(range(1, len(jobs) + 1))

        def finished(job: Job, result: JobResult) -> None:  # hours of training are not silent
            if progress:
                print(f"evaluate: job {next(count)} of {len(jobs)}: {job_line(job, result)}", file=sys.stderr, flush=True)

        with progress_bar("evaluate: train and test", len(jobs), enabled=progress) as advance:
            results = run_jobs(jobs, recipe.train.workers, advance, cache, finished)
        cached_jobs = sum(result.cached for result in results.values())  # before the shared arms are copied in
        _expand_shared(results, plan)

        # 5. Statistics and audits.
        report: dict[str, Any] = {"floor_bound": floor_bound_stages} if floor_bound_stages else {}
        saved: dict[str, np.ndarray] = {}
        if plan.classification_arms:
            report["classification"], arrays = _analyse(Task.CLASSIFICATION, plan.classification_arms, results, real, recipe, plan)
            saved.update(arrays)
            if recipe.arms.reference:
                report["classification"]["reference"] = _reference(real, plan, recipe)
        if plan.segmentation_arms:
            report["segmentation"], arrays = _analyse(Task.SEGMENTATION, plan.segmentation_arms, results, real, recipe, plan)
            saved.update(arrays)
        figures: dict[str, np.ndarray] = {}
        if synthetic is not None and with_features:
            feature_result = _feature_result(results, recipe.fidelity.seed)
            extractor = _feature_extractor(feature_result.state_dict or {}, recipe, data)
            report["fidelity"], report["memorisation"], figures = _audits(recipe, real, synthetic, data, extractor)
            report["fidelity"]["feature_network_training"] = feature_result.logs
        else:
            report["fidelity"] = {"skipped": "no synthetic data"}
            report["memorisation"] = {"skipped": NOT_MEMORISED}
        if phantoms is not None:
            figures.update(_phantom_figures(recipe, real, data, phantoms))

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
        if oracle_record is not None:
            oracle_record["dir"] = _final_path(oracle_record["dir"], staging, out)
        phantom_record = None
        if phantoms is not None:
            phantom_record = {**phantoms.record, "path": _final_path(phantoms.record["path"], staging, out)}
            for entry in phantom_record["translations"].values():
                entry["path"] = _final_path(entry["path"], staging, out)
            phantom_record["translation_models"] = translation.describe() if translation is not None else {}
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
                "inputs": {
                    "files": inputs, "cohort": cohort_record, "oracle": oracle_record,
                    "model": synthetic.model if synthetic else None, "synthetic_seed": recipe.synthetic.seed,
                    "phantoms": phantom_record,
                },
                "generator_saw_validation": synthetic.validation_check if synthetic else (translation.validation_check if translation else None),
                "leakage": {
                    "real_split": f"no patient in both train ({len(set(real.train_patients.tolist()))} patients) and test ({len(set(real.test_patients.tolist()))} patients)",
                    "synthetic": [check.to_dict() for check in synthetic.checks] if synthetic else [],
                    "translation": [check.to_dict() for check in translation.checks] if translation else [],
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
                    "method": STATISTICS_METHOD,
                    "conditional_on": "one training set (these training patients), one validation split, one test set and one generator (one set of "
                    "weights, one generation seed): the intervals cover the variation between training seeds and between test patients, not "
                    "between cohorts of training patients, nor between generators trained again",
                    "efficiency": "augmentation efficiency = Δ(classic+synthetic xk) / Δ(classic+oracle xk), both paired against classic; "
                    "Fieller interval from the seed and test-patient covariance; undefined when the oracle's own gain is not significant",
                    "resamples": recipe.statistics.resamples,
                    "confidence": recipe.statistics.confidence,
                    "seed": recipe.statistics.seed,
                },
                "runtime_s": round(time.perf_counter() - started, 1),
                "jobs": {"total": len(jobs), "from_cache": cached_jobs, "cache": recipe.train.cache},
            }
        )
        forget_datasets()
        report_json = write_report(staging, report, saved, figures)
        write_summary(load_report(report_json), staging / SUMMARY_JSON)
        _publish(staging, out)
    except BaseException:
        forget_datasets()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _publish(staging: Path, out: Path) -> None:
    """Move the finished report into place (replacing an old one only now)."""
    replace_directory(staging, out)
