"""End to end on the tiny recipes: losses move, the card is complete, resume is exact, outputs are guarded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from augmentor.data.provenance import sha256_file
from augmentor.errors import AugmentorError, OutputExistsError
from augmentor.models import MODEL_CARD, MODEL_WEIGHTS, build_network, load_generator
from augmentor.recipes import load_recipe
from augmentor.training.cgan import ConditionalGAN
from augmentor.training.checkpoint import list_checkpoints
from augmentor.training.run import train
from augmentor.training.trainer import METRICS_LOG
from augmentor.training.wgan_gp import WassersteinGP
from tests.training.conftest import crash_at_update

CLASS_NAMES = ("round", "square")  # as written by conftest.write_tiny_dataset


def metrics(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / METRICS_LOG).read_text().splitlines()]


def test_cgan_trains_and_writes_a_complete_model(tiny_h5: Path, tmp_path: Path) -> None:
    recipe = load_recipe("tiny-cgan", ["train.steps=30", "train.checkpoint_every=15", "train.sample_every=15", "train.log_every=5"])
    out = train(recipe, tiny_h5, tmp_path / "run", progress=False)
    log = metrics(out)
    assert [line["step"] for line in log] == [5, 10, 15, 20, 25, 30]
    first, last = log[0], log[-1]
    assert first["discriminator_loss"] != pytest.approx(last["discriminator_loss"], abs=1e-3)
    assert first["generator_loss"] != pytest.approx(last["generator_loss"], abs=1e-3)
    assert all(torch.isfinite(torch.tensor(list(line.values()))).all() for line in log)

    card = json.loads((out / MODEL_CARD).read_text())
    assert card["class_names"] == list(CLASS_NAMES)
    assert card["hu_window"] == [-160.0, 240.0]
    assert card["image_size"] == 16 and card["steps"] == 30 and card["algorithm"] == "cgan"
    assert card["training_data"]["sha256"] == sha256_file(tiny_h5)
    assert len(card["training_data"]["patients_sha256"]) == 64 and card["training_data"]["num_patients"] == 16
    assert card["weights_sha256"] == sha256_file(out / MODEL_WEIGHTS)
    assert card["recipe"]["train"]["steps"] == 30 and card["tool_version"]
    assert set(card["final_losses"]) == {"discriminator_loss", "generator_loss", "real_logit", "fake_logit"}
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-00000015.png", "step-00000030.png"]

    network, loaded_card = load_generator(out)
    rebuilt = build_network(card["architecture"]["family"], **card["architecture"]["config"])
    rebuilt.load_state_dict(load_file(str(out / MODEL_WEIGHTS)))
    rebuilt.eval()
    latents, labels = torch.randn(4, card["latent_dim"]), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        assert torch.equal(network(latents, labels), rebuilt(latents, labels))
    assert loaded_card == card


def test_wgan_gp_trains(tiny_h5: Path, tmp_path: Path) -> None:
    recipe = load_recipe("tiny-wgan-gp", ["train.steps=10", "train.log_every=5", "train.sample_every=0"])
    out = train(recipe, tiny_h5, tmp_path / "run", progress=False)
    log = metrics(out)
    assert set(log[0]) >= {"critic_loss", "generator_loss", "gradient_penalty", "wasserstein_distance"}
    assert log[0]["critic_loss"] != pytest.approx(log[-1]["critic_loss"], abs=1e-3)
    assert json.loads((out / MODEL_CARD).read_text())["algorithm"] == "wgan-gp"
    assert not (out / "samples").exists()



@pytest.mark.parametrize("name", ["tiny-cgan", "tiny-wgan-gp"])
def test_resume_reproduces_an_uninterrupted_run_bit_for_bit(
    name: str, tiny_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = ["train.steps=12", "train.checkpoint_every=4", "train.sample_every=4", "train.log_every=2", "train.keep_checkpoints=5"]
    recipe = load_recipe(name, overrides)
    straight = train(recipe, tiny_h5, tmp_path / "straight", progress=False)

    algorithm_class = ConditionalGAN if name == "tiny-cgan" else WassersteinGP
    # update 7: after the checkpoint at step 4, in the middle of the next interval
    crash_at_update(monkeypatch, algorithm_class, 7, lambda: train(recipe, tiny_h5, tmp_path / "resumed", progress=False))
    assert [step for step, _ in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == [4]
    resumed = train(recipe, tiny_h5, tmp_path / "resumed", resume=True, progress=False)

    assert (straight / MODEL_WEIGHTS).read_bytes() == (resumed / MODEL_WEIGHTS).read_bytes()
    for step in (8, 12):
        a = load_file(str(straight / "checkpoints" / f"step-{step:08d}.safetensors"))
        b = load_file(str(resumed / "checkpoints" / f"step-{step:08d}.safetensors"))
        assert a.keys() == b.keys()
        different = [key for key in a if not torch.equal(a[key], b[key])]
        assert not different, different
    assert [line["step"] for line in metrics(resumed)] == [line["step"] for line in metrics(straight)]
    strip = lambda lines: [{k: v for k, v in line.items() if k != "elapsed_s"} for line in lines]  # noqa: E731
    assert strip(metrics(resumed)) == strip(metrics(straight))


def test_resume_continues_to_more_steps(tiny_h5: Path, tmp_path: Path) -> None:
    short = load_recipe("tiny-cgan", ["train.steps=4", "train.checkpoint_every=4", "train.sample_every=0"])
    out = train(short, tiny_h5, tmp_path / "run", progress=False)
    longer = load_recipe("tiny-cgan", ["train.steps=8", "train.checkpoint_every=4", "train.sample_every=0"])
    train(longer, tiny_h5, out, resume=True, progress=False)
    assert json.loads((out / MODEL_CARD).read_text())["steps"] == 8


def test_resume_refuses_another_recipe(tiny_h5: Path, tmp_path: Path) -> None:
    recipe = load_recipe("tiny-cgan", ["train.steps=2", "train.sample_every=0"])
    out = train(recipe, tiny_h5, tmp_path / "run", progress=False)
    changed = load_recipe("tiny-cgan", ["train.steps=4", "train.sample_every=0", "train.batch_size=4"])
    with pytest.raises(AugmentorError, match=r"train\.batch_size was 8"):
        train(changed, tiny_h5, out, resume=True, progress=False)


def test_outputs_are_guarded(tiny_h5: Path, tmp_path: Path) -> None:
    recipe = load_recipe("tiny-cgan", ["train.steps=2", "train.sample_every=0"])
    out = train(recipe, tiny_h5, tmp_path / "run", progress=False)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train(recipe, tiny_h5, out, progress=False)
    with pytest.raises(AugmentorError, match="no run to resume"):
        train(recipe, tiny_h5, tmp_path / "other", resume=True, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AugmentorError, match="no intact checkpoint"):
        train(recipe, tiny_h5, tmp_path / "empty", resume=True, progress=False)
    train(recipe, tiny_h5, out, overwrite=True, progress=False)
    assert (out / MODEL_CARD).exists()


def test_a_refused_run_leaves_the_previous_one_and_creates_nothing(tiny_h5: Path, tmp_path: Path) -> None:
    recipe = load_recipe("tiny-cgan", ["train.steps=2", "train.sample_every=0"])
    out = train(recipe, tiny_h5, tmp_path / "run", progress=False)
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    with pytest.raises(AugmentorError, match="not found"):
        train(recipe, tmp_path / "missing.h5", out, overwrite=True, progress=False)
    with pytest.raises(AugmentorError, match=r"model\.image_size=16"):
        train(load_recipe("tiny-cgan", ["model.image_size=32"]), tiny_h5, out, overwrite=True, progress=False)
    assert {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    with pytest.raises(AugmentorError, match="not found"):
        train(recipe, tmp_path / "missing.h5", tmp_path / "new-run", progress=False)
    assert not (tmp_path / "new-run").exists()


def test_wrong_image_size_and_unknown_class(tiny_h5: Path, tmp_path: Path) -> None:
    with pytest.raises(AugmentorError, match=r"model\.image_size=16"):
        train(load_recipe("tiny-cgan", ["model.image_size=32"]), tiny_h5, tmp_path / "a", progress=False)
    with pytest.raises(AugmentorError, match="has no class 'oval'"):
        train(load_recipe("tiny-cgan", ["data.classes=['oval']"]), tiny_h5, tmp_path / "b", progress=False)


def test_class_subset_and_order(tiny_h5: Path, tmp_path: Path) -> None:
    recipe = load_recipe("tiny-cgan", ["train.steps=2", "train.sample_every=0", "data.classes=['square']"])
    out = train(recipe, tiny_h5, tmp_path / "run", progress=False)
    card = json.loads((out / MODEL_CARD).read_text())
    assert card["class_names"] == ["square"] and card["training_data"]["class_counts"] == {"square": 16}


@pytest.mark.parametrize("name", ["tiny-cgan", "tiny-wgan-gp"])
def test_bf16_autocast_path(name: str, tiny_h5: Path, tmp_path: Path) -> None:
    """The mixed-precision code path a GPU takes, exercised on the CPU with bf16 autocast."""
    recipe = load_recipe(name, ['train.mixed_precision="bf16"', "train.steps=3", "train.log_every=1", "train.sample_every=0"])
    out = train(recipe, tiny_h5, tmp_path / "run", progress=False)
    assert all(torch.isfinite(torch.tensor([v for k, v in line.items() if k != "step"])).all() for line in metrics(out))
    assert json.loads((out / MODEL_CARD).read_text())["precision"] == "bfloat16 autocast"
