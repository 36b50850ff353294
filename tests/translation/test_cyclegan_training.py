"""CycleGAN training: the update rule, its parts, and ``augment train`` with two domains."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from augmentor.recipes import load_recipe
from augmentor.training.cyclegan import ImagePool, linear_decay
from augmentor.training.losses import discriminator_loss, generator_loss
from augmentor.translation.train import train_cyclegan
from cli import app
from tests.one_line import assert_one_line_error

runner = CliRunner()


def test_least_squares_losses_are_the_published_ones() -> None:
    real, fake = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5])
    assert discriminator_loss(real, fake, "least-squares").item() == pytest.approx(0.5 * (0.125 + 0.125))
    assert generator_loss(fake, "least-squares").item() == pytest.approx((1.0 + 0.25) / 2)
    assert discriminator_loss(torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3), "least-squares").item() == 0.0  # patch maps


def test_learning_rate_is_constant_then_decays_linearly() -> None:
    factors = [linear_decay(step, 10, 0.5) for step in range(10)]
    assert factors[:5] == [1.0] * 5
    assert all(later < earlier for earlier, later in itertools.pairwise(factors[4:]))
    assert factors[-1] == pytest.approx(1 / 6)  # the reference's 1 - k / (n_decay + 1): never quite zero


def test_image_pool_fills_then_swaps_half_the_time() -> None:
    pool = ImagePool(4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returned as they are
    fresh = torch.arange(100.0, 300.0).view(200, 1, 1, 1)
    returned = pool.query(fresh)
    swapped = returned != fresh
    assert 70 < swapped.sum().item() < 130  # each fake swapped for an older one with probability 1/2
    assert bool((returned[swapped] < fresh[swapped]).all())  # what comes back instead is older
    assert ImagePool(0, seed=0).query(first) is first


def test_losses_move_and_a_resumed_run_continues_exactly(domains: tuple[Path, Path], tmp_path: Path) -> None:
    overrides = ["train.steps=4", "train.checkpoint_every=2", "train.sample_every=2", "train.log_every=1", "train.structure_consistency=true"]
    recipe = load_recipe("tiny-cyclegan", overrides, expect="cyclegan")
    straight = train_cyclegan(recipe, *domains, tmp_path / "straight", device="cpu", progress=False)
    lines = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    for key in ("generator_loss", "discriminator_a_loss", "discriminator_b_loss", "cycle_l1", "judge_loss", "shape_consistency",
                "shape_consistency_b_to_a", "structure_segmenter_loss", "structure_segmenter_a_loss"):
        assert len({round(line[key], 6) for line in lines}) > 1, key  # every loss moves
    assert lines[-1]["lr_factor"] < 1.0  # the linear decay has begun
    assert sorted(p.name for p in (straight / "samples").iterdir()) == ["step-00000002.png", "step-00000004.png"]

    # the same run killed after its step-2 checkpoint, then resumed
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    for leftover in [*(resumed / "checkpoints").glob("step-00000004.*"), resumed / "model.json", resumed / "model.safetensors"]:
        leftover.unlink()
    shutil.rmtree(resumed / "reverse")
    train_cyclegan(recipe, *domains, resumed, resume=True, device="cpu", progress=False)
    for part in ("model.safetensors", "reverse/model.safetensors", "segmenter/model.safetensors"):
        a, b = load_file(straight / part), load_file(resumed / part)
        assert all(torch.equal(a[key], b[key]) for key in a), part
    card = json.loads((straight / "model.json").read_text())
    assert card["algorithm"] == "cyclegan" and card["architecture"]["family"] == "resnet-generator"
    assert card["translation"]["structure_consistency"] is True and card["training_data"]["domain_a"]["num_samples"] == 6


def test_the_b_to_a_shape_term_moves_only_the_b_to_a_generator() -> None:
    """Zhang et al. 2018's second half, CE(S_A(G_BA(b)), y_b): with it, one step changes G_BA and leaves G_AB as
    it would be without it (the two generators share one Adam, so any leak into G_AB would show)."""
    from augmentor.training.device import resolve_precision
    from augmentor.training.unpaired import DomainKey
    from augmentor.translation.train import build_cyclegan

    recipe = load_recipe("tiny-cyclegan", ["train.structure_consistency=true", "train.lambda_structure=5.0"], expect="cyclegan")
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 4, (2, 2, 1, 32, 32), generator=generator)
    batch = {DomainKey.IMAGE_A.value: torch.rand(2, 1, 32, 32, generator=generator) * 2 - 1, DomainKey.MASK_A.value: masks[0],
             DomainKey.IMAGE_B.value: torch.rand(2, 1, 32, 32, generator=generator) * 2 - 1, DomainKey.MASK_B.value: masks[1]}
    both, one_half = (build_cyclegan(recipe, judge=False, structure=True, num_labels=4, device=device, precision=resolve_precision("off", device))
                      for _ in range(2))
    one_half.structure_segmenter_a = None  # the A -> B half only
    metrics = both.train_step(batch)
    one_half.train_step(batch)
    assert metrics["shape_consistency_b_to_a"] > 0 and "structure_segmenter_a_loss" in metrics
    same = [torch.equal(a, b) for a, b in zip(both.generator_ab.parameters(), one_half.generator_ab.parameters(), strict=True)]
    moved = [torch.equal(a, b) for a, b in zip(both.generator_ba.parameters(), one_half.generator_ba.parameters(), strict=True)]
    assert all(same) and not all(moved)


def test_train_command_takes_two_domains(domains: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli-run"
    args = ["train", "tiny-cyclegan", "--data-a", str(domains[0]), "--data-b", str(domains[1]), "--out", str(out),
            "--device", "cpu", "--set", "train.steps=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "reverse" / "model.json").is_file() and (out / "segmenter" / "model.json").is_file()


def test_train_command_bad_inputs_are_one_line(domains: tuple[Path, Path], domain_file, tmp_path: Path) -> None:
    a, b = domains
    out = ["--out", str(tmp_path / "x")]
    assert_one_line_error(runner.invoke(app, ["train", "tiny-cyclegan", "--data-a", str(a), *out]), "missing option --data-b")
    assert_one_line_error(runner.invoke(app, ["train", "tiny-cyclegan", "--data", str(a), *out]), "--data-a", "not --data")
    assert_one_line_error(runner.invoke(app, ["train", "tiny-cgan", "--data-a", str(a), "--data-b", str(b), *out]), "cyclegan recipes")
    assert_one_line_error(runner.invoke(app, ["train", "tiny-cgan", *out]), "missing option --data")
    bigger = domain_file("big.h5", size=40, ct_like=True)
    assert_one_line_error(runner.invoke(app, ["train", "tiny-cyclegan", "--data-a", str(a), "--data-b", str(bigger), *out]),
                          "32x32", "40x40", "same image size")
    empty = domain_file("empty.h5", count=0)
    assert_one_line_error(runner.invoke(app, ["train", "tiny-cyclegan", "--data-a", str(empty), "--data-b", str(b), *out]),
                          "empty.h5", "holds no samples")
    unlabelled = domain_file("unlabelled.h5", ct_like=True, labelled=False)
    assert_one_line_error(runner.invoke(app, ["train", "tiny-cyclegan", "--data-a", str(a), "--data-b", str(unlabelled), *out,
                                              "--set", "train.structure_consistency=true"]), "needs organ labels")
    assert not (tmp_path / "x").exists()


def test_shipped_cyclegan_recipes_load_and_the_published_one_is_the_published_size() -> None:
    published = load_recipe("cyclegan-published", expect="cyclegan")
    assert (published.model.generator_channels, published.model.residual_blocks, published.model.discriminator_channels) == (64, 9, 64)
    assert (published.train.lambda_cycle, published.train.lambda_identity, published.train.pool_size, published.train.lr) == (10.0, 0.5, 50, 2e-4)
    assert published.train.betas == (0.5, 0.999) and published.train.loss == "least-squares"
    slim = load_recipe("cyclegan-phantom-ct", expect="cyclegan")
    assert slim.model.image_size == 128 and slim.model.generator_channels < 64
    with pytest.raises(Exception, match="did you mean 'lambda_cycle'"):
        load_recipe("cyclegan-phantom-ct", ["train.lambda_cycles=3"], expect="cyclegan")
