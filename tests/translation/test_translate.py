"""``augment translate``: masks copied byte for byte, determinism, the safety scores reacting as they should, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch
from typer.testing import CliRunner

from augmentor.data.intensity import normalise
from augmentor.data.reader import H5File, read_info
from augmentor.translation.safety import (
    HallucinationTally,
    ensemble_disagreement,
    hallucination_per_image,
    judge_labels,
    steganography_probe,
)
from augmentor.translation.translate import translate
from cli import app
from tests.one_line import assert_one_line_error
from tests.translation.conftest import LABEL_NAMES, TISSUE_HU, WINDOW, anatomy

runner = CliRunner()


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        arrays = {name: handle[name][...] for name in ("images", "masks", "labels", "patient_ids")}
        arrays.update({f"extras/{name}": handle["extras"][name][...] for name in handle["extras"]})
    return arrays


def test_translate_keeps_the_masks_and_is_deterministic(tiny_model: Path, domains: tuple[Path, Path], tmp_path: Path) -> None:
    phantoms = domains[0]
    first = translate(tiny_model, phantoms, tmp_path / "one.h5", ensemble=[tiny_model], seed=3, batch_size=64, progress=False)
    again = translate(tiny_model, phantoms, tmp_path / "two.h5", ensemble=[tiny_model], seed=3, batch_size=5, progress=False)
    source, one, two = _arrays(phantoms), _arrays(first.path), _arrays(again.path)
    assert one["masks"].tobytes() == source["masks"].tobytes()  # byte for byte
    assert np.array_equal(one["labels"], source["labels"]) and np.array_equal(one["patient_ids"], source["patient_ids"])
    assert np.array_equal(one["extras/z_mm"], source["extras/z_mm"])
    assert not np.array_equal(one["images"], source["images"])  # translated
    for key in one:  # same bytes whatever the batch size
        assert one[key].tobytes() == two[key].tobytes(), key
    info = read_info(first.path)
    assert info.source.value == "translated" and info.image_shape == (1, 32, 32)
    assert info.provenance["details"]["translation"]["resized"] is False
    safety = info.provenance["details"]["safety"]
    assert safety == first.safety and set(safety["hallucination"]["dice"]) <= set(LABEL_NAMES[1:])
    assert one["extras/ensemble_disagreement_map"].shape == (6, 32, 32)
    assert np.all(one["extras/ensemble_disagreement_hu"] == 0)  # a model agrees with itself
    assert np.all(one["extras/steganography_amplification"] > 0)


def test_translate_works_at_another_size(tiny_model: Path, domain_file, tmp_path: Path) -> None:
    larger = domain_file("larger.h5", size=44, count=3)
    result = translate(tiny_model, larger, tmp_path / "larger-translated.h5", progress=False)
    translated = H5File(result.path)
    assert translated.info.image_shape == (1, 44, 44)
    assert translated.read([0, 1, 2])[1].tobytes() == H5File(larger).read([0, 1, 2])[1].tobytes()


class NearestTissue(torch.nn.Module):
    """A stand-in judge that knows the tissues by their CT number: logits = -|x - tissue level|."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        levels = torch.as_tensor(normalise(torch.tensor(TISSUE_HU, dtype=torch.float32), WINDOW)).view(1, -1, 1, 1)
        return -(images - levels).abs()


def _score(images_hu: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    images = torch.as_tensor(normalise(torch.from_numpy(images_hu).float(), WINDOW))[:, None]
    predicted = judge_labels(NearestTissue(), images)
    per_image = hallucination_per_image(predicted, torch.from_numpy(labels), len(LABEL_NAMES), 4.0)
    tally = HallucinationTally(LABEL_NAMES)
    tally.add(predicted, torch.from_numpy(labels), per_image["hallucinated_area_mm2"])
    summary = tally.summary()
    return {**summary["dice"], "mean": float(per_image["dice_mean"].mean()), "hallucinated": summary["hallucinated_area_mm2_per_slice"]}


def test_hallucination_score_worsens_when_a_structure_is_painted_in_or_erased() -> None:
    labels = np.stack([anatomy(48, np.random.default_rng(seed)) for seed in range(3)])
    faithful = TISSUE_HU[labels]
    clean = _score(faithful, labels)
    assert clean["liver"] == clean["kidney"] == clean["mean"] == 1.0 and clean["hallucinated"] == 0.0

    painted = faithful.copy()
    painted[:, 2:8, 20:28] = TISSUE_HU[3]  # a kidney-like blob where the phantom has body or air
    scores = _score(painted, labels)
    assert scores["kidney"] < clean["kidney"] and scores["mean"] < clean["mean"]
    assert scores["hallucinated"] > 0  # tissue where the labels say there is none

    erased = faithful.copy()
    erased[labels == 2] = TISSUE_HU[1]  # the liver erased into the body around it
    scores = _score(erased, labels)
    assert "liver" not in scores or scores["liver"] == 0.0
    assert scores["mean"] < clean["mean"]


def test_steganography_probe_flags_a_reverse_generator_that_amplifies_hidden_signal() -> None:
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(2, 1, 32, 32, generator=generator) * 2 - 1
    noise = torch.randn(2, 1, 32, 32, generator=generator) * 0.004

    def honest(images: torch.Tensor) -> torch.Tensor:  # a smooth mapping: moves as much as its input, or less
        return torch.nn.functional.avg_pool2d(images, 3, 1, 1)

    laplacian = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)

    def steganographic(images: torch.Tensor) -> torch.Tensor:  # reads fine detail back out, strongly amplified
        return images + 40 * torch.nn.functional.conv2d(images, laplacian, padding=1)

    calm = steganography_probe(honest, source, source, noise, 1000.0)
    hiding = steganography_probe(steganographic, source, source, noise, 1000.0)
    assert float(calm["amplification"].max()) <= 1.0
    assert float(hiding["amplification"].min()) > 20 * float(calm["amplification"].max())


def test_ensemble_disagreement_is_zero_for_agreement_and_maps_where_models_differ() -> None:
    base = torch.zeros(2, 1, 8, 8)
    spread, score = ensemble_disagreement([base, base.clone(), base.clone()])
    assert spread.shape == (2, 8, 8) and float(score.abs().max()) == 0.0
    other = base.clone()
    other[1, 0, :4, :4] = 30.0  # one model differs on part of slice 1
    spread, score = ensemble_disagreement([base, other])
    assert float(score[0]) == 0.0 and float(score[1]) > 0
    assert float(spread[1, :4, :4].min()) > 0 and float(spread[1, 4:, 4:].max()) == 0.0


def test_translate_bad_inputs_are_one_line(tiny_model: Path, domains: tuple[Path, Path], domain_file, tmp_path: Path) -> None:
    phantoms = domains[0]
    out = ["--out", str(tmp_path / "out.h5")]
    lesion_model = Path(__file__).resolve().parents[2] / "augmentor" / "zoo" / "weights" / "frid-adar-liver"
    assert_one_line_error(runner.invoke(app, ["translate", "--model", str(lesion_model), "--input", str(phantoms), *out]),
                          "dcgan-generator", "CycleGAN")
    empty = domain_file("empty.h5", count=0)
    assert_one_line_error(runner.invoke(app, ["translate", "--model", str(tiny_model), "--input", str(empty), *out]), "holds no samples")
    assert_one_line_error(runner.invoke(app, ["translate", "--model", str(tmp_path / "nowhere"), "--input", str(phantoms), *out]),
                          "unknown model")
    result = runner.invoke(app, ["translate", "--model", str(tiny_model), "--input", str(phantoms), *out])
    assert result.exit_code == 0, result.output
    assert "hallucination: mean Dice" in result.output and "steganography probe" in result.output
    assert_one_line_error(runner.invoke(app, ["translate", "--model", str(tiny_model), "--input", str(phantoms), *out]), "--overwrite")
    card = json.loads((tiny_model / "model.json").read_text())
    assert card["translation"]["segmenter"] == "segmenter"


def test_generate_refuses_a_translation_model_in_one_line(tiny_model: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["generate", "--model", str(tiny_model), "--class", "abdomen", "--n", "2", "--out", str(tmp_path / "g.h5")])
    assert_one_line_error(result, "translation model", "augment translate")
