"""The downstream training loop: stages, early stopping on the patient-level validation split.

One loop serves classifiers and segmenters (:class:`Task`). Each stage trains for at most its step
budget, checks the validation loss every ``eval_every`` steps, stops after ``patience`` checks without
improvement, and leaves the network at its best validation checkpoint (early stopping as model
selection; Prechelt 1998). A following stage (fine-tuning after pretraining) starts from there with a
fresh optimiser. Every random draw (initialisation, dropout, batch order, augmentation) comes from the
job's seed, so a (arm, seed) job gives the same network in any process.

Validation loss rather than accuracy is the criterion: validation sets here hold a few dozen samples,
on which accuracy moves in coarse steps while the loss still ranks checkpoints.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from augmentor.data.dataset import collate

Sample = dict[str, Any]


class Task(StrEnum):
    """What the downstream network predicts."""

    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"


@dataclass(frozen=True)
class TrainSettings:
    """The loop's hyper-parameters (from the recipe's ``[train]`` section)."""

    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 20
    patience: int = 5


@dataclass(frozen=True)
class TrainingStage:
    """Train on ``dataset`` for at most ``max_steps`` optimiser steps."""

    name: str
    dataset: Dataset[Sample]
    max_steps: int


@dataclass
class StageLog:
    """What happened in one stage."""

    name: str
    samples: int
    steps: int = 0
    best_step: int = 0
    best_validation_loss: float = float("inf")
    seconds: float = 0.0
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples": self.samples,
            "steps": self.steps,
            "best_step": self.best_step,
            "best_validation_loss": self.best_validation_loss,
            "seconds": round(self.seconds, 3),
            "history": [[step, round(loss, 6)] for step, loss in self.history],
        }


class TransformedDataset(Dataset[Sample]):
    """``base`` with a dictionary transform applied to each sample."""

    def __init__(self, base: Dataset[Sample], transform: Any) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        return self.transform(dict(self.base[index]))


class _Loss:
    """The task's training loss on raw logits."""

    def __init__(self, task: Task) -> None:
        self.task = task
        if task is Task.SEGMENTATION:
            from monai.losses import DiceCELoss

            # Dice + cross-entropy: Dice copes with the lesion being a small part of the ROI, CE keeps
            # gradients well behaved early on (the nnU-Net default).
            self.segmentation_loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def __call__(self, network: nn.Module, batch: Sample) -> torch.Tensor:
        logits = network(batch["image"])
        if self.task is Task.CLASSIFICATION:
            return nn.functional.cross_entropy(logits, batch["label"])
        return self.segmentation_loss(logits, batch["mask"])


def _batches(dataset: Dataset[Sample], batch_size: int, generator: torch.Generator) -> Iterator[Sample]:
    """Shuffled batches, epoch after epoch, forever (the last partial batch of an epoch is dropped when
    the set holds at least one full batch: BatchNorm needs more than one sample)."""
    size = len(dataset)  # type: ignore[arg-type]
    loader = DataLoader(
        dataset,
        batch_size=min(batch_size, size),
        sampler=RandomSampler(dataset, generator=generator),  # type: ignore[arg-type]
        collate_fn=collate,
        drop_last=size >= batch_size,
        num_workers=0,
    )
    while True:
        yield from loader


@torch.inference_mode()
def validation_loss(network: nn.Module, dataset: Dataset[Sample], task: Task, batch_size: int = 256) -> float:
    """Mean loss over ``dataset`` in eval mode (sample-weighted)."""
    loss = _Loss(task)
    network.eval()
    total, count = 0.0, 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=0)
    for batch in loader:
        size = int(batch["image"].shape[0])
        total += float(loss(network, batch)) * size
        count += size
    return total / max(count, 1)


def train_network(
    network: nn.Module,
    stages: Sequence[TrainingStage],
    validation: Dataset[Sample],
    task: Task,
    settings: TrainSettings,
    seed: int,
) -> list[StageLog]:
    """Train ``network`` stage after stage with early stopping; leave it at the best checkpoint.

    Args:
        network: a freshly initialised network (built after seeding, by the caller).
        stages: the stages in order (e.g. pretrain on synthetic, then fine-tune on real).
        validation: the validation patients' samples (never augmented).
        task: classification (cross-entropy) or segmentation (Dice + cross-entropy).
        settings: batch size, optimiser and early-stopping settings.
        seed: batch order of stage i comes from ``(seed, i)``.

    Returns:
        One log per stage.
    """
    loss_of = _Loss(task)
    logs: list[StageLog] = []
    for index, stage in enumerate(stages):
        log = StageLog(stage.name, len(stage.dataset))  # type: ignore[arg-type]
        started = time.perf_counter()
        # AdamW (decoupled weight decay; Loshchilov & Hutter 2019), a fresh optimiser per stage: the
        # fine-tuning stage starts from the pretrained weights, not from the pretraining's moments.
        optimiser = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))
        best_state = copy.deepcopy(network.state_dict())
        log.best_validation_loss = validation_loss(network, validation, task)
        log.history.append((0, log.best_validation_loss))
        checks_without_improvement = 0
        batches = _batches(stage.dataset, settings.batch_size, generator)
        network.train()
        for step in range(1, stage.max_steps + 1):
            batch = next(batches)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_of(network, batch)
            loss.backward()
            optimiser.step()
            log.steps = step
            if step % settings.eval_every == 0 or step == stage.max_steps:
                current = validation_loss(network, validation, task)
                network.train()
                log.history.append((step, current))
                if current < log.best_validation_loss:
                    log.best_validation_loss, log.best_step = current, step
                    best_state = copy.deepcopy(network.state_dict())
                    checks_without_improvement = 0
                else:
                    checks_without_improvement += 1
                    if checks_without_improvement >= settings.patience:
                        break
        network.load_state_dict(best_state)
        network.eval()
        log.seconds = time.perf_counter() - started
        logs.append(log)
    return logs


@torch.inference_mode()
def predict(network: nn.Module, dataset: Dataset[Sample], task: Task, batch_size: int = 256) -> np.ndarray:
    """Run ``network`` over ``dataset`` in order.

    Returns:
        Classification: (N, K) float32 class probabilities (soft-max). Segmentation: (N, H, W) uint8
        predicted labels (arg-max).
    """
    network.eval()
    outputs = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=0)
    for batch in loader:
        logits = network(batch["image"]).float()
        if task is Task.CLASSIFICATION:
            outputs.append(torch.softmax(logits, dim=1).numpy())
        else:
            outputs.append(logits.argmax(dim=1).to(torch.uint8).numpy())
    return np.concatenate(outputs)
