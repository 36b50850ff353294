"""(arm, seed) jobs: build the arm's data and network, train, predict on the test set once.

A job is a picklable description (file paths, indices, settings), so jobs run in this process or in a pool
of worker processes alike, with the same result: everything random in a job derives from its seed (the
network's initialisation, dropout, batch order and augmentation), never from which process runs it or what
ran there before. Each process opens the data files once and keeps them in memory (small files) or reads
them lazily (large synthetic pools).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from augmentor.data.dataset import H5Dataset
from evaluation.arms import Arm, StagePlan
from evaluation.augmentation import classic_augmentation
from evaluation.metrics import segmentation_per_sample
from evaluation.models import build_classifier, build_segmenter
from evaluation.recipe import AugmentationSection, ClassifierSection, SegmenterSection
from evaluation.training import Task, TrainingStage, TrainSettings, TransformedDataset, predict, train_network

# Files that decode to more than this are read from disk per batch rather than held in memory (60 000
# 64x64 lesions with masks decode to ~740 MB; one copy per worker process would add up).
IN_MEMORY_LIMIT_BYTES = 512 << 20


@dataclass(frozen=True)
class DataPlan:
    """Where a job's samples come from (shared by every job of a run).

    Attributes:
        train_paths: the real train files (one dataset, in order).
        test_paths: the real test files.
        pool_paths: the synthetic files (one pool, in order); empty when there is none.
        window: (low, high) HU window that maps every file to [-1, 1] (the real train file's).
        train_indices: the real samples the networks train on (training patients).
        validation_indices: the real samples of the validation patients.
        pool_by_class: for class c, the pool positions of its samples in order.
        image_size: height = width.
        in_channels: image channels.
        num_classes: classes.
        num_labels: mask labels including background.
        structure_names: names of mask labels 1...
        spacing_mm: pixel spacing of the test data.
    """

    train_paths: tuple[str, ...]
    test_paths: tuple[str, ...]
    pool_paths: tuple[str, ...]
    window: tuple[float, float]
    train_indices: np.ndarray
    validation_indices: np.ndarray
    pool_by_class: tuple[np.ndarray, ...]
    image_size: int
    in_channels: int
    num_classes: int
    num_labels: int
    structure_names: tuple[str, ...]
    spacing_mm: tuple[float, float]


@dataclass(frozen=True)
class Job:
    """Train one network for one (task, arm, seed) and evaluate it on the test set."""

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

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.task.value, self.arm.name, self.seed)


@dataclass
class JobResult:
    """What a job returns: test outputs, training logs and (when asked) the weights."""

    key: tuple[str, str, int]
    outputs: dict[str, np.ndarray]  # "probabilities" (N, K) or per-sample segmentation metrics
    logs: list[dict[str, Any]]
    seconds: float
    state_dict: dict[str, torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_DATASETS: dict[tuple[tuple[str, ...], tuple[float, float]], H5Dataset] = {}


def open_dataset(paths: Sequence[str], window: tuple[float, float]) -> H5Dataset:
    """The files as one dataset, opened once per process (held in memory up to ``IN_MEMORY_LIMIT_BYTES``)."""
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
    """Close and drop the datasets this process holds (the files may then be moved or deleted)."""
    for dataset in _DATASETS.values():
        for file in dataset.files:
            file.close()
    _DATASETS.clear()


@contextmanager
def plain_tensors() -> Iterator[None]:
    """MONAI transforms return plain tensors inside (no MetaTensor bookkeeping: 6x faster on 64x64 patches)."""
    from monai.data import get_track_meta, set_track_meta

    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


def stage_dataset(plan: StagePlan, data: DataPlan, transform: Any) -> Dataset[dict[str, Any]]:
    """The samples of one stage: real training samples and/or the first n synthetic samples per class."""
    parts: list[Dataset[dict[str, Any]]] = []
    if plan.real:
        parts.append(Subset(open_dataset(data.train_paths, data.window), data.train_indices.tolist()))
    if any(plan.synthetic_per_class):
        chosen = np.sort(np.concatenate([positions[:count] for positions, count in zip(data.pool_by_class, plan.synthetic_per_class, strict=True)]))
        parts.append(Subset(open_dataset(data.pool_paths, data.window), chosen.tolist()))
    dataset: Dataset[dict[str, Any]] = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    return TransformedDataset(dataset, transform) if plan.augment else dataset


def build_network(job: Job) -> torch.nn.Module:
    """The job's network, initialised from its seed (the same initial weights in every arm for a seed)."""
    torch.manual_seed(job.seed)
    data = job.data
    if job.task is Task.CLASSIFICATION:
        return build_classifier(
            job.classifier.network, in_channels=data.in_channels, num_classes=data.num_classes, image_size=data.image_size, options=job.classifier
        )
    return build_segmenter(
        in_channels=data.in_channels, num_labels=data.num_labels, channels=job.segmenter.channels, residual_units=job.segmenter.residual_units
    )


def run_job(job: Job) -> JobResult:
    """Train, early-stop and test one network (see the module docstring)."""
    started = time.perf_counter()
    data = job.data
    with plain_tensors():
        transform = classic_augmentation(job.augmentation, data.image_size)
        transform.set_random_state(seed=int(np.random.SeedSequence([job.seed, 0xA06]).generate_state(1)[0]))
        network = build_network(job)
        stages = [TrainingStage(plan.name, stage_dataset(plan, data, transform), plan.max_steps) for plan in job.stages]
        validation = Subset(open_dataset(data.train_paths, data.window), data.validation_indices.tolist())
        logs = train_network(network, stages, validation, job.task, job.settings, job.seed)
        outputs: dict[str, np.ndarray] = {}
        if job.evaluate_test:
            test = open_dataset(data.test_paths, data.window)
            predicted = predict(network, test, job.task)
            if job.task is Task.CLASSIFICATION:
                outputs["probabilities"] = predicted.astype(np.float32)
            else:
                truth = np.concatenate([file.read(np.arange(len(file)))[1] for file in test.files])
                outputs = segmentation_per_sample(predicted, truth, data.num_labels, data.spacing_mm, data.structure_names)
    state = {k: v.detach().clone() for k, v in network.state_dict().items()} if job.keep_network else None
    return JobResult(job.key, outputs, [log.to_dict() for log in logs], time.perf_counter() - started, state)


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def run_jobs(jobs: Sequence[Job], workers: int, advance: Any) -> dict[tuple[str, str, int], JobResult]:
    """Run every job, in this process (``workers`` = 1) or in a pool of spawned processes.

    Args:
        jobs: the jobs.
        workers: processes; each gets ``cores // workers`` torch threads (at least 1).
        advance: called once per finished job (a progress bar).

    Returns:
        ``{job.key: result}``.
    """
    results: dict[tuple[str, str, int], JobResult] = {}
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            results[job.key] = run_job(job)
            advance()
        return results
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: the parent has started torch's thread pools, which do not survive a fork safely.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(threads,)) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        for future in as_completed(futures):
            result = future.result()
            results[result.key] = result
            advance()
    return results
