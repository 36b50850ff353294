"""The memorisation audit flags copies of training images (also flipped, rotated or shifted ones) and flags
fresh samples of the real distribution only at its chance rate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from augmentor.data.provenance import make_provenance, sha256_file
from augmentor.data.reader import H5File
from augmentor.data.writer import H5Writer
from augmentor.generate import generate
from evaluation.memorisation import audit, dihedral_transforms


def _copies_of(train: Path, out: Path, count: int) -> Path:
    """A 'synthetic' file whose first ``count`` samples are exact copies of training samples."""
    images, masks, labels = H5File(train).read(np.arange(count))
    record = {"name": "copycat", "trained_on_sha256": sha256_file(train), "trained_on_path": str(train)}
    with H5Writer(out, class_names=["cyst", "metastasis", "hemangioma"], image_shape=images.shape[1:], source="synthetic",
                  provenance=make_provenance(seed=0, model=record), with_patient_ids=False) as writer:
        writer.append(images, masks, labels)
    return out


def test_copies_are_flagged_and_fresh_samples_are_not(tiny_inputs: Any, run_evaluate: Callable[..., tuple[int, str]], tmp_path: Path) -> None:
    copies = _copies_of(tiny_inputs.train, tmp_path / "copies.h5", 12)
    fresh = generate("all", 12, tmp_path / "fresh.h5", model=tiny_inputs.model, seed=3, progress=False)
    out = tmp_path / "report"
    code, output = run_evaluate(
        out,
        tiny_inputs.overrides(
            'synthetic.model=""', f'synthetic.files=["{copies}", "{fresh}"]', 'arms.classification=["real"]', "arms.segmentation=[]",
            "train.seeds=[0]", "fidelity.enabled=false",
        ),
    )
    assert code == 0, output
    memorisation = json.loads((out / "report.json").read_text())["memorisation"]
    assert memorisation["synthetic_audited"] == 12 + 36
    assert memorisation["flagged_synthetic_indices"] == list(range(12))  # the pool is copies.h5, then fresh.h5
    assert memorisation["near_copies"] == memorisation["exact_copies"] == 12
    assert all(pair["flagged"] and pair["pixel_rms"] == 0.0 and pair["transform"] == "identity" for pair in memorisation["closest_pairs"])
    assert "closest pairs" in (out / "report.html").read_text()


def _canvases(generator: np.random.Generator, count: int, size: int = 40) -> np.ndarray:
    """Textured scenes with a few soft blobs, (count, 1, size, size) in [-1, 1]: crops of them are the samples."""
    rows, columns = np.mgrid[:size, :size]
    scenes = np.zeros((count, 1, size, size), np.float32)
    for scene in scenes:
        texture = 1.5 * gaussian_filter(generator.normal(size=(size, size)), 2.0)
        blobs = sum(
            generator.uniform(-1, 1) * np.exp(-((rows - generator.uniform(8, 32)) ** 2 + (columns - generator.uniform(8, 32)) ** 2) / (2 * generator.uniform(2, 6) ** 2))
            for _ in range(3)
        )
        scene[0] = np.clip(texture + blobs + 0.05 * generator.normal(size=(size, size)), -1, 1)
    return scenes


def _crop(scenes: np.ndarray, rows: int = 0, columns: int = 0) -> np.ndarray:
    """The central 32x32 of 40x40 scenes, moved by (rows, columns) pixels."""
    return np.ascontiguousarray(scenes[..., 4 + rows : 36 + rows, 4 + columns : 36 + columns])


def _pooled(images: np.ndarray) -> np.ndarray:
    """A fixed feature map that is not flip-invariant (8x8 block means)."""
    return torch.nn.functional.avg_pool2d(torch.from_numpy(np.ascontiguousarray(images)), 8).flatten(1).numpy()


def test_flipped_rotated_and_shifted_copies_are_flagged_fresh_samples_at_chance() -> None:
    generator = np.random.default_rng(0)
    scenes = _canvases(generator, 60)
    training, test, fresh = _crop(scenes), _crop(_canvases(generator, 200)), _crop(_canvases(generator, 400))
    copies = np.stack([
        training[0, :, :, ::-1],  # flipped left-right
        training[1, :, ::-1],  # flipped up-down
        np.rot90(training[2], 1, axes=(1, 2)),
        _crop(scenes[3], 2, 0),  # the training scene, 2 pixels further down: new content at one edge
        _crop(scenes[4], -2, 2),
        _crop(scenes[5], 1, -1),
    ])
    result = audit(training, test, [fresh, copies], _pooled, percentile=10.0)
    assert result.flagged[400:].all()
    assert (result.synthetic_neighbour[400:] == np.arange(6)).all()
    names = [result.transform_names[t] for t in result.synthetic_transform[400:]]
    assert names == ["flip-left-right", "flip-up-down", "rotate-90", "identity", "identity", "identity"]
    assert result.synthetic_shift[400:].tolist() == [[0, 0], [0, 0], [0, 0], [-2, 0], [2, -2], [-1, 1]]
    assert (result.synthetic_pixel[400:] == 0).all()
    # New samples of the same distribution: each space flags ~5 %, the rule at most ~10 %, as on the test set.
    assert 0.04 <= result.flagged[:400].mean() <= 0.16
    assert 0.04 <= result.test_flagged.mean() <= 0.10
    summary = result.summary(closest_pairs=6)
    assert summary["near_copies"] == int(result.flagged.sum()) and summary["exact_copies"] == 6
    assert summary["expected_by_chance"] == 0.1 and summary["percentile_per_space"] == 5.0
    assert {pair["transform"] for pair in summary["closest_pairs"]} == {"flip-left-right", "flip-up-down", "rotate-90", "identity"}


def test_one_space_suffices_and_other_distributions_are_left_alone() -> None:
    generator = np.random.default_rng(1)
    training, test = _crop(_canvases(generator, 40)), _crop(_canvases(generator, 200))
    other = 0.3 * _crop(_canvases(generator, 50)) + 0.5  # another distribution: far in both spaces
    # copies under heavy noise: too far in pixel space, but the 8x8 block means average the noise away
    noisy_copies = training[:5] + generator.normal(0, 0.5, size=training[:5].shape).astype(np.float32)
    result = audit(training, test, [other, noisy_copies], _pooled, percentile=1.0)
    assert not result.flagged[:50].any()
    assert result.flagged[50:].all()
    assert (result.synthetic_pixel[50:] > result.threshold_pixel).all() and (result.synthetic_feature[50:] < result.threshold_feature).all()
    assert (result.synthetic_neighbour[50:] == np.arange(5)).all()
    summary = result.summary(closest_pairs=3)
    assert summary["near_copies"] == 5 and summary["below_feature"] == 5 and summary["below_pixel"] == summary["exact_copies"] == 0
    assert [pair["synthetic_index"] for pair in summary["closest_pairs"]] == sorted(
        [pair["synthetic_index"] for pair in summary["closest_pairs"]], key=lambda i: result.synthetic_pixel[i]
    )


def test_rectangular_images_use_the_four_shape_keeping_transforms() -> None:
    assert [name for name, _ in dihedral_transforms(16, 24)] == ["identity", "flip-left-right", "rotate-180", "flip-up-down"]
    assert len(dihedral_transforms(16, 16)) == 8
    image = np.arange(6.0).reshape(1, 1, 2, 3)
    for _, transform in dihedral_transforms(2, 3):
        assert transform(image).shape == image.shape
