"""The models that ship with augmentor: listed, checksummed, and they draw lesions that look like their class.

These run the real shipped generators (a few dozen samples each, well under a second on a CPU). The
class checks are coarse, radiological facts the simulator builds in and a working conditional generator
must reproduce; a collapsed or unconditioned generator fails them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from augmentor.data.reader import H5File, read_info
from augmentor.generate import generate
from augmentor.zoo import SHIPPED_DIR, list_models, model_for_classes, resolve_model
from cli import app

runner = CliRunner()
SHIPPED = {"frid-adar-liver": ("cyst", "metastasis", "hemangioma"), "onishi-lung-dcgan": ("benign", "malignant")}
PER_CLASS = 32


@pytest.fixture(autouse=True)
def _no_user_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUGMENTOR_HOME", str(tmp_path / "home"))


def _samples(name: str, tmp_path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """PER_CLASS samples of every class of shipped model ``name``: {class: (HU images, masks)}."""
    out = generate(list(SHIPPED[name]), PER_CLASS, tmp_path / f"{name}.h5", model=name, seed=0, progress=False)
    file = H5File(out)
    images, masks, labels = file.read(list(range(file.info.num_samples)))
    return {cls: (images[labels == index, 0].astype(np.float64), masks[labels == index] > 0)
            for index, cls in enumerate(file.info.class_names)}


def test_shipped_models_are_listed_with_their_classes_and_stay_small() -> None:
    entries = {entry.name: entry for entry in list_models() if entry.origin == "shipped"}
    assert set(SHIPPED) <= set(entries)
    for name, classes in SHIPPED.items():
        entry = entries[name]
        assert entry.class_names == classes and entry.image_size == 64
        assert len(entry.weights_sha256) == 64 and len(entry.training_data_sha256) == 64
        card = entry.card
        assert card["steps"] > 0 and card["wall_time_s"] > 0 and card["final_losses"]
        assert "augment train" in card["command"]
    total = sum(path.stat().st_size for path in SHIPPED_DIR.rglob("*") if path.is_file())
    assert total <= 30 * 2**20


def test_a_class_name_finds_its_shipped_model() -> None:
    assert model_for_classes(["metastasis"]).name == "frid-adar-liver"
    assert model_for_classes(["malignant"]).name == "onishi-lung-dcgan"
    assert resolve_model("onishi-lung-dcgan").origin == "shipped"


def test_cli_generates_from_the_shipped_model_by_class_name(tmp_path: Path) -> None:
    out = tmp_path / "m.h5"
    result = runner.invoke(app, ["generate", "--class", "metastasis", "--n", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = read_info(out)
    assert info.num_samples == 5 and info.provenance["model"]["name"] == "frid-adar-liver"
    bad = runner.invoke(app, ["generate", "--class", "metastasys", "--n", "5", "--out", str(tmp_path / "x.h5")])
    assert bad.exit_code == 2 and "metastasis" in bad.output and not (tmp_path / "x.h5").exists()


def _lesion_hu(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean HU inside each sample's mask (samples with an empty mask are dropped)."""
    return np.array([image[mask].mean() for image, mask in zip(images, masks, strict=True) if mask.any()])


def _check_diverse_with_masks(images: np.ndarray, masks: np.ndarray) -> None:
    # Nearly every sample has a lesion mask, and of a plausible size (not the whole patch).
    areas = masks.mean(axis=(1, 2))
    assert (areas > 0).mean() >= 0.9
    assert np.median(areas[areas > 0]) < 0.5
    # No mode collapse: samples differ from each other far more than CT noise (~17 HU) would make them.
    pixel_spread = images.std(axis=0).mean()
    assert pixel_spread > 20.0, pixel_spread
    # Small round lesions may coincide pixel for pixel now and then, but not as a rule.
    assert len({mask.tobytes() for mask in masks}) >= 0.85 * len(masks)


def test_liver_model_draws_each_class_as_its_radiology(tmp_path: Path) -> None:
    samples = _samples("frid-adar-liver", tmp_path)
    for images, masks in samples.values():
        _check_diverse_with_masks(images, masks)
    cyst, metastasis, hemangioma = (np.median(_lesion_hu(*samples[c])) for c in SHIPPED["frid-adar-liver"])
    # Portal-venous phase: cysts near water, metastases hypodense to liver, hemangiomas enhancing.
    assert cyst < 45.0
    assert cyst < metastasis < hemangioma


def test_lung_model_draws_malignant_nodules_larger_than_benign(tmp_path: Path) -> None:
    samples = _samples("onishi-lung-dcgan", tmp_path)
    for images, masks in samples.values():
        _check_diverse_with_masks(images, masks)
    benign_area, malignant_area = (np.median(samples[c][1].sum(axis=(1, 2))) for c in SHIPPED["onishi-lung-dcgan"])
    assert malignant_area > benign_area
    # Solid nodules in aerated lung: lesion HU well above the parenchyma around it.
    for images, masks in samples.values():
        outside = np.array([image[~mask].mean() for image, mask in zip(images, masks, strict=True)])
        assert np.median(_lesion_hu(images, masks)) > np.median(outside) + 200.0
