"""Model directories: weights + card round trip, SHA-256 checks, one-line errors, nothing unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from augmentor.errors import AugmentorError
from augmentor.models import MODEL_CARD, MODEL_WEIGHTS, ConditionalDCGANGenerator, load_generator, save_model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    generator = ConditionalDCGANGenerator(num_classes=2, latent_dim=8, image_size=16, base_channels=4)
    save_model(tmp_path / "model", generator, {"class_names": ["a", "b"], "hu_window": [-160.0, 240.0]})
    return tmp_path / "model"


def test_round_trip_rebuilds_from_the_card(model_dir: Path) -> None:
    network, card = load_generator(model_dir)
    assert card["architecture"]["family"] == "dcgan-generator"
    assert card["class_names"] == ["a", "b"]
    assert card["weights_dtype"] == "float16"
    assert not network.training
    with torch.no_grad():
        pairs = network(torch.randn(2, 8), torch.tensor([0, 1]))
    assert pairs.shape == (2, 2, 16, 16)


def test_flipped_byte_is_a_one_line_sha_error(model_dir: Path) -> None:
    weights = model_dir / MODEL_WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(AugmentorError) as error:
        load_generator(model_dir)
    assert "SHA-256" in str(error.value) and "\n" not in str(error.value)


def test_corrupt_file_with_matching_card_is_a_one_line_error(model_dir: Path) -> None:
    from augmentor.data.provenance import sha256_file

    weights = model_dir / MODEL_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    card = json.loads((model_dir / MODEL_CARD).read_text())
    card["weights_sha256"] = sha256_file(weights)
    (model_dir / MODEL_CARD).write_text(json.dumps(card))
    with pytest.raises(AugmentorError, match="cannot load weights") as error:
        load_generator(model_dir)
    assert "\n" not in str(error.value)


def test_missing_pieces(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(AugmentorError, match="not found"):
        load_generator(tmp_path / "nowhere")
    (model_dir / MODEL_WEIGHTS).unlink()
    with pytest.raises(AugmentorError, match="weights file missing"):
        load_generator(model_dir)
