"""(arm, seed) jobs: gather the arm's samples, train, predict on the test set once; cached by content.

A job is a picklable description (file paths and hashes, indices, settings), so jobs run in this process
or in a pool of worker processes alike, with the same result: everything random in a job derives from its
seed (the network's initialisation, dropout, batch order and augmentation), never from which process runs
it or what ran there before.

Each finished job is stored in the cache folder under a hash of everything that determines it (the
evaluation code's version, the data files' hashes and the indices used, the stages, networks, settings and
seed). A killed run, or one extended with more seeds or ratios, recomputes only what is new. Results are
stored as JSON (logs) and ``.npz`` without pickles (outputs, and the weights of a kept network).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augmentor.data.dataset import H5Dataset
from augmentor.data.reader import H5File
from evaluation.arms import Arm, Pool, StagePlan, pool_key
from evaluation.metrics import segmentation_per_sample
from evaluation.models import build_classifier, build_segmenter
from evaluation.recipe import AugmentationSection, ClassifierSection, SegmenterSection
from evaluation.training import (
    Samples,
    Task,
    TrainingStage,
    TrainSettings,
    budget_steps,
    predict,
    train_network,
)

# Bump when a change to the training, data or metric code changes what a job computes: cached results
# of older versions are then ignored.
JOB_VERSION = "jobs-4"

# Files that decode to more than this are read from disk for the indices a job needs rather than held in
# memory whole (60 000 64x64 lesions with masks decode to ~740 MB; one copy per worker process adds up).
IN_MEMORY_LIMIT_BYTES = 512 << 20

NetworkFactory = Callable[[int, int, int], torch.nn.Module]  # (in_channels, num_classes, image_size) -> network


@dataclass(frozen=True)
class DataPlan:
    """Where a job's samples come from (shared by every job of a run).

    Attributes:
        train_paths: the real train files (one dataset, in order).
        test_paths: the real test files.
        pool_paths: the synthetic files (one pool, in order); empty when there is none.
        oracle_paths: real lesions of new virtual patients (simulated cohorts); empty when there is none.
        window: (low, high) HU window that maps every file to [-1, 1] (the real train file's).
        train_indices: the real samples the networks train on (training patients).
        validation_indices: the real samples of the validation patients.
        pool_by_class: for class c, the synthetic pool positions of its samples in order.
        oracle_by_class: for class c, the oracle pool positions of its samples in order.
        image_size: height = width.
        in_channels: image channels.
        num_classes: classes.
        num_labels: mask labels including background.
        structure_names: names of mask labels 1...
        spacing_mm: pixel spacing of the test data.
        file_hashes: :func:`content_hash` of every file above, by path (the cache key's data part).
        pools: the phantom and translated pools, by :func:`~evaluation.arms.pool_key` -> (paths, positions by class).
        label_map: file label -> the label the segmenter learns (the recipe's ``data.structures``; others
            background), or None: the files' labels as they are.
    """

    train_paths: tuple[str, ...]
    test_paths: tuple[str, ...]
    pool_paths: tuple[str, ...]
    oracle_paths: tuple[str, ...]
    window: tuple[float, float]
    train_indices: np.ndarray
    validation_indices: np.ndarray
    pool_by_class: tuple[np.ndarray, ...]
    oracle_by_class: tuple[np.ndarray, ...]
    image_size: int
    in_channels: int
    num_classes: int
    num_labels: int
    structure_names: tuple[str, ...]
    spacing_mm: tuple[float, float]
    file_hashes: dict[str, str] = field(default_factory=dict)
    pools: dict[str, tuple[tuple[str, ...], tuple[np.ndarray, ...]]] = field(default_factory=dict)
    label_map: np.ndarray | None = None

    def pool(self, which: Pool, source: str = "") -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
        if which is Pool.ORACLE:
            return self.oracle_paths, self.oracle_by_class
        if which is Pool.SYNTHETIC:
            return self.pool_paths, self.pool_by_class
        return self.pools[pool_key(which, source)]


@dataclass(frozen=True)
class Job:
    """Train one network for one (task, arm, seed) and evaluate it on the test set.

    Attributes:
        also_after_first_stage: an arm whose network *is* this job's network after its first stage (the
            synthetic-only arm and the pretraining of pretrain-finetune); its test outputs are returned too.
        network_factory: a user's network, ``(in_channels, num_classes, image_size) -> nn.Module``
            (classification only; a module-level function, so that it pickles into worker processes).
    """

    task: Task
    arm: Arm
    seed: int
    stages: tuple[StagePlan, ...]
    data: DataPlan
    classifier: ClassifierSection
    segmenter: SegmenterSection
    augmentation: AugmentationSection
    settings: TrainSettings
    keep_network: bool = False  # return the trained weights (the fidelity feature network)
    evaluate_test: bool = True
    also_after_first_stage: str = ""
    network_factory: NetworkFactory | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.task.value, self.arm.name, self.seed)

    def content_hash(self) -> str:
        """A hash of everything that determines the job's result, except the stages' budgets (``epochs``).

        A stage that early stopping ended before its budget trains the same steps under any budget it fits
        in, so a result is keyed without the budget and :func:`load_cached` checks, from the stored logs,
        that it holds for this job's budgets: raising a recipe's ``epochs`` recomputes only the jobs that
        ran into the old budget."""
        data = self.data
        used: dict[str, Any] = {
            "train": [data.file_hashes.get(p, p) for p in data.train_paths],
            "train_indices": _array_hash(data.train_indices),
            "validation_indices": _array_hash(data.validation_indices),
            "test": [data.file_hashes.get(p, p) for p in data.test_paths] if self.evaluate_test else [],
            "window": list(data.window),
        }
        for plan in self.stages:
            if plan.pool is not Pool.NONE:
                paths, by_class = data.pool(plan.pool, plan.source)
                key = pool_key(plan.pool, plan.source)
                used[f"pool:{key}"] = [data.file_hashes.get(p, p) for p in paths]
                used[f"pool_indices:{key}"] = _array_hash(_chosen(by_class, plan.per_class))
        if data.label_map is not None:  # only where the recipe selects structures: other jobs keep their keys
            used["label_map"] = data.label_map.tolist()
        factory = self.network_factory
        description = {
            "version": JOB_VERSION,
            "task": self.task.value,
            "seed": self.seed,
            "stages": [_stage_description(plan) for plan in self.stages],
            "data": used,
            "classifier": asdict(self.classifier) if factory is None else f"{factory.__module__}.{factory.__qualname__}",
            "segmenter": asdict(self.segmenter),
            "augmentation": asdict(self.augmentation),
            "settings": _settings_description(self.settings),
            "keep_network": self.keep_network,
            "evaluate_test": self.evaluate_test,
            "also_after_first_stage": bool(self.also_after_first_stage),
        }
        return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


def _settings_description(settings: TrainSettings) -> dict[str, Any]:
    """The settings in a cache key; a setting added later is left out at its neutral value, so jobs keep their keys."""
    described = asdict(settings)
    if described["warmup_steps"] == 0:
        del described["warmup_steps"]
    return described


@dataclass
class JobResult:
    """What a job returns: test outputs, training logs and (when asked) the weights.

    ``first_stage_outputs`` holds the test outputs after the first stage (for ``also_after_first_stage``).
    """

    key: tuple[str, str, int]
    outputs: dict[str, np.ndarray]  # "probabilities" (N, K) or per-sample segmentation metrics
    logs: list[dict[str, Any]]
    seconds: float
    state_dict: dict[str, torch.Tensor] | None = None
    first_stage_outputs: dict[str, np.ndarray] = field(default_factory=dict)
    cached: bool = False


def content_hash(path: str | Path, block: int = 4096) -> str:
    """SHA-256 of a file's samples (images, masks, labels), not of its bytes: a file written again with the
    same samples (a regenerated pool, a rebuilt cohort, whose provenance records a new time) hashes the same,
    so its cached jobs stay valid."""
    file = H5File(path)
    digest = hashlib.sha256()
    try:
        for start in range(0, len(file), block):
            images, masks, labels = file.read(np.arange(start, min(start + block, len(file))))
            for array in (images, masks, labels):
                digest.update(np.ascontiguousarray(array).tobytes())
    finally:
        file.close()
    return digest.hexdigest()


def _stage_description(plan: StagePlan) -> dict[str, Any]:
    """A stage as its job's hash sees it: without its budget, and without an empty ``source`` (the stages of
    the pools that have one source hash as they did before pools could have several)."""
    description = {**asdict(plan), "pool": plan.pool.value, "epochs": None}
    if not plan.source:
        del description["source"]
    return description


def _array_hash(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.int64).tobytes()).hexdigest()[:16]


def stage_size(plan: StagePlan, data: DataPlan) -> int:
    """How many samples :func:`stage_samples` gives ``plan``, without reading them."""
    size = len(data.train_indices) if plan.real else 0
    if plan.pool is not Pool.NONE and any(plan.per_class):
        size += len(_chosen(data.pool(plan.pool, plan.source)[1], plan.per_class))
    return size


def floor_bound(jobs: Sequence[Job]) -> list[str]:
    """One line per (arm, stage) whose floor ``min_steps`` raised its budget above its epochs: early stopping
    never ends a stage before its floor, so such a stage runs its whole budget, converged or not (raise
    ``epochs`` instead)."""
    lines: dict[tuple[str, str, str], str] = {}
    for job in jobs:
        for plan in job.stages:
            size = stage_size(plan, job.data)
            if not size:
                continue
            by_epochs = budget_steps(size, job.settings.batch_size, plan.epochs, 0)
            if plan.min_steps > by_epochs:
                lines[(job.task.value, job.arm.name, plan.name)] = (
                    f"{job.task.value}: arm '{job.arm.name}', stage {plan.name}: its floor of {plan.min_steps} steps is its budget "
                    f"({plan.epochs:g} epochs of {size} samples are {by_epochs} steps), "
                    f"and early stopping never ends a stage before its floor, so it runs all {plan.min_steps} steps whatever its validation "
                    "loss does: raise the epochs, not the floor"
                )
    return list(lines.values())


def _chosen(by_class: Sequence[np.ndarray], per_class: Sequence[int]) -> np.ndarray:
    """The first n pool positions of each class, in pool order."""
    parts = [positions[:count] for positions, count in zip(by_class, per_class, strict=True) if count]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


# ----------------------------------------------------------------------------------------- data ----

_FILES: dict[str, H5File] = {}
_DATASETS: dict[tuple[tuple[str, ...], tuple[float, float]], H5Dataset] = {}


def _file(path: str) -> H5File:
    """A file opened once per process (and held in memory when it is small)."""
    if path not in _FILES:
        file = H5File(path)
        if file.decoded_bytes <= IN_MEMORY_LIMIT_BYTES:
            file.load()
        _FILES[path] = file
    return _FILES[path]


def read_samples(paths: Sequence[str], indices: np.ndarray, window: tuple[float, float], label_map: np.ndarray | None = None) -> Samples:
    """Samples at ``indices`` of the concatenated files, in that order, as tensors (masks relabelled by
    ``label_map``, file label -> label, when given)."""
    files = [_file(p) for p in paths]
    offsets = np.cumsum([0] + [len(f) for f in files])
    indices = np.asarray(indices, dtype=np.int64)
    channels, height, width = files[0].info.image_shape
    images = np.zeros((indices.size, channels, height, width), np.int16)
    masks = np.zeros((indices.size, height, width), np.uint8)
    labels = np.zeros(indices.size, np.int64)
    for k, file in enumerate(files):
        inside = (indices >= offsets[k]) & (indices < offsets[k + 1])
        if inside.any():
            images[inside], masks[inside], labels[inside] = file.read(indices[inside] - offsets[k])
    if label_map is not None:
        masks = label_map[masks]
    return Samples(torch.from_numpy(images), torch.from_numpy(masks), torch.from_numpy(labels), (float(window[0]), float(window[1])))


def open_dataset(paths: Sequence[str], window: tuple[float, float]) -> H5Dataset:
    """The files as one dataset, opened once per process (for the audits, which read images by index)."""
    key = (tuple(paths), (float(window[0]), float(window[1])))
    if key not in _DATASETS:
        dataset = H5Dataset(list(paths), window=window, cache=False)
        if sum(file.decoded_bytes for file in dataset.files) <= IN_MEMORY_LIMIT_BYTES:
            for file in dataset.files:
                file.load()
            dataset.cached = True
        _DATASETS[key] = dataset
    return _DATASETS[key]


def forget_datasets() -> None:
    """Close and drop the files this process holds (the files may then be moved or deleted)."""
    for dataset in _DATASETS.values():
        for file in dataset.files:
            file.close()
    for file in _FILES.values():
        file.close()
    _DATASETS.clear()
    _FILES.clear()


def stage_samples(plan: StagePlan, data: DataPlan) -> Samples:
    """The samples of one stage: real training samples and/or the first n pool samples per class."""
    parts: list[Samples] = []
    if plan.real:
        parts.append(read_samples(data.train_paths, data.train_indices, data.window, data.label_map))
    if plan.pool is not Pool.NONE and any(plan.per_class):
        paths, by_class = data.pool(plan.pool, plan.source)
        parts.append(read_samples(paths, _chosen(by_class, plan.per_class), data.window, data.label_map))
    return Samples.concatenate(parts)


@contextmanager
def plain_tensors() -> Iterator[None]:
    """MONAI code returns plain tensors inside (no MetaTensor bookkeeping)."""
    from monai.data import get_track_meta, set_track_meta

    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


def build_network(job: Job) -> torch.nn.Module:
    """The job's network, initialised from its seed (the same initial weights in every arm for a seed)."""
    torch.manual_seed(job.seed)
    data = job.data
    if job.task is Task.CLASSIFICATION:
        if job.network_factory is not None:
            return job.network_factory(data.in_channels, data.num_classes, data.image_size)
        return build_classifier(
            job.classifier.network, in_channels=data.in_channels, num_classes=data.num_classes, image_size=data.image_size, options=job.classifier
        )
    return build_segmenter(
        in_channels=data.in_channels, num_labels=data.num_labels, channels=job.segmenter.channels, residual_units=job.segmenter.residual_units
    )


def _test_outputs(network: torch.nn.Module, job: Job, test: Samples) -> dict[str, np.ndarray]:
    predicted = predict(network, test, job.task)
    if job.task is Task.CLASSIFICATION:
        return {"probabilities": predicted.astype(np.float32)}
    data = job.data
    return segmentation_per_sample(predicted, test.masks.numpy(), data.num_labels, data.spacing_mm, data.structure_names)


def run_job(job: Job) -> JobResult:
    """Train, early-stop and test one network (see the module docstring)."""
    from evaluation.batch_augmentation import BatchAugmentation

    started = time.perf_counter()
    data = job.data
    with plain_tensors():
        augment = BatchAugmentation(job.augmentation, data.image_size)
        network = build_network(job)
        stages = [TrainingStage(plan.name, stage_samples(plan, data), plan.epochs, plan.min_steps, plan.augment) for plan in job.stages]
        validation = read_samples(data.train_paths, data.validation_indices, data.window, data.label_map)
        test_indices = np.arange(sum(len(_file(p)) for p in data.test_paths))
        test = read_samples(data.test_paths, test_indices, data.window, data.label_map) if job.evaluate_test else None
        first_outputs: dict[str, np.ndarray] = {}
        logs = train_network(network, stages[:1], validation, job.task, job.settings, job.seed, augment)
        if job.also_after_first_stage and test is not None:
            first_outputs = _test_outputs(network, job, test)
        if len(stages) > 1:
            logs += train_network(network, stages[1:], validation, job.task, job.settings, job.seed, augment, first_index=1)
        outputs = _test_outputs(network, job, test) if test is not None else {}
    state = {k: v.detach().clone() for k, v in network.state_dict().items()} if job.keep_network else None
    return JobResult(job.key, outputs, [log.to_dict() for log in logs], time.perf_counter() - started, state, first_outputs)


# ---------------------------------------------------------------------------------------- cache ----


def _cache_files(folder: Path, digest: str) -> tuple[Path, Path]:
    return folder / f"{digest}.json", folder / f"{digest}.npz"


def load_cached(folder: Path | None, job: Job) -> JobResult | None:
    """The stored result of an identical job, or None."""
    if folder is None:
        return None
    meta_path, array_path = _cache_files(folder, job.content_hash())
    if not (meta_path.exists() and array_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(array_path, allow_pickle=False) as arrays:
            stored = {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError):
        return None  # a damaged entry is recomputed
    if not holds_for_budgets(meta["logs"], job):
        return None
    outputs = {name[len("out/") :]: value for name, value in stored.items() if name.startswith("out/")}
    first = {name[len("first/") :]: value for name, value in stored.items() if name.startswith("first/")}
    weights = {name[len("weights/") :]: torch.from_numpy(value.copy()) for name, value in stored.items() if name.startswith("weights/")}
    return JobResult(job.key, outputs, meta["logs"], float(meta["seconds"]), weights or None, first, cached=True)


def holds_for_budgets(logs: Sequence[Mapping[str, Any]], job: Job) -> bool:
    """Whether stored stage logs are what ``job`` would compute under its own budgets: each stage either
    stopped early at or before this job's budget (the same steps under any budget it fits in), or ran into a
    budget equal to this job's."""
    if len(logs) != len(job.stages):
        return False
    for log, plan in zip(logs, job.stages, strict=True):
        budget = budget_steps(int(log["samples"]), job.settings.batch_size, plan.epochs, plan.min_steps)
        if log["budget_bound"] and int(log["budget_steps"]) != budget:
            return False
        if int(log["steps"]) > budget:
            return False
    return True


def store(folder: Path | None, job: Job, result: JobResult) -> None:
    """Store a result atomically (write aside, then rename)."""
    if folder is None:
        return
    import io

    from augmentor.atomic import write_bytes_atomic

    folder.mkdir(parents=True, exist_ok=True)
    meta_path, array_path = _cache_files(folder, job.content_hash())
    arrays = {f"out/{k}": v for k, v in result.outputs.items()}
    arrays.update({f"first/{k}": v for k, v in result.first_stage_outputs.items()})
    if result.state_dict is not None:
        arrays.update({f"weights/{k}": v.numpy() for k, v in result.state_dict.items()})
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    write_bytes_atomic(array_path, buffer.getvalue())  # the arrays first: the JSON marks the entry complete
    write_bytes_atomic(meta_path, json.dumps({"key": list(job.key), "logs": result.logs, "seconds": result.seconds}).encode())


# ------------------------------------------------------------------------------------------ run ----


def _end_with_parent() -> None:
    """Linux: have the kernel end this worker when the process that started it dies, so that a killed
    ``augment evaluate`` leaves no orphan finishing its current (minutes-long) job. Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _worker_init(threads: int) -> None:
    _end_with_parent()
    torch.set_num_threads(threads)


IN_CACHE = "in the cache"


def plan_line(job: Job, cache: Path | None) -> str:
    """One line on a job before it runs: each stage's budget in steps (epochs of how many samples, floor), and
    whether ``cache`` already holds its result."""
    task, arm, seed = job.key
    stages = []
    for plan in job.stages:
        size = stage_size(plan, job.data)
        budget = budget_steps(size, job.settings.batch_size, plan.epochs, plan.min_steps) if size else 0
        stages.append(f"{plan.name} {budget} steps at most ({plan.epochs:g} epochs of {size} samples, floor {plan.min_steps})")
    where = IN_CACHE if load_cached(cache, job) is not None else "to train"
    return f"{task} '{arm}' seed {seed}: {'; '.join(stages)}: {where}"


def job_line(job: Job, result: JobResult) -> str:
    """One line on how a finished job trained: its last stage's steps, best step and budget, and its time."""
    task, arm, seed = job.key
    stages = result.logs or [{}]
    last = stages[-1]
    bound = " BUDGET-BOUND" if any(stage.get("budget_bound") for stage in stages) else ""
    where = "from the cache" if result.cached else f"{result.seconds / 60:.1f} min"
    return f"{task} '{arm}' seed {seed}: {last.get('steps', '?')} of {last.get('budget_steps', '?')} steps (best {last.get('best_step', '?')}){bound}, {where}"


def run_jobs(
    jobs: Sequence[Job], workers: int, advance: Any, cache: Path | None = None, finished: Callable[[Job, JobResult], None] | None = None
) -> dict[tuple[str, str, int], JobResult]:
    """Run every job not already in ``cache``, in this process (``workers`` = 1) or in a pool of spawned processes.

    Args:
        jobs: the jobs.
        workers: processes; each gets ``cores // workers`` torch threads (at least 1).
        advance: called once per finished job (a progress bar).
        cache: folder of stored results (None: no cache).
        finished: called with each job and its result as it finishes (cached ones first), e.g. to log it.

    Returns:
        ``{job.key: result}``.
    """
    results: dict[tuple[str, str, int], JobResult] = {}
    pending: list[Job] = []

    def done(job: Job, result: JobResult) -> None:
        results[job.key] = result
        if not result.cached:
            store(cache, job, result)
        if finished is not None:
            finished(job, result)
        advance()

    for job in jobs:
        cached = load_cached(cache, job)
        if cached is None:
            pending.append(job)
        else:
            done(job, cached)
    if workers <= 1 or len(pending) <= 1:
        for job in pending:
            done(job, run_job(job))
        return results
    threads = max(1, (os.cpu_count() or 1) // workers)
    # Longest jobs first (the most samples), so a pool does not end waiting on one long job.
    pending.sort(key=lambda job: -sum(plan.epochs * (sum(plan.per_class) + 1000 * plan.real) for plan in job.stages))
    by_key = {job.key: job for job in pending}
    # spawn, not fork: the parent has started torch's thread pools, which do not survive a fork safely.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(threads,)) as pool:
        futures = [pool.submit(run_job, job) for job in pending]
        for future in as_completed(futures):
            result = future.result()
            done(by_key[result.key], result)
    return results
