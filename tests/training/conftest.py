"""Tiny labelled data written with the real writer, and single-threaded torch for small, shared CPUs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from augmentor.data.writer import H5Writer

# Tiny networks gain nothing from a second thread, and with several test workers on two shared cores
# extra threads only wait on each other.
torch.set_num_threads(1)

CLASS_NAMES = ("round", "square")


def write_tiny_dataset(path: Path, count: int = 32, size: int = 16, seed: int = 0, patient_prefix: str = "patient") -> Path:
    """Two classes of bright shapes on a flat background, with their masks; two samples per patient
    (ids ``{patient_prefix}-000``, ...)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:size, :size]
    images = np.empty((count, 1, size, size), np.int16)
    masks = np.zeros((count, size, size), np.uint8)
    labels = np.arange(count) % 2
    for i in range(count):
        centre_row, centre_column = rng.uniform(size * 0.3, size * 0.7, 2)
        radius = rng.uniform(size * 0.15, size * 0.3)
        if labels[i] == 0:
            inside = (rows - centre_row) ** 2 + (columns - centre_column) ** 2 < radius**2
        else:
            inside = (abs(rows - centre_row) < radius) & (abs(columns - centre_column) < radius)
        masks[i] = inside
        images[i, 0] = np.where(inside, 150 if labels[i] else 0, 60) + rng.normal(0, 15, (size, size))
    with H5Writer(path, class_names=CLASS_NAMES, image_shape=(1, size, size), hu_window=(-160.0, 240.0)) as writer:
        writer.append(images, masks, labels, [f"{patient_prefix}-{i // 2:03d}" for i in range(count)])
    return path


@pytest.fixture(scope="session")
def tiny_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny.h5")


class SimulatedCrash(Exception):
    """Raised inside a training step by :func:`crash_at_update`."""


def crash_at_update(monkeypatch: pytest.MonkeyPatch, algorithm_class: type, number: int, run: Callable[[], object]) -> None:
    """Call ``run`` (a training run) with ``algorithm_class.update`` raising :class:`SimulatedCrash` at its ``number``-th
    call, as a killed process would stop mid-run; the update is restored afterwards."""
    original = algorithm_class.update
    calls = {"count": 0}

    def crashing_update(self, batch):  # type: ignore[no-untyped-def]
        calls["count"] += 1
        if calls["count"] == number:
            raise SimulatedCrash
        return original(self, batch)

    monkeypatch.setattr(algorithm_class, "update", crashing_update)
    with pytest.raises(SimulatedCrash):
        run()
    monkeypatch.setattr(algorithm_class, "update", original)
