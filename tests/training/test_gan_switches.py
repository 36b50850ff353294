"""The training switches of the mode-collapse study (issue #13): R1, LeCam, mask smoothing and logits, the
mask's background fill in DiffAugment, dihedral reals; each checked against a hand computation, and all of
them together through a run that resumes bit for bit."""

from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from augmentor.errors import AugmentorError, RecipeError
from augmentor.models import MODEL_CARD, MODEL_WEIGHTS
from augmentor.recipes import load_recipe
from augmentor.training import cgan as cgan_module
from augmentor.training.cgan import ConditionalGAN
from augmentor.training.checkpoint import list_checkpoints
from augmentor.training.data import InMemoryBatches, load_training_set
from augmentor.training.device import resolve_precision
from augmentor.training.diffaugment import AugmentParameters, DiffAugment, augment
from augmentor.training.dihedral import dihedral
from augmentor.training.distributed import Distributed, init_distributed, shutdown_distributed
from augmentor.training.losses import lecam_penalty, r1_penalty
from augmentor.training.run import build_algorithm, derive_seed, train
from tests.training.conftest import crash_at_update

CPU = torch.device("cpu")
ALL_SWITCHES = [
    "model.discriminator_normalization=none", "model.minibatch_std=true", "model.mask_output=logits", "model.upsample=resize",
    "model.embedding_init=unit", "train.r1_gamma=1", "train.r1_every=2", "train.lecam_weight=0.1", "train.mask_smoothing=0.1",
    "train.mask_background_fill=true", "train.real_dihedral=true", "model.noise_inputs=true", "train.ada_target=0.6",
    "train.ada_images=64",
]


def _algorithm(tiny_h5: Path, overrides: list[str]) -> ConditionalGAN:
    recipe = load_recipe("tiny-cgan", ["train.batch_size=8", *overrides], expect="gan")
    algorithm = build_algorithm(recipe, load_training_set(tiny_h5), CPU, resolve_precision("off", CPU))
    assert isinstance(algorithm, ConditionalGAN)
    return algorithm


def _batch(count: int = 8, size: int = 16) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    masks = (torch.rand(count, 1, size, size, generator=generator) > 0.7).to(torch.uint8)
    return {"image": torch.rand(count, 1, size, size, generator=generator) * 2 - 1, "mask": masks,
            "label": torch.arange(count) % 2}


# --- losses -----------------------------------------------------------------------------------------


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm() -> None:
    weight = torch.randn(2 * 4 * 4, requires_grad=True)
    real = torch.rand(5, 2, 4, 4)
    penalty = r1_penalty(lambda x: x.flatten(1) @ weight + 3.0, real)
    assert penalty.item() == pytest.approx(weight.detach().square().sum().item(), rel=1e-6)
    (gradient,) = torch.autograd.grad(penalty, weight)  # d||w||^2/dw = 2w: the penalty reaches D's parameters
    torch.testing.assert_close(gradient, 2 * weight.detach())


def test_r1_with_loss_scaling_is_the_unscaled_penalty() -> None:
    weight = torch.randn(8, requires_grad=True)
    real = torch.rand(3, 2, 2, 2)
    plain = r1_penalty(lambda x: torch.tanh(x.flatten(1) @ weight), real)
    scaled = r1_penalty(lambda x: torch.tanh(x.flatten(1) @ weight), real, torch.amp.GradScaler("cpu", init_scale=2.0**16))
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-5)
    # by hand: D(x) = tanh(<w, x>), grad = (1 - D^2) w
    scores = torch.tanh(real.flatten(1) @ weight.detach())
    expected = ((1 - scores.square()).square() * weight.detach().square().sum()).mean()
    assert plain.item() == pytest.approx(expected.item(), rel=1e-5)


def test_lecam_penalty_by_hand() -> None:
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0])
    # (1 - (-1))^2, (3 - (-1))^2 -> mean 10; (-2 - 2)^2, (0 - 2)^2 -> mean 10
    assert lecam_penalty(real, fake, torch.tensor(2.0), torch.tensor(-1.0)).item() == pytest.approx(20.0)


# --- the algorithm -------------------------------------------------------------------------------------


def test_lazy_r1_schedule_and_weight(tiny_h5: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    algorithm = _algorithm(tiny_h5, ["model.discriminator_normalization=none", "train.r1_gamma=3", "train.r1_every=4"])
    assert [algorithm.r1_weight(t) for t in range(6)] == [6.0, 0.0, 0.0, 0.0, 6.0, 0.0]  # γ/2 · k on every k-th
    calls = []
    original = cgan_module.r1_penalty

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(algorithm.updates)
        return original(*args, **kwargs)

    monkeypatch.setattr(cgan_module, "r1_penalty", spy)
    for _ in range(5):
        metrics = algorithm.train_step(_batch())
        assert metrics["r1_penalty"] > 0
    assert calls == [0, 4]
    assert _algorithm(tiny_h5, ["model.discriminator_normalization=none", "train.r1_gamma=3"]).r1_weight(1) == 1.5


def test_r1_refuses_a_batch_normalised_discriminator(tiny_h5: Path) -> None:
    with pytest.raises(RecipeError, match="r1_gamma needs a discriminator without batch normalization"):
        load_recipe("tiny-cgan", ["model.discriminator_normalization=batch", "train.r1_gamma=1"], expect="gan")
    with pytest.raises(RecipeError, match="applies to algorithm 'cgan' only"):
        load_recipe("tiny-wgan-gp", ["train.lecam_weight=1"], expect="gan")


def test_r1_with_no_normalization_changes_the_discriminator_step(tiny_h5: Path) -> None:
    """Same seed and batch: the discriminator moves differently with R1 than without."""
    base = ["model.discriminator_normalization=none"]
    plain, regularised = _algorithm(tiny_h5, base), _algorithm(tiny_h5, [*base, "train.r1_gamma=10000"])
    plain.train_step(_batch())
    metrics = regularised.train_step(_batch())
    assert metrics["r1_penalty"] > 0
    weights = [dict(a.discriminator.named_parameters())["linear.weight"] for a in (plain, regularised)]
    assert not torch.equal(weights[0], weights[1])


def test_lecam_anchors_follow_the_logits_and_are_restored(tiny_h5: Path) -> None:
    first = _algorithm(tiny_h5, ["train.lecam_weight=0.5"])
    metrics = first.train_step(_batch())
    expected = torch.tensor([metrics["real_logit"], metrics["fake_logit"]]) * (1 - cgan_module.LECAM_DECAY)  # from 0
    torch.testing.assert_close(first.lecam_anchors, expected)
    first.train_step(_batch())
    second = _algorithm(tiny_h5, ["train.lecam_weight=0.5"])
    second.load_state_dict(copy.deepcopy(first.state_dict()))  # a copy: optimisers would share state tensors
    assert torch.equal(second.lecam_anchors, first.lecam_anchors) and second.updates == first.updates == 2
    assert first.train_step(_batch()) == second.train_step(_batch())


def test_mask_smoothing_and_logit_view(tiny_h5: Path) -> None:
    algorithm = _algorithm(tiny_h5, ["train.mask_smoothing=0.2", "model.mask_output=logits"])
    pairs, _ = algorithm.real_pairs(_batch())
    assert pairs[:, 1].unique().tolist() == pytest.approx([-0.8, 0.8])
    logits = torch.tensor([-30.0, 0.0, 2.0]).view(1, 1, 1, 3)
    view = algorithm.discriminator_view(torch.cat([torch.zeros(1, 1, 1, 3), logits], dim=1))
    torch.testing.assert_close(view[0, 1, 0], torch.tensor([-1.0, 0.0, 2 * torch.sigmoid(torch.tensor(2.0)).item() - 1]))
    plain = _algorithm(tiny_h5, [])
    generated = torch.randn(2, 2, 4, 4)
    assert plain.discriminator_view(generated) is generated  # a tanh generator's output is shown as it is
    assert set(plain.real_pairs(_batch())[0][:, 1].unique().tolist()) == {-1.0, 1.0}


def test_mask_background_fill_in_translation_and_cutout() -> None:
    pairs = torch.full((1, 2, 4, 4), 0.5)
    shift = AugmentParameters(shift=torch.tensor([[1, 0]]))
    hole = AugmentParameters(cutout_corner=torch.tensor([[1, 1]]), cutout_size=(2, 2))
    for parameters, uncovered in ((shift, (slice(0, 1), slice(None))), (hole, (slice(1, 3), slice(1, 3)))):
        today = augment(pairs, 1, parameters)
        filled = augment(pairs, 1, parameters, mask_background_fill=True)
        assert (today[0, :, uncovered[0], uncovered[1]] == 0).all()  # the default: 0 everywhere, as published
        assert (filled[0, 0, uncovered[0], uncovered[1]] == 0).all() and (filled[0, 1, uncovered[0], uncovered[1]] == -1).all()
        assert filled.eq(0.5).sum() == today.eq(0.5).sum()  # the rest is unchanged


def test_augmentation_probability_gates_each_operation_per_sample() -> None:
    policy = DiffAugment(("color", "translation", "cutout"))
    pairs = torch.rand(512, 2, 16, 16) * 2 - 1
    always = policy(pairs, torch.Generator().manual_seed(3))
    # p = 1: the parameters are drawn first, so every sample gets exactly what it gets without gates
    assert torch.equal(policy(pairs, torch.Generator().manual_seed(3), probability=torch.tensor(1.0)), always)
    torch.testing.assert_close(policy(pairs, torch.Generator().manual_seed(3), probability=torch.tensor(0.0)), pairs)  # (x - m) + m
    gated = policy.sample(pairs, torch.Generator().manual_seed(3), probability=torch.tensor(0.25))
    assert gated.shift is not None and gated.cutout_corner is not None and gated.brightness is not None
    shifted = gated.shift.abs().sum(dim=1) > 0
    assert 0.15 < shifted.float().mean().item() < 0.3  # 1/4 gated x 16/17^2 of shifts nonzero
    kept = gated.cutout_corner[:, 0] == -8  # a box above the image erases nothing
    assert 0.68 < kept.float().mean().item() < 0.82
    assert torch.equal(augment(pairs[kept], 1, AugmentParameters(cutout_corner=gated.cutout_corner[kept], cutout_size=(8, 8))), pairs[kept])
    uncoloured = gated.brightness == 0
    assert torch.all(gated.contrast[uncoloured] == 1) and 0.68 < uncoloured.float().mean().item() < 0.82  # type: ignore[index]


def test_ada_raises_the_probability_while_the_discriminator_is_sure_of_the_reals(tiny_h5: Path) -> None:
    algorithm = _algorithm(tiny_h5, ["train.ada_target=0.6", "train.ada_images=320"])
    assert algorithm.augment_probability is not None and algorithm.augment_probability.item() == 0.0
    seen = []
    for logits in [torch.full((8,), 2.0)] * 8 + [torch.tensor([3.0, -1.0] * 4)] * 4:  # sure (r_t 1), then r_t 0
        algorithm.updates += 1
        algorithm.adapt_augmentation(logits)
        seen.append(algorithm.augment_probability.item())
    step = cgan_module.ADA_INTERVAL * 8 / 320  # 0.1 per interval of 4 updates
    assert seen == pytest.approx([0.0] * 3 + [step] * 4 + [2 * step] * 4 + [step])
    assert algorithm.ada_rt.item() == 0.0
    metrics = algorithm.train_step(_batch())  # update 13: no adjustment, logged
    assert metrics["augment_probability"] == pytest.approx(step) and "ada_rt" in metrics
    copied = _algorithm(tiny_h5, ["train.ada_target=0.6", "train.ada_images=320"])
    copied.load_state_dict(copy.deepcopy(algorithm.state_dict()))
    assert copied.augment_probability is not None and copied.augment_probability.item() == pytest.approx(step)
    assert torch.equal(copied.ada_signs, algorithm.ada_signs) and copied.ada_signs.item() != 0


def test_ada_off_draws_what_it_always_drew(tiny_h5: Path) -> None:
    plain, explicit = _algorithm(tiny_h5, []), _algorithm(tiny_h5, ["train.ada_target=0"])
    assert plain.augment_probability is None and plain.train_step(_batch()) == explicit.train_step(_batch())
    assert "augment_probability" not in plain.state_dict()


def test_the_eight_symmetries_are_distinct_and_move_image_and_mask_together() -> None:
    pairs = torch.arange(2 * 9.0).view(1, 2, 3, 3).repeat(8, 1, 1, 1)
    turned = dihedral(pairs, torch.arange(8))
    assert torch.equal(turned[0], pairs[0])
    assert len({tuple(sample[0].flatten().tolist()) for sample in turned}) == 8
    assert torch.equal(turned[:, 1] - turned[:, 0], torch.full((8, 3, 3), 9.0))  # same transform on both channels
    assert torch.equal(turned[1, 0], torch.rot90(pairs[0, 0], 1)) and torch.equal(turned[4, 0], pairs[0, 0].flip(-1))


def test_dihedral_draws_are_per_global_sample(tiny_h5: Path) -> None:
    """A rank keeps its rows of the global batch's draws: 2 ranks see what 1 process sees."""
    batch = _batch()
    single, _ = _algorithm(tiny_h5, ["train.real_dihedral=true"]).real_pairs(batch)
    assert not torch.equal(single, _algorithm(tiny_h5, []).real_pairs(batch)[0])
    for rank in range(2):
        algorithm = _algorithm(tiny_h5, ["train.real_dihedral=true"])
        algorithm.world = Distributed(rank=rank, world_size=2)
        local = {key: value[rank::2] for key, value in batch.items()}
        assert torch.equal(algorithm.real_pairs(local)[0], single[rank::2])


# --- recipes and the whole run ---------------------------------------------------------------------------


def test_every_switch_is_a_typed_override_stored_in_the_resolved_recipe() -> None:
    recipe = load_recipe("tiny-cgan", ALL_SWITCHES, expect="gan")
    assert (recipe.model.minibatch_std, recipe.model.mask_output, recipe.model.upsample, recipe.model.embedding_init) == (
        True, "logits", "resize", "unit")
    assert (recipe.train.r1_gamma, recipe.train.r1_every, recipe.train.lecam_weight, recipe.train.mask_smoothing) == (1.0, 2, 0.1, 0.1)
    assert recipe.train.mask_background_fill is True and recipe.train.real_dihedral is True
    shipped = load_recipe("frid-adar-liver", expect="gan")
    assert shipped.model.upsample == "resize" and shipped.train.real_dihedral is True  # the ablation's winners
    default = load_recipe("tiny-cgan", expect="gan")
    assert (default.model.minibatch_std, default.model.mask_output, default.model.upsample, default.model.embedding_init) == (
        False, "tanh", "transposed", "dcgan")
    assert (default.train.r1_gamma, default.train.r1_every, default.train.lecam_weight, default.train.mask_smoothing) == (0.0, 1, 0.0, 0.0)
    assert default.train.mask_background_fill is False and default.train.real_dihedral is False
    assert recipe.model.noise_inputs is True and default.model.noise_inputs is False


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.upsample=bicubic", "'bicubic' is not one of"),
        ("model.mask_output=logit", "did you mean 'logits'"),
        ("model.minibatch_std=4", "expected true or false"),
        ("train.r1_gamma=-1", "r1_gamma must be >= 0"),
        ("train.r1_every=0", "r1_every must be >= 1"),
        ("train.mask_smoothing=1", "mask_smoothing must be in [0, 1)"),
        ("train.lecam_weight=-0.5", "lecam_weight must be >= 0"),
        ("train.real_dihedral=yes", "expected true or false"),
        ('train.diffaugment=["translation","translation-reflect"]', "choose one"),
        ('train.diffaugment=["translation-mirror"]', "is not one of"),
        ("train.ada_target=1", "ada_target must be in [0, 1)"),
        ("train.ada_images=0", "ada_images must be >= 1"),
        ("train.ada_target=0.6 train.diffaugment=[]", "the policy is empty"),
    ],
)
def test_bad_switch_values_are_one_line(override: str, expected: str) -> None:
    with pytest.raises(RecipeError) as error:
        load_recipe("tiny-cgan", override.split(" "), expect="gan")
    assert expected in str(error.value) and "\n" not in str(error.value)



def test_all_switches_train_and_resume_bit_for_bit(tiny_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ["train.steps=8", "train.checkpoint_every=3", "train.sample_every=4", "train.log_every=2", "train.keep_checkpoints=5",
                 *ALL_SWITCHES]
    recipe = load_recipe("tiny-cgan", overrides, expect="gan")
    straight = train(recipe, tiny_h5, tmp_path / "straight", progress=False)
    card = json.loads((straight / MODEL_CARD).read_text())
    assert card["architecture"]["config"] | {"upsample": "resize", "mask_output": "logits", "embedding_init": "unit", "noise_inputs": True} == card["architecture"]["config"]
    noise_scales = [value for key, value in load_file(str(straight / MODEL_WEIGHTS)).items() if key.endswith(".scale")]
    assert len(noise_scales) == 2 and all(value.abs().max() > 0 for value in noise_scales)  # 16x16: after 4 -> 8, the output; learned
    assert card["outputs"]["mask"].startswith("logit") and card["recipe"]["train"]["r1_every"] == 2
    log = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert all(line["r1_penalty"] > 0 and "lecam_penalty" in line and 0 <= line["augment_probability"] <= 1 for line in log)
    state = load_file(str(straight / "checkpoints" / "step-00000006.safetensors"))
    assert state["algorithm.lecam_anchors"].abs().min() > 0

    # update 5: after the checkpoint at step 3, mid-cycle of the lazy R1 (update 3 of 0..)
    crash_at_update(monkeypatch, ConditionalGAN, 5, lambda: train(recipe, tiny_h5, tmp_path / "resumed", progress=False))
    assert [step for step, _ in list_checkpoints(tmp_path / "resumed" / "checkpoints")] == [3]
    resumed = train(recipe, tiny_h5, tmp_path / "resumed", resume=True, progress=False)
    assert (straight / MODEL_WEIGHTS).read_bytes() == (resumed / MODEL_WEIGHTS).read_bytes()
    a = load_file(str(straight / "checkpoints" / "step-00000006.safetensors"))
    b = load_file(str(resumed / "checkpoints" / "step-00000006.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_a_checkpoint_from_before_the_switches_resumes(tiny_h5: Path, tmp_path: Path) -> None:
    """Its recipe and algorithm state lack the new keys; the defaults are what it ran with."""
    out = train(load_recipe("tiny-cgan", ["train.steps=2", "train.checkpoint_every=2", "train.sample_every=0"]), tiny_h5,
                tmp_path / "run", progress=False)
    record_path = out / "checkpoints" / "step-00000002.json"
    record = json.loads(record_path.read_text())
    for section, keys in (("model", ("minibatch_std", "mask_output", "upsample", "embedding_init", "noise_inputs")),
                          ("train", ("r1_gamma", "r1_every", "lecam_weight", "mask_smoothing", "mask_background_fill", "real_dihedral"))):
        for key in keys:
            del record["metadata"]["recipe"][section][key]
    for key in ("updates", "lecam_anchors", "last_r1"):
        del record["state"]["algorithm"][key]
    record_path.write_text(json.dumps(record))
    train(load_recipe("tiny-cgan", ["train.steps=4", "train.checkpoint_every=2", "train.sample_every=0"]), tiny_h5, out,
          resume=True, progress=False)
    assert json.loads((out / MODEL_CARD).read_text())["steps"] == 4
    with pytest.raises(AugmentorError, match=r"train\.lecam_weight was 0\.0, the recipe now says 0\.1"):
        train(load_recipe("tiny-cgan", ["train.steps=6", "train.sample_every=0", "train.lecam_weight=0.1"]), tiny_h5, out,
              resume=True, progress=False)


# --- data-parallel ---------------------------------------------------------------------------------------

# R1 (double backward through the plain network), LeCam (all-reduced anchors) and dihedral reals (per-sample
# draws): 2 gloo processes compute what one process does. (No minibatch std: its groups are per rank.)
DISTRIBUTED_SWITCHES = ["model.discriminator_normalization=none", "train.r1_gamma=1", "train.lecam_weight=0.1",
                        "train.real_dihedral=true", "train.mask_smoothing=0.1", "model.mask_output=logits",
                        "train.mask_background_fill=true", "train.ada_target=0.1", "train.ada_images=4"]


def _two_steps(tiny_h5: Path, world: Distributed) -> dict[str, torch.Tensor]:
    algorithm = _algorithm(tiny_h5, DISTRIBUTED_SWITCHES)
    algorithm.distribute(world)
    batches = InMemoryBatches(load_training_set(tiny_h5), 8, derive_seed(0, "data-order"), CPU, world)
    for _ in range(2):
        algorithm.update(batches.next(1))
    state = {f"discriminator.{k}": v for k, v in algorithm.discriminator.state_dict().items()}
    state |= {f"generator.{k}": v for k, v in algorithm.generator.state_dict().items()}
    state["lecam_anchors"] = algorithm.lecam_anchors
    assert algorithm.augment_probability is not None
    state["augment_probability"] = algorithm.augment_probability.view(1)
    state["ada_signs"] = algorithm.ada_signs.view(1)
    return {key: value.detach().float().contiguous() for key, value in state.items()}


def _rank(rank: int, port: int, out: Path, tiny_h5: Path) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world, _ = init_distributed("cpu")
    state = _two_steps(tiny_h5, world)
    if world.is_main:
        save_file(state, str(out / "two-ranks.safetensors"))
    shutdown_distributed()


def test_regularisers_under_two_gloo_processes_match_one_process(tiny_h5: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    context = torch.multiprocessing.get_context("fork")
    processes = [context.Process(target=_rank, args=(rank, port, tmp_path, tiny_h5)) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
        if process.is_alive():
            process.kill()
    assert [process.exitcode for process in processes] == [0, 0]
    distributed = load_file(str(tmp_path / "two-ranks.safetensors"))
    single = _two_steps(tiny_h5, Distributed())
    assert distributed.keys() == single.keys()
    for key, value in single.items():
        torch.testing.assert_close(distributed[key], value, rtol=1e-4, atol=1e-5, msg=lambda text, key=key: f"{key}: {text}")
    assert single["lecam_anchors"].abs().min() > 0
