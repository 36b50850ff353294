"""The downstream training loop: tensors in memory, batched augmentation, training to convergence.

One loop serves classifiers and segmenters (:class:`Task`) and every arm, so that a difference between
arms is a difference in their data, not in how far each one trained. Each stage:

- has a **budget in epochs of its own training set** (``epochs``), with a floor of ``min_steps``
  optimiser steps: an arm with ten times the samples gets ten times the steps;
- checks a validation criterion (the Brier score, or the loss; on the validation *patients*, never
  augmented) every ``eval_every`` steps and smooths it with an exponential moving average
  (``smoothing``): validation sets here hold a few dozen lesions, whose raw score jumps between checks;
- multiplies the learning rate by ``lr_factor`` after ``lr_patience`` checks without an improvement of
  the smoothed loss (reduce-on-plateau), and stops after ``patience`` checks without one, never before
  ``min_steps``;
- starts choosing after a warm-up (``warmup_steps``): earlier checks are logged, not candidates, and
  drop neither the learning rate nor patience;
- leaves the network at its best smoothed check. The state the stage started from is *not* a
  candidate: a fine-tuning stage cannot "win" by not training (its step-0 loss is logged, not chosen).

A stage ends either because patience ran out (**converged**) or because its budget did (**budget-bound**:
the criterion was still improving within the last ``patience`` checks). Every log records
``steps``, ``best_step``, ``budget_steps`` and ``budget_bound``; the report warns when a headline arm is
budget-bound, so a delta never silently compares a converged arm with a truncated one.

Samples live in memory as tensors (int16 HU, uint8 masks) and batches are gathered, windowed and
augmented as whole tensors (:mod:`evaluation.batch_augmentation`): no per-sample transforms, no
DataLoader. Every random draw (initialisation, dropout, batch order, augmentation) comes from the job's
seed, so an (arm, seed) job gives the same network in any process.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from torch import nn

from augmentor.data.intensity import normalise

Batch = dict[str, torch.Tensor]
Augment = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


class Task(StrEnum):
    """What the downstream network predicts."""

    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"


@dataclass(frozen=True)
class Samples:
    """Labelled samples held in memory.

    Attributes:
        images: (N, C, H, W) int16 HU.
        masks: (N, H, W) uint8 labels.
        labels: (N,) int64 classes.
        window: (low, high) HU window mapping images to [-1, 1].
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    window: tuple[float, float]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: torch.Tensor | slice) -> Batch:
        """Samples at ``index``: images float32 in [-1, 1], masks int64 (B, H, W), labels (B,)."""
        images = normalise(self.images[index].float(), self.window)
        return {"image": images, "mask": self.masks[index].long(), "label": self.labels[index]}

    @staticmethod
    def concatenate(parts: Sequence[Samples]) -> Samples:
        """One set from several (same window)."""
        if len(parts) == 1:
            return parts[0]
        return Samples(
            torch.cat([p.images for p in parts]), torch.cat([p.masks for p in parts]), torch.cat([p.labels for p in parts]), parts[0].window
        )


@dataclass(frozen=True)
class TrainSettings:
    """The loop's hyper-parameters (from the recipe's ``[train]`` section).

    Attributes:
        batch_size: samples per optimiser step.
        learning_rate: AdamW's initial learning rate.
        weight_decay: AdamW's decoupled weight decay.
        eval_every: optimiser steps between validation checks.
        patience: checks without improvement of the smoothed validation loss before stopping.
        lr_patience: checks without improvement before the learning rate is multiplied by ``lr_factor``.
        lr_factor: the plateau multiplier (< 1).
        smoothing: weight of the past in the moving average of the validation loss (0: raw loss).
        min_delta: an improvement must beat the best smoothed criterion by this much (relative).
        warmup_steps: checks before this step are logged but are not candidates for the best network and
            count neither towards ``patience`` nor towards a learning-rate drop. On a few dozen validation
            lesions the smoothed criterion of an arm can sit on a plateau from its first check, so without a
            warm-up the learning rate drops twice and patience runs out at the floor of steps, leaving the
            network of step 20 (barely trained) as "converged"; 0: every check counts.
        criterion: what early stopping watches on the validation patients. ``"brier"`` (classification):
            the Brier score, mean squared distance of the predicted probabilities from the one-hot truth, a
            proper score that a few confidently wrong lesions cannot blow up (on a few dozen validation
            lesions the cross-entropy rises from overconfidence while accuracy still improves); ``"loss"``:
            the training loss. Segmentation always uses its loss (Dice + cross-entropy).
    """

    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    eval_every: int = 20
    patience: int = 10
    lr_patience: int = 5
    lr_factor: float = 0.3
    smoothing: float = 0.6
    min_delta: float = 1e-3
    criterion: str = "brier"
    warmup_steps: int = 0


@dataclass(frozen=True)
class TrainingStage:
    """Train on ``samples`` for ``epochs`` epochs of them (at least ``min_steps`` steps).

    Attributes:
        name: "train", "pretrain" or "finetune".
        samples: the stage's training samples.
        epochs: the budget, in passes over ``samples``.
        min_steps: the floor of the budget; early stopping never ends a stage before it.
        augment: apply the batch augmentation.
    """

    name: str
    samples: Samples
    epochs: float
    min_steps: int
    augment: bool = False

    def budget_steps(self, batch_size: int) -> int:
        return budget_steps(len(self.samples), batch_size, self.epochs, self.min_steps)


def budget_steps(samples: int, batch_size: int, epochs: float, min_steps: int) -> int:
    """Optimiser steps of ``epochs`` passes over ``samples`` in batches of ``batch_size``, at least ``min_steps``."""
    steps_per_epoch = math.ceil(samples / min(batch_size, samples))
    return max(int(min_steps), math.ceil(epochs * steps_per_epoch))


@dataclass
class StageLog:
    """What happened in one stage."""

    name: str
    samples: int
    budget_steps: int = 0
    steps: int = 0
    best_step: int = 0
    best_validation_loss: float = float("inf")
    budget_bound: bool = False
    learning_rate_reductions: int = 0
    seconds: float = 0.0
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, smoothed loss)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples": self.samples,
            "budget_steps": self.budget_steps,
            "steps": self.steps,
            "best_step": self.best_step,
            "best_validation_loss": round(self.best_validation_loss, 6),
            "budget_bound": self.budget_bound,
            "learning_rate_reductions": self.learning_rate_reductions,
            "seconds": round(self.seconds, 3),
            "history": [[step, round(loss, 6), round(smoothed, 6)] for step, loss, smoothed in self.history],
        }


class _Loss:
    """The task's training loss on raw logits."""

    def __init__(self, task: Task) -> None:
        self.task = task
        if task is Task.SEGMENTATION:
            from monai.losses import DiceCELoss

            # Dice + cross-entropy: Dice copes with the lesion being a small part of the ROI, CE keeps
            # gradients well behaved early on (the nnU-Net default).
            self.segmentation_loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def __call__(self, network: nn.Module, batch: Batch) -> torch.Tensor:
        logits = logits_of(network, batch["image"])
        if self.task is Task.CLASSIFICATION:
            return nn.functional.cross_entropy(logits, batch["label"])
        return self.segmentation_loss(logits, batch["mask"].unsqueeze(1))


def logits_of(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``network(images)`` with the images in channels-last layout, the layout :func:`train_network` puts
    the network in (on 2 CPU cores the 5x5 convolutions of the lesion CNN run ~14 % faster; on a GPU
    under mixed precision it is the layout tensor cores want)."""
    return network(images.contiguous(memory_format=torch.channels_last))


def _stream_seed(*words: int) -> int:
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def _batch_order(size: int, batch_size: int, generator: torch.Generator) -> Any:
    """Indices of shuffled batches, epoch after epoch, forever. The last partial batch of an epoch is
    dropped when the set holds at least one full batch (BatchNorm needs more than one sample)."""
    batch = min(batch_size, size)
    while True:
        order = torch.randperm(size, generator=generator)
        stop = size - size % batch if size >= batch_size else size
        for start in range(0, stop, batch):
            yield order[start : start + batch]


CRITERIA = ("brier", "loss")


@torch.inference_mode()
def validation_loss(network: nn.Module, samples: Samples, task: Task, batch_size: int = 256, criterion: str = "loss") -> float:
    """Mean loss (or Brier score, for classification with ``criterion="brier"``) over ``samples`` in eval mode."""
    loss = _Loss(task)
    network.eval()
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(samples), batch_size):
        batch = samples.batch(slice(start, start + batch_size))
        if criterion == "brier" and task is Task.CLASSIFICATION:
            probabilities = torch.softmax(logits_of(network, batch["image"]).double(), dim=1)
            truth = nn.functional.one_hot(batch["label"], probabilities.shape[1]).double()
            total += ((probabilities - truth) ** 2).sum()
        else:
            total += loss(network, batch).double() * batch["label"].shape[0]
    return float(total) / max(len(samples), 1)


def train_network(
    network: nn.Module,
    stages: Sequence[TrainingStage],
    validation: Samples,
    task: Task,
    settings: TrainSettings,
    seed: int,
    augment: Augment | None = None,
    first_index: int = 0,
) -> list[StageLog]:
    """Train ``network`` stage after stage to convergence; leave it at the best checkpoint of the last stage.

    Args:
        network: a freshly initialised network (built after seeding, by the caller).
        stages: the stages in order (e.g. pretrain on synthetic, then fine-tune on real).
        validation: the validation patients' samples (never augmented).
        task: classification (cross-entropy) or segmentation (Dice + cross-entropy).
        settings: batch size, optimiser and stopping settings.
        seed: batch order and augmentation of stage i come from ``(seed, i)``.
        augment: ``(images, masks, generator) -> (images, masks)`` for stages with ``augment``.
        first_index: the index of ``stages[0]`` in the job's stages (for its random streams).

    Returns:
        One log per stage.
    """
    loss_of = _Loss(task)
    network.to(memory_format=torch.channels_last)
    logs: list[StageLog] = []
    for index, stage in enumerate(stages, start=first_index):
        started = time.perf_counter()
        budget = stage.budget_steps(settings.batch_size)
        log = StageLog(stage.name, len(stage.samples), budget_steps=budget)
        # AdamW (decoupled weight decay; Loshchilov & Hutter 2019), a fresh optimiser per stage: the
        # fine-tuning stage starts from the pretrained weights, not from the pretraining's moments.
        optimiser = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
        order_generator = torch.Generator().manual_seed(_stream_seed(seed, index, 0xBA7C))
        augment_generator = torch.Generator().manual_seed(_stream_seed(seed, index, 0xA06))
        initial = validation_loss(network, validation, task, criterion=settings.criterion)
        log.history.append((0, initial, initial))
        best_state: dict[str, torch.Tensor] | None = None
        smoothed: float | None = None
        checks_without_improvement = 0
        batches = _batch_order(len(stage.samples), settings.batch_size, order_generator)
        network.train()
        stopped_by_patience = False
        for step in range(1, budget + 1):
            batch = stage.samples.batch(next(batches))
            if stage.augment and augment is not None:
                batch["image"], batch["mask"] = augment(batch["image"], batch["mask"], augment_generator)
            optimiser.zero_grad(set_to_none=True)
            loss_of(network, batch).backward()
            optimiser.step()
            log.steps = step
            if step % settings.eval_every and step != budget:
                continue
            current = validation_loss(network, validation, task, criterion=settings.criterion)
            network.train()
            smoothed = current if smoothed is None else settings.smoothing * smoothed + (1.0 - settings.smoothing) * current
            log.history.append((step, current, smoothed))
            if step < settings.warmup_steps and step != budget:
                continue
            if best_state is None or smoothed < log.best_validation_loss * (1.0 - settings.min_delta):
                log.best_validation_loss, log.best_step = smoothed, step
                best_state = copy.deepcopy(network.state_dict())
                checks_without_improvement = 0
                continue
            checks_without_improvement += 1
            if checks_without_improvement % settings.lr_patience == 0:
                for group in optimiser.param_groups:
                    group["lr"] *= settings.lr_factor
                log.learning_rate_reductions += 1
            if checks_without_improvement >= settings.patience and step >= stage.min_steps:
                stopped_by_patience = True
                break
        log.budget_bound = not stopped_by_patience
        if best_state is not None:
            network.load_state_dict(best_state)
        network.eval()
        log.seconds = time.perf_counter() - started
        logs.append(log)
    return logs


@torch.inference_mode()
def predict(network: nn.Module, samples: Samples, task: Task, batch_size: int = 256) -> np.ndarray:
    """Run ``network`` over ``samples`` in order.

    Returns:
        Classification: (N, K) float32 class probabilities (soft-max). Segmentation: (N, H, W) uint8
        predicted labels (arg-max).
    """
    network.eval()
    outputs = []
    for start in range(0, len(samples), batch_size):
        logits = logits_of(network, samples.batch(slice(start, start + batch_size))["image"]).float()
        if task is Task.CLASSIFICATION:
            outputs.append(torch.softmax(logits, dim=1).numpy())
        else:
            outputs.append(logits.argmax(dim=1).to(torch.uint8).numpy())
    return np.concatenate(outputs)
