"""The memorisation audit flags copies of training images and leaves fresh samples alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.data.provenance import make_provenance, sha256_file
from augmentor.data.reader import H5File
from augmentor.data.writer import H5Writer
from augmentor.generate import generate
from evaluation.memorisation import audit


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
    assert all(pair["flagged"] and pair["pixel_rms"] == 0.0 for pair in memorisation["closest_pairs"])
    assert "closest pairs" in (out / "report.html").read_text()


def test_fresh_samples_alone_are_not_flagged() -> None:
    generator = np.random.default_rng(0)
    training = generator.uniform(-1, 1, size=(40, 1, 8, 8)).astype(np.float32)
    test = generator.uniform(-1, 1, size=(200, 1, 8, 8)).astype(np.float32)
    fresh = generator.uniform(-1, 1, size=(50, 1, 8, 8)).astype(np.float32) * 0.5 + 0.5  # a different distribution
    copies = training[:5] + generator.normal(0, 1e-3, size=(5, 1, 8, 8)).astype(np.float32)  # near-copies (tiny noise)

    def embed(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1)[:, ::2]  # any fixed feature map

    result = audit(training, test, [fresh, copies], embed, percentile=1.0)
    assert not result.flagged[:50].any()
    assert result.flagged[50:].all()
    assert (result.synthetic_neighbour[50:] == np.arange(5)).all()
    summary = result.summary(closest_pairs=3)
    assert summary["near_copies"] == 5 and summary["exact_copies"] == 0
    assert [pair["synthetic_index"] for pair in summary["closest_pairs"]] == sorted(
        [pair["synthetic_index"] for pair in summary["closest_pairs"]], key=lambda i: result.synthetic_pixel[i]
    )
