"""The downstream loop: budgets in epochs, convergence (patience on the smoothed validation loss, learning-rate
drops, a floor of steps), the budget-bound flag, the best checkpoint (never the stage's starting state), and
determinism."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from augmentor.data.reader import H5File
from evaluation.models import FridAdarCNN
from evaluation.training import (
    Samples,
    Task,
    TrainingStage,
    TrainSettings,
    predict,
    train_network,
    validation_loss,
)


def _data(tiny_file: Callable[..., Path]) -> tuple[Samples, Samples]:
    file = H5File(tiny_file("train.h5", count=48, patients=16, seed=0))
    images, masks, labels = file.read(np.arange(48))
    window = file.info.hu_window

    def part(rows: slice) -> Samples:
        return Samples(torch.from_numpy(images[rows]), torch.from_numpy(masks[rows]), torch.from_numpy(labels[rows]), window)

    return part(slice(0, 36)), part(slice(36, 48))


def _network(seed: int = 0) -> FridAdarCNN:
    torch.manual_seed(seed)
    return FridAdarCNN(in_channels=1, num_classes=3, image_size=16, channels=(4, 8), kernel_size=3, dense_units=16, dropout=0.0)


def test_the_budget_is_in_epochs_of_the_stage_s_own_samples(tiny_file: Callable[..., Path]) -> None:
    train, _ = _data(tiny_file)
    assert TrainingStage("train", train, epochs=10, min_steps=1).budget_steps(batch_size=8) == 10 * 5  # ceil(36 / 8) = 5 per epoch
    assert TrainingStage("train", train, epochs=10, min_steps=80).budget_steps(batch_size=8) == 80  # the floor
    bigger = Samples.concatenate([train, train, train])
    assert TrainingStage("train", bigger, epochs=10, min_steps=1).budget_steps(batch_size=8) == 10 * 14  # 3x the samples, ~3x the steps


def test_no_improvement_stops_after_patience_but_not_before_the_floor(tiny_file: Callable[..., Path]) -> None:
    train, validation = _data(tiny_file)
    # learning rate 0: the loss never moves, so after the first check nothing improves
    settings = TrainSettings(batch_size=8, learning_rate=1e-12, weight_decay=0.0, eval_every=2, patience=3, lr_patience=100)
    (log,) = train_network(_network(), [TrainingStage("train", train, 100, 1)], validation, Task.CLASSIFICATION, settings, seed=0)
    assert log.steps == 8 and log.best_step == 2 and not log.budget_bound  # checks 4, 6, 8 do not beat check 2
    assert [step for step, *_ in log.history] == [0, 2, 4, 6, 8]
    (floored,) = train_network(_network(), [TrainingStage("train", train, 100, 20)], validation, Task.CLASSIFICATION, settings, seed=0)
    assert floored.steps == 20 and not floored.budget_bound  # patience ran out at 8, the floor holds it to 20


def test_checks_inside_the_warm_up_are_logged_but_neither_chosen_nor_counted(tiny_file: Callable[..., Path]) -> None:
    train, validation = _data(tiny_file)
    # a plateau from the first check: without a warm-up the network of step 2 "wins" and patience ends at 8
    settings = TrainSettings(batch_size=8, learning_rate=1e-12, weight_decay=0.0, eval_every=2, patience=3, lr_patience=2, warmup_steps=10)
    (log,) = train_network(_network(), [TrainingStage("train", train, 100, 1)], validation, Task.CLASSIFICATION, settings, seed=0)
    assert [step for step, *_ in log.history] == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    assert log.best_step == 10  # the first check at or after the warm-up
    assert log.steps == 16 and not log.budget_bound  # patience counted from step 10 on: 12, 14, 16
    assert log.learning_rate_reductions == 1  # after 2 checks past the warm-up, none inside it
    # a budget shorter than the warm-up still keeps the network of its last step
    (short,) = train_network(_network(), [TrainingStage("train", train, 1, 1)], validation, Task.CLASSIFICATION, settings, seed=0)
    assert short.steps == 5 and short.best_step == 5 and short.budget_bound


def test_a_budget_that_ends_training_while_it_improves_is_flagged(tiny_file: Callable[..., Path]) -> None:
    train, validation = _data(tiny_file)
    settings = TrainSettings(batch_size=8, learning_rate=1e-2, weight_decay=0.0, eval_every=2, patience=50, smoothing=0.0)
    (log,) = train_network(_network(), [TrainingStage("train", train, 2, 1)], validation, Task.CLASSIFICATION, settings, seed=0)
    assert log.budget_steps == 10 and log.steps == 10 and log.budget_bound


def test_the_learning_rate_drops_on_a_plateau(tiny_file: Callable[..., Path]) -> None:
    train, validation = _data(tiny_file)
    settings = TrainSettings(batch_size=8, learning_rate=1e-12, weight_decay=0.0, eval_every=2, patience=7, lr_patience=2)
    (log,) = train_network(_network(), [TrainingStage("train", train, 100, 1)], validation, Task.CLASSIFICATION, settings, seed=0)
    assert log.learning_rate_reductions == 3  # after 2, 4 and 6 checks without improvement; stopped at 7


def test_a_fine_tuning_stage_cannot_choose_its_starting_state(tiny_file: Callable[..., Path]) -> None:
    train, validation = _data(tiny_file)
    settings = TrainSettings(batch_size=8, learning_rate=1e-2, weight_decay=0.0, eval_every=2, patience=2, smoothing=0.0)
    network = _network()
    stages = [TrainingStage("pretrain", train, 3, 1), TrainingStage("finetune", train, 5, 1)]
    pretrain, finetune = train_network(network, stages, validation, Task.CLASSIFICATION, settings, seed=0)
    assert finetune.history[0][0] == 0 and finetune.history[0][1] == pytest.approx(pretrain.best_validation_loss, rel=1e-5)
    assert finetune.best_step > 0  # even where step 0 (the pretrained state) had the lowest loss, a trained state is kept


def test_training_learns_keeps_the_best_checkpoint_and_is_deterministic(tiny_file: Callable[..., Path]) -> None:
    train, validation = _data(tiny_file)
    settings = TrainSettings(batch_size=8, learning_rate=1e-2, weight_decay=0.0, eval_every=5, patience=100, smoothing=0.0)
    network = _network()
    initial = validation_loss(network, validation, Task.CLASSIFICATION, criterion="brier")
    (log,) = train_network(network, [TrainingStage("train", train, 12, 1, augment=False)], validation, Task.CLASSIFICATION, settings, seed=0)
    assert log.best_validation_loss < initial
    assert validation_loss(network, validation, Task.CLASSIFICATION, criterion="brier") == pytest.approx(log.best_validation_loss, rel=1e-5)
    assert log.best_validation_loss == pytest.approx(min(loss for step, loss, _ in log.history if step > 0))
    probabilities = predict(network, validation, Task.CLASSIFICATION)
    assert probabilities.shape == (12, 3) and probabilities.sum(axis=1) == pytest.approx(1.0, abs=1e-5)
    again = _network()
    train_network(again, [TrainingStage("train", train, 12, 1)], validation, Task.CLASSIFICATION, settings, seed=0)
    for (name, a), b in zip(network.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_augmented_stages_use_the_augmentation_and_stay_deterministic(tiny_file: Callable[..., Path]) -> None:
    train, validation = _data(tiny_file)
    calls: list[int] = []

    def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(images.shape[0])
        noise = torch.rand(images.shape, generator=generator)
        return images + 0.1 * noise, masks

    settings = TrainSettings(batch_size=8, learning_rate=1e-2, weight_decay=0.0, eval_every=5, patience=100)
    first, second = _network(), _network()
    for network in (first, second):
        train_network(network, [TrainingStage("train", train, 2, 1, augment=True)], validation, Task.CLASSIFICATION, settings, seed=3, augment=augment)
    assert calls == [8] * 20  # 10 steps per network, whole batches
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_brier_criterion_is_the_mean_squared_distance_of_probabilities_from_the_truth(tiny_file: Callable[..., Path]) -> None:
    _, validation = _data(tiny_file)
    network = _network()
    probabilities = predict(network, validation, Task.CLASSIFICATION)
    truth = np.eye(3)[validation.labels.numpy()]
    expected = float(((probabilities - truth) ** 2).sum(axis=1).mean())
    assert validation_loss(network, validation, Task.CLASSIFICATION, criterion="brier") == pytest.approx(expected, rel=1e-5)
    assert validation_loss(network, validation, Task.CLASSIFICATION, criterion="loss") != pytest.approx(expected, rel=1e-2)
