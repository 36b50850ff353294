"""The downstream loop: early stopping stops, and leaves the network at its best validation checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from augmentor.data.dataset import H5Dataset
from evaluation.models import FridAdarCNN
from evaluation.training import Task, TrainingStage, TrainSettings, predict, train_network, validation_loss


def _data(tiny_file: Callable[..., Path]) -> tuple[Subset, Subset]:
    dataset = H5Dataset(tiny_file("train.h5", count=48, patients=16, seed=0))
    return Subset(dataset, list(range(36))), Subset(dataset, list(range(36, 48)))


def _network(seed: int = 0) -> FridAdarCNN:
    torch.manual_seed(seed)
    return FridAdarCNN(in_channels=1, num_classes=3, image_size=16, channels=(4, 8), kernel_size=3, dense_units=16, dropout=0.0)


def test_no_improvement_stops_after_patience_checks(tiny_file: Callable[..., Path]) -> None:
    train, validation = _data(tiny_file)
    settings = TrainSettings(batch_size=8, learning_rate=0.0, weight_decay=0.0, eval_every=2, patience=3)
    (log,) = train_network(_network(), [TrainingStage("train", train, 100)], validation, Task.CLASSIFICATION, settings, seed=0)
    assert log.steps == 6 and log.best_step == 0  # checks at steps 2, 4, 6 never beat step 0
    assert [step for step, _ in log.history] == [0, 2, 4, 6]


def test_training_learns_and_keeps_the_best_checkpoint(tiny_file: Callable[..., Path]) -> None:
    train, validation = _data(tiny_file)
    settings = TrainSettings(batch_size=8, learning_rate=1e-2, weight_decay=0.0, eval_every=5, patience=100)
    network = _network()
    initial = validation_loss(network, validation, Task.CLASSIFICATION)
    (log,) = train_network(network, [TrainingStage("train", train, 60)], validation, Task.CLASSIFICATION, settings, seed=0)
    assert log.best_validation_loss < initial
    assert validation_loss(network, validation, Task.CLASSIFICATION) == pytest.approx(log.best_validation_loss)
    assert log.best_validation_loss == min(loss for _, loss in log.history)
    probabilities = predict(network, validation, Task.CLASSIFICATION)
    assert probabilities.shape == (12, 3) and probabilities.sum(axis=1) == pytest.approx(1.0, abs=1e-5)
    # the same seed trains the same network
    again = _network()
    train_network(again, [TrainingStage("train", train, 60)], validation, Task.CLASSIFICATION, settings, seed=0)
    for (name, a), b in zip(network.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
