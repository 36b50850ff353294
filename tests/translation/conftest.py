"""Tiny unpaired domains made in the test: flat "phantoms" (A) and noisy, blurred "CT" (B) of the same anatomy kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from augmentor.data.provenance import make_provenance, virtual_patient_ids
from augmentor.data.writer import H5Writer

torch.set_num_threads(1)

LABEL_NAMES = ("background", "body", "liver", "kidney")
TISSUE_HU = np.array([-1000.0, 40.0, 100.0, 180.0])  # by label
WINDOW = (-1000.0, 1000.0)


def anatomy(size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size) label map: an elliptic body holding a liver disc and a kidney disc."""
    rows, columns = np.mgrid[:size, :size] / size
    labels = np.zeros((size, size), np.uint8)
    body = ((rows - 0.5) / rng.uniform(0.3, 0.4)) ** 2 + ((columns - 0.5) / rng.uniform(0.35, 0.45)) ** 2 < 1
    labels[body] = 1
    liver = (rows - rng.uniform(0.4, 0.5)) ** 2 + (columns - rng.uniform(0.3, 0.4)) ** 2 < rng.uniform(0.1, 0.14) ** 2
    kidney = (rows - rng.uniform(0.55, 0.6)) ** 2 + (columns - rng.uniform(0.62, 0.68)) ** 2 < rng.uniform(0.06, 0.08) ** 2
    labels[liver & body] = 2
    labels[kidney & body] = 3
    return labels


def write_domain(path: Path, count: int = 6, size: int = 32, seed: int = 0, ct_like: bool = False, labelled: bool = True,
                 spacing: float = 2.0, patient_prefix: str | None = None) -> Path:
    """Phantom slices (flat HU per label) or CT-like ones (noise and blur), with their label maps; two slices
    per patient, whose ids start with ``patient_prefix`` (default: "ct-" or "phantom-")."""
    prefix = patient_prefix if patient_prefix is not None else f"{'ct' if ct_like else 'phantom'}-"
    rng = np.random.default_rng(seed)
    masks = np.stack([anatomy(size, rng) for _ in range(count)]) if count else np.zeros((0, size, size), np.uint8)
    images = TISSUE_HU[masks]
    if ct_like:
        from scipy.ndimage import gaussian_filter

        images = np.stack([gaussian_filter(image, 0.8) for image in images]).reshape(images.shape) + rng.normal(0, 25, images.shape)
    with H5Writer(
        path, class_names=("abdomen",), image_shape=(1, size, size), source="real" if ct_like else "phantom",
        mask_label_names=LABEL_NAMES, pixel_spacing_mm=(spacing, spacing), hu_window=(-160.0, 240.0),
        provenance=make_provenance(seed=seed, patient_ids=virtual_patient_ids("the tests")), extras=("z_mm",),
    ) as writer:
        if count:
            writer.append(images[:, None], masks if labelled else np.zeros_like(masks),
                          np.zeros(count, np.int64),
                          [f"{prefix}{i // 2:03d}" for i in range(count)], extras={"z_mm": np.arange(count) * 5.0})
    return path


@pytest.fixture(scope="session")
def domains(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("domains")
    return write_domain(folder / "phantoms.h5", seed=0), write_domain(folder / "ct.h5", seed=1, ct_like=True)


TINY_RECIPE_OVERRIDES = ["train.steps=4", "train.checkpoint_every=2", "train.sample_every=2", "train.log_every=1"]


@pytest.fixture(scope="session")
def tiny_model(domains: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CycleGAN (4 steps) with its reverse generator and judge."""
    from augmentor.recipes import load_recipe
    from augmentor.translation.train import train_cyclegan

    out = tmp_path_factory.mktemp("models") / "tiny-cyclegan"
    recipe = load_recipe("tiny-cyclegan", TINY_RECIPE_OVERRIDES, expect="cyclegan")
    return train_cyclegan(recipe, domains[0], domains[1], out, device="cpu", progress=False)


@pytest.fixture
def domain_file(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, **options: object) -> Path:
        return write_domain(tmp_path / name, **options)  # type: ignore[arg-type]

    return make
