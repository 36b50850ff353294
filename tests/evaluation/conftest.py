"""Tiny real-like files (train and test from disjoint patients, written by the root conftest's ``tiny_file``),
tiny untrained generators whose cards say what they were trained on, and the ``augment evaluate`` command
on the tiny recipe: everything the evaluation tests need, made in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from augmentor.data.provenance import sha256_file, sha256_text
from augmentor.data.reader import H5File
from augmentor.models.card import save_model
from augmentor.models.dcgan import ConditionalDCGANGenerator
from cli import app

torch.set_num_threads(1)

CLASSES = ["cyst", "metastasis", "hemangioma"]


@dataclass(frozen=True)
class TinyInputs:
    """Paths of the tiny train/test files and of a tiny model trained (says its card) on the train file."""

    train: Path
    test: Path
    model: Path

    def overrides(self, *extra: str) -> list[str]:
        """``--set`` overrides that point the tiny recipe at these inputs (``extra`` applied last)."""
        return ['data.cohort=""', f'data.train=["{self.train}"]', f'data.test=["{self.test}"]', f"synthetic.model={self.model}", *extra]


def training_record(train: Path) -> dict[str, object]:
    """The card's ``training_data`` for a model trained on every sample of ``train``."""
    return {"path": str(train), "sha256": sha256_file(train), "patients_sha256": sha256_text(H5File(train).patient_ids().tolist())}


def save_tiny_generator(folder: Path, training_data: dict[str, object], seed: int = 0) -> Path:
    """An untrained, seeded 16x16 generator saved as a model directory with the given training data record."""
    torch.manual_seed(seed)
    network = ConditionalDCGANGenerator(num_classes=3, latent_dim=8, image_size=16, base_channels=4, embedding_dim=4)
    with torch.no_grad():  # widen DCGAN's N(0, 0.02) initialisation so samples differ from each other
        for parameter in network.parameters():
            parameter.normal_(0.0, 0.4)
    save_model(
        folder,
        network.eval(),
        {"class_names": CLASSES, "hu_window": [-160.0, 240.0], "algorithm": "cgan", "training_data": training_data},
        dtype=torch.float32,
    )
    return folder


@pytest.fixture
def tiny_generator(tmp_path: Path) -> Callable[[str, Path], Path]:
    """Factory: ``tiny_generator(name, trained_on)`` saves a tiny model whose card says it trained on ``trained_on``."""

    def make(name: str, trained_on: Path) -> Path:
        return save_tiny_generator(tmp_path / name, training_record(trained_on))

    return make


@pytest.fixture
def tiny_inputs(tiny_file: Callable[..., Path], tiny_generator: Callable[[str, Path], Path]) -> TinyInputs:
    train = tiny_file("train.h5", count=36, patients=12, seed=0, patient_prefix="train-")
    test = tiny_file("test.h5", count=24, patients=8, seed=1, patient_prefix="test-")
    return TinyInputs(train, test, tiny_generator("tiny-gan", train))


@pytest.fixture
def run_evaluate() -> Callable[..., tuple[int, str]]:
    """``run_evaluate(out, overrides, *flags)``: ``augment evaluate tiny-evaluate`` in-process -> (exit code, output)."""
    runner = CliRunner()

    def run(out: Path, overrides: list[str], *flags: str) -> tuple[int, str]:
        arguments = ["evaluate", "tiny-evaluate", "--out", str(out), *flags]
        for override in overrides:
            arguments += ["--set", override]
        result = runner.invoke(app, arguments)
        if result.exception is not None and result.exit_code not in (0, 2):
            raise result.exception
        return result.exit_code, result.output

    return run
