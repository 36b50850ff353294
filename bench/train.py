"""Trainer step throughput as a ratio to a plain hand-written loop (target >= 0.95), cGAN and WGAN-GP.

Both sides train the same networks (same initial weights), on the same batch size, with the same
optimisers, loss and precision, in the same process, alternating repeats so that drifting machine load
hits both alike. The plain loop is what one writes by hand: tensors indexed in place, the update inline,
nothing else. The trainer side is the full generic loop: in-memory batch source, the algorithm class,
EMA of the generator every step, metrics averaged and logged every ``log_every`` steps, the progress
bar's bookkeeping, and checkpoints: a short timed run writes one at its end, timed, and counted at the
recipe's rate (one per ``checkpoint_every`` steps) as a real run would pay for it. DiffAugment
and sample grids are off on both sides by default (``--diffaugment`` turns DiffAugment on for both).

The figure is the median over ``--repeats`` (>= 5) back-to-back pairs of the per-pair ratio, with the
pairs' min-max as its spread. A timed run is 24 cGAN / 6 WGAN-GP steps (a few seconds each on 2 cores:
long enough that timer and warm-up noise stay well under the 5 % the target allows).

The CycleGAN step (``cyclegan-phantom-ct`` on a CPU, ``cyclegan-published`` on a GPU) is timed the same way
at each ``--cyclegan-sizes`` crop, and its seconds per step are reported too.

    python bench/train.py                      # the shipped recipes' sizes (64x64, batch 64)
    python bench/train.py --size small --steps 30
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from augmentor.recipes import load_recipe
from augmentor.training.data import InMemoryBatches, TrainingSet
from augmentor.training.device import resolve_device, resolve_precision
from augmentor.training.ema import ExponentialMovingAverage
from augmentor.training.losses import discriminator_loss, generator_loss
from augmentor.training.run import build_algorithm
from augmentor.training.trainer import Trainer
from augmentor.training.unpaired import UnpairedBatches
from augmentor.translation.train import build_cyclegan
from bench.results import MIN_REPEATS, record, spread

SIZES = {
    "shipped": [],  # the recipes as shipped: 64x64, batch 64
    "small": ["model.image_size=32", "model.base_channels=16", "train.batch_size=32"],
}


def synthetic_training_set(num_classes: int, size: int, count: int = 512) -> TrainingSet:
    generator = torch.Generator().manual_seed(0)
    hu = (torch.rand(count, 1, size, size, generator=generator) * 400 - 160).to(torch.int16)
    masks = (torch.rand(count, 1, size, size, generator=generator) > 0.7).to(torch.uint8)
    labels = torch.arange(count) % num_classes
    names = tuple(f"class-{i}" for i in range(num_classes))
    return TrainingSet(hu, masks, labels, names, (-160.0, 240.0), Path("synthetic"), "", "", 0)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(algorithm, data: TrainingSet, recipe, steps: int, device: torch.device) -> float:
    """A hand-written loop over the algorithm's networks and optimisers. Returns seconds."""
    generator, discriminator = algorithm.generator, algorithm.discriminator
    optimizer_g, optimizer_d = algorithm.generator_optimizer, algorithm.discriminator_optimizer
    scaler_g, scaler_d = algorithm.generator_scaler, algorithm.discriminator_scaler
    precision, augment = algorithm.precision, algorithm.augment
    settings = recipe.train
    batch, critic_steps = settings.batch_size, settings.n_critic if settings.algorithm == "wgan-gp" else 1
    low, high = data.hu_window
    images = ((data.hu.float() - low) * (2 / (high - low)) - 1).clamp(-1, 1).to(device)
    masks = data.masks.gt(0).float().mul(2).sub(1).to(device)
    reals, labels_all = torch.cat([images, masks], dim=1), data.labels.to(device)
    indices = torch.randint(0, len(data), (steps * critic_steps + 1, batch)).to(device)
    latent_dim = algorithm.latent_dim

    synchronise(device)
    start = time.perf_counter()
    draw = 0
    for _ in range(steps):
        for _ in range(critic_steps):
            index = indices[draw]
            draw += 1
            real, labels = reals[index], labels_all[index]
            latents = torch.randn(batch, latent_dim, device=device)
            with precision.autocast():
                if settings.algorithm == "wgan-gp":
                    with torch.no_grad():
                        fake = generator(latents, labels)
                    real_seen, fake_seen = augment(real), augment(fake)
                    epsilon = torch.rand(batch, 1, 1, 1, device=device)
                    mixed = (epsilon * real_seen + (1 - epsilon) * fake_seen).requires_grad_(True)
                    (gradients,) = torch.autograd.grad(discriminator(mixed, labels).float().sum(), mixed, create_graph=True)
                    penalty = ((gradients.float().flatten(1).norm(dim=1) - 1) ** 2).mean()
                    loss_d = (discriminator(fake_seen, labels).float().mean() - discriminator(real_seen, labels).float().mean()
                              + settings.lambda_gp * penalty)
                else:
                    fake = generator(latents, labels)
                    loss_d = (F.softplus(-discriminator(augment(real), labels).float()).mean()
                              + F.softplus(discriminator(augment(fake.detach()), labels).float()).mean())
            optimizer_d.zero_grad(set_to_none=True)
            scaler_d.scale(loss_d).backward()
            scaler_d.step(optimizer_d)
            scaler_d.update()
        discriminator.requires_grad_(False)
        with precision.autocast():
            if settings.algorithm == "wgan-gp":
                fake = generator(torch.randn(batch, latent_dim, device=device), labels)
                loss_g = -discriminator(augment(fake), labels).float().mean()
            else:
                loss_g = F.softplus(-discriminator(augment(fake), labels).float()).mean()
        optimizer_g.zero_grad(set_to_none=True)
        scaler_g.scale(loss_g).backward()
        scaler_g.step(optimizer_g)
        scaler_g.update()
        discriminator.requires_grad_(True)
    synchronise(device)
    return time.perf_counter() - start


def trainer_loop(algorithm, data: TrainingSet, recipe, steps: int, device: torch.device, directory: Path) -> float:
    """The generic Trainer over the same algorithm. Returns seconds."""
    settings = recipe.train
    batches = InMemoryBatches(data, settings.batch_size, 0, device)
    ema = ExponentialMovingAverage(algorithm.generator, settings.ema_decay)
    trainer = Trainer(
        algorithm, batches, directory, steps=steps, ema=ema, ema_source=algorithm.generator, sampler=None,
        checkpoint_every=settings.checkpoint_every, sample_every=0, log_every=settings.log_every, progress=True,
        description="trainer",
    )
    saves: list[float] = []
    save = trainer.save

    def timed_save(elapsed: float) -> Path:
        began = time.perf_counter()
        path = save(elapsed)
        saves.append(time.perf_counter() - began)
        return path

    trainer.save = timed_save  # type: ignore[method-assign]
    synchronise(device)
    start = time.perf_counter()
    trainer.run()
    synchronise(device)
    seconds = time.perf_counter() - start
    # A short run pays for its final checkpoint in full; a real run pays one every checkpoint_every steps.
    return seconds - sum(saves) + sum(saves) / len(saves) * steps / settings.checkpoint_every


def measure(recipe_name: str, overrides: list[str], steps: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Alternate plain and trainer runs; return their throughputs and ratios.

    ``ratio`` is the median over repeats of (trainer throughput / plain throughput) of two runs made
    back to back, which cancels slow drifts in machine load; ``ratio_total`` uses the summed times.
    """
    recipe = load_recipe(recipe_name, overrides, expect="gan")
    data = synthetic_training_set(len(recipe.data.classes), recipe.model.image_size)
    precision = resolve_precision(recipe.train.mixed_precision, device)
    times: dict[str, list[float]] = {"plain": [], "trainer": []}
    for repeat in range(repeats):
        for side in ("plain", "trainer") if repeat % 2 == 0 else ("trainer", "plain"):
            torch.manual_seed(0)
            algorithm = build_algorithm(recipe, data, device, precision)
            algorithm.train_step(_warm_batch(data, recipe, device, algorithm))  # warm-up step (allocations, kernel choice)
            if side == "plain":
                times[side].append(plain_loop(algorithm, data, recipe, steps, device))
            else:
                with tempfile.TemporaryDirectory() as folder:
                    times[side].append(trainer_loop(algorithm, data, recipe, steps, device, Path(folder)))
    pairs = [plain / trainer for plain, trainer in zip(times["plain"], times["trainer"], strict=True)]
    return {
        "plain": steps * repeats / sum(times["plain"]),
        "trainer": steps * repeats / sum(times["trainer"]),
        "ratio": statistics.median(pairs),
        "ratio_total": sum(times["plain"]) / sum(times["trainer"]),
        "ratio_best": min(times["plain"]) / min(times["trainer"]),
        "pairs": pairs,
    }


def _warm_batch(data: TrainingSet, recipe, device: torch.device, algorithm) -> dict[str, torch.Tensor]:
    batches = InMemoryBatches(data, recipe.train.batch_size, 1, device)
    return batches.next(algorithm.real_batches_per_step)


# --- CycleGAN (augment train with a cyclegan recipe) --------------------------------------------------------
# Both sides train the same four networks and the judge (same initial weights), batch 1, least-squares loss,
# cycle and identity terms and 50-image pools. The plain side is the step written by hand after the reference
# code (random crops by slicing, a list as the pool); the trainer side is the full loop (unpaired in-memory
# batches with random crops, the CycleGAN class with its per-step learning-rate schedule, logging, progress
# bar, checkpoints counted at the recipe's rate). Sample grids are off on both sides.

NUM_LABELS = 25
SLICE_SIDE = 256


def synthetic_domain(seed: int, count: int = 16, side: int = SLICE_SIDE) -> TrainingSet:
    generator = torch.Generator().manual_seed(seed)
    hu = (torch.rand(count, 1, side, side, generator=generator) * 2000 - 1000).to(torch.int16)
    masks = torch.randint(0, NUM_LABELS, (count, 1, side, side), generator=generator).to(torch.uint8)
    names = ("background", *(f"tissue-{i}" for i in range(1, NUM_LABELS)))
    return TrainingSet(hu, masks, torch.zeros(count, dtype=torch.long), ("abdomen",), (-1000.0, 1000.0), Path("synthetic"), "", "", 0,
                       mask_label_names=names)


def plain_cyclegan_loop(algorithm, a: TrainingSet, b: TrainingSet, crop: int, steps: int, settings, device: torch.device) -> float:
    """The CycleGAN step written by hand over the algorithm's networks and optimisers. Returns seconds."""
    g_ab, g_ba, d_a, d_b, judge = algorithm.generator_ab, algorithm.generator_ba, algorithm.discriminator_a, algorithm.discriminator_b, algorithm.judge
    optimizer_g = algorithm.optimizers["generators"][1]
    optimizer_d = algorithm.optimizers["discriminators"][1]
    optimizer_j = algorithm.optimizers["judge"][1] if judge is not None else None
    images_a, images_b = (x.hu.float().div(1000).clamp(-1, 1).to(device) for x in (a, b))
    masks_a, masks_b = a.masks.to(device), b.masks.to(device)
    pools: list[list[torch.Tensor]] = [[], []]
    rng = random.Random(0)

    def crop_of(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, r, c = rng.randrange(len(images)), rng.randrange(SLICE_SIDE - crop + 1), rng.randrange(SLICE_SIDE - crop + 1)
        return images[i : i + 1, :, r : r + crop, c : c + crop], masks[i : i + 1, :, r : r + crop, c : c + crop]

    def pooled(pool: list[torch.Tensor], fake: torch.Tensor) -> torch.Tensor:
        fake = fake.detach()
        if len(pool) < settings.pool_size:
            pool.append(fake)
            return fake
        if rng.random() < 0.5:
            index = rng.randrange(settings.pool_size)
            old, pool[index] = pool[index], fake
            return old
        return fake

    synchronise(device)
    start = time.perf_counter()
    for _ in range(steps):
        real_a, _ = crop_of(images_a, masks_a)
        real_b, mask_b = crop_of(images_b, masks_b)
        d_a.requires_grad_(False), d_b.requires_grad_(False)
        fake_b, fake_a = g_ab(real_a), g_ba(real_b)
        loss_g = (generator_loss(d_b(fake_b), "least-squares") + generator_loss(d_a(fake_a), "least-squares")
                  + settings.lambda_cycle * (F.l1_loss(g_ba(fake_b), real_a) + F.l1_loss(g_ab(fake_a), real_b))
                  + settings.lambda_cycle * settings.lambda_identity * (F.l1_loss(g_ab(real_b), real_b) + F.l1_loss(g_ba(real_a), real_a)))
        optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer_g.step()
        d_a.requires_grad_(True), d_b.requires_grad_(True)
        loss_d = (discriminator_loss(d_a(real_a), d_a(pooled(pools[0], fake_a)), "least-squares")
                  + discriminator_loss(d_b(real_b), d_b(pooled(pools[1], fake_b)), "least-squares"))
        optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        optimizer_d.step()
        if judge is not None and optimizer_j is not None:
            loss_j = F.cross_entropy(judge(real_b), mask_b[:, 0].long())
            optimizer_j.zero_grad(set_to_none=True)
            loss_j.backward()
            optimizer_j.step()
    synchronise(device)
    return time.perf_counter() - start


def trainer_cyclegan_loop(algorithm, a: TrainingSet, b: TrainingSet, crop: int, steps: int, settings, directory: Path, device: torch.device) -> float:
    """The generic Trainer over the same algorithm. Returns seconds (checkpoints at the recipe's rate)."""
    batches = UnpairedBatches(a, b, 1, crop, 0, device)
    trainer = Trainer(algorithm, batches, directory, steps=steps, ema=None, ema_source=algorithm.generator_ab, sampler=None,
                      checkpoint_every=settings.checkpoint_every, sample_every=0, log_every=settings.log_every, progress=True)
    saves: list[float] = []
    save = trainer.save

    def timed_save(elapsed: float) -> Path:
        began = time.perf_counter()
        path = save(elapsed)
        saves.append(time.perf_counter() - began)
        return path

    trainer.save = timed_save  # type: ignore[method-assign]
    synchronise(device)
    start = time.perf_counter()
    trainer.run()
    synchronise(device)
    seconds = time.perf_counter() - start
    return seconds - sum(saves) + sum(saves) / len(saves) * steps / settings.checkpoint_every


def measure_cyclegan(recipe_name: str, crop: int, steps: int, repeats: int, device: torch.device) -> dict:
    """Alternate plain and trainer runs of the CycleGAN step (float32 on both sides); s/step of the best runs and the ratio."""
    recipe = load_recipe(recipe_name, [f"model.image_size={crop}", "train.log_every=10"], expect="cyclegan")
    precision = resolve_precision("off", device)
    a, b = synthetic_domain(0), synthetic_domain(1)
    times: dict[str, list[float]] = {"plain": [], "trainer": []}
    for repeat in range(repeats):
        for side in ("plain", "trainer") if repeat % 2 == 0 else ("trainer", "plain"):
            torch.manual_seed(0)
            algorithm = build_cyclegan(recipe, judge=recipe.train.judge, structure=False, num_labels=NUM_LABELS, device=device, precision=precision)
            plain_cyclegan_loop(algorithm, a, b, crop, 1, recipe.train, device)  # warm-up step
            if side == "plain":
                times[side].append(plain_cyclegan_loop(algorithm, a, b, crop, steps, recipe.train, device))
            else:
                with tempfile.TemporaryDirectory() as folder:
                    times[side].append(trainer_cyclegan_loop(algorithm, a, b, crop, steps, recipe.train, Path(folder), device))
    pairs = [plain / trainer for plain, trainer in zip(times["plain"], times["trainer"], strict=True)]
    return {"plain_s_per_step": min(times["plain"]) / steps, "trainer_s_per_step": min(times["trainer"]) / steps,
            "ratio": statistics.median(pairs), "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="shipped")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed run (default: 24 cGAN, 6 WGAN-GP)")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--diffaugment", action="store_true", help="DiffAugment on, on both sides")
    parser.add_argument("--cyclegan-sizes", default="128,256", help="crop sizes of the CycleGAN step, comma-separated ('' skips it)")
    parser.add_argument("--cyclegan-steps", type=int, default=3, help="CycleGAN steps per timed run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}, size {args.size}")
    # The WGAN-GP recipe is sized for a GPU (base 64); on a CPU it is timed at the shipped DCGANs' width.
    wgan_width = ["model.base_channels=32", "model.discriminator_channels=24"] if device.type == "cpu" and args.size == "shipped" else []
    for label, recipe_name, default_steps, extra in (("cGAN", "frid-adar-liver", 24, []), ("WGAN-GP", "onishi-lung", 6, wgan_width)):
        overrides = [*SIZES[args.size], *extra, "train.log_every=10"]
        if not args.diffaugment:
            overrides.append("train.diffaugment=[]")
        steps = args.steps or default_steps
        figures = measure(recipe_name, overrides, steps, args.repeats, device)
        print(f"{label:8s} ({recipe_name}): plain {figures['plain']:.3f} step/s, trainer {figures['trainer']:.3f} step/s, "
              f"ratio {figures['ratio']:.3f} (median of {args.repeats} back-to-back pairs; target >= 0.95), "
              f"total-time ratio {figures['ratio_total']:.3f}, best-run ratio {figures['ratio_best']:.3f}; {steps} steps a run")
        record(f"train {label} trainer / plain loop ({steps} steps a run)", figures["ratio"], ">= 0.95", figures["ratio"] >= 0.95,
               spread(figures["pairs"]))
    for crop in (int(size) for size in args.cyclegan_sizes.split(",") if size.strip()):
        # the shipped slim recipe (cyclegan-phantom-ct) on the CPU; on a GPU, the published size
        recipe_name = "cyclegan-phantom-ct" if device.type == "cpu" else "cyclegan-published"
        cycle = measure_cyclegan(recipe_name, crop, args.cyclegan_steps, args.repeats, device)
        print(f"CycleGAN ({recipe_name}) {crop}x{crop}: plain {cycle['plain_s_per_step']:.3f} s/step, trainer "
              f"{cycle['trainer_s_per_step']:.3f} s/step (best runs), ratio {cycle['ratio']:.3f}")
        record(f"train CycleGAN {crop}x{crop} trainer / plain loop ({args.cyclegan_steps} steps a run)", cycle["ratio"], ">= 0.95",
               cycle["ratio"] >= 0.95, spread(cycle["pairs"]))
        record(f"train CycleGAN {crop}x{crop} step ({recipe_name}, batch 1)", cycle["trainer_s_per_step"], unit=" s")


if __name__ == "__main__":
    main()
