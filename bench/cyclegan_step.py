"""The CycleGAN step through the generic trainer as a ratio to a plain hand-written loop of the same networks.

Both sides train the same four networks and the judge (same initial weights), batch 1, Adam, least-squares
loss, cycle and identity terms and 50-image pools, in the same process, alternating repeats. The plain side
is what one writes by hand after the reference code: tensors indexed in place, random crops by slicing,
a list as the image pool, the update inline. The trainer side is the full loop: unpaired in-memory batches
with random crops, the :class:`~augmentor.training.cyclegan.CycleGAN` class (linear decay set every step),
metrics averaged and logged, the progress bar's bookkeeping, and checkpoints counted at the recipe's rate
(one per ``checkpoint_every`` steps) as in ``bench/train.py``. Sample grids are off on both sides.

    python bench/cyclegan_step.py                        # the shipped slim recipe at 128x128 and 256x256
    python bench/cyclegan_step.py --recipe cyclegan-published --sizes 128
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
from augmentor.training.data import TrainingSet
from augmentor.training.device import resolve_device, resolve_precision
from augmentor.training.losses import discriminator_loss, generator_loss
from augmentor.training.trainer import Trainer
from augmentor.training.unpaired import UnpairedBatches
from augmentor.translation.train import build_cyclegan

NUM_LABELS = 25
SLICE_SIDE = 256


def synthetic_domain(seed: int, count: int = 16, side: int = SLICE_SIDE) -> TrainingSet:
    generator = torch.Generator().manual_seed(seed)
    hu = (torch.rand(count, 1, side, side, generator=generator) * 2000 - 1000).to(torch.int16)
    masks = torch.randint(0, NUM_LABELS, (count, 1, side, side), generator=generator).to(torch.uint8)
    names = ("background", *(f"tissue-{i}" for i in range(1, NUM_LABELS)))
    return TrainingSet(hu, masks, torch.zeros(count, dtype=torch.long), ("abdomen",), (-1000.0, 1000.0), Path("synthetic"), "", "", 0,
                       mask_label_names=names)


def plain_loop(algorithm, a: TrainingSet, b: TrainingSet, crop: int, steps: int, settings) -> float:
    """The CycleGAN step written by hand over the algorithm's networks and optimisers. Returns seconds."""
    g_ab, g_ba, d_a, d_b, judge = algorithm.generator_ab, algorithm.generator_ba, algorithm.discriminator_a, algorithm.discriminator_b, algorithm.judge
    optimizer_g = algorithm.optimizers["generators"][1]
    optimizer_d = algorithm.optimizers["discriminators"][1]
    optimizer_j = algorithm.optimizers["judge"][1] if judge is not None else None
    images_a, images_b = (x.hu.float().div(1000).clamp(-1, 1) for x in (a, b))
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

    start = time.perf_counter()
    for _ in range(steps):
        real_a, _ = crop_of(images_a, a.masks)
        real_b, mask_b = crop_of(images_b, b.masks)
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
    return time.perf_counter() - start


def trainer_loop(algorithm, a: TrainingSet, b: TrainingSet, crop: int, steps: int, settings, directory: Path) -> float:
    """The generic Trainer over the same algorithm. Returns seconds (checkpoints at the recipe's rate)."""
    batches = UnpairedBatches(a, b, 1, crop, 0, torch.device("cpu"))
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
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    return seconds - sum(saves) + sum(saves) / len(saves) * steps / settings.checkpoint_every


def measure(recipe_name: str, crop: int, steps: int, repeats: int) -> dict[str, float | list[float]]:
    recipe = load_recipe(recipe_name, [f"model.image_size={crop}", "train.log_every=10"], expect="cyclegan")
    device = resolve_device("cpu")
    precision = resolve_precision("off", device)
    a, b = synthetic_domain(0), synthetic_domain(1)
    times: dict[str, list[float]] = {"plain": [], "trainer": []}
    for repeat in range(repeats):
        for side in ("plain", "trainer") if repeat % 2 == 0 else ("trainer", "plain"):
            torch.manual_seed(0)
            algorithm = build_cyclegan(recipe, judge=recipe.train.judge, structure=False, num_labels=NUM_LABELS, device=device, precision=precision)
            plain_loop(algorithm, a, b, crop, 1, recipe.train)  # warm-up step
            if side == "plain":
                times[side].append(plain_loop(algorithm, a, b, crop, steps, recipe.train))
            else:
                with tempfile.TemporaryDirectory() as folder:
                    times[side].append(trainer_loop(algorithm, a, b, crop, steps, recipe.train, Path(folder)))
    pairs = [plain / trainer for plain, trainer in zip(times["plain"], times["trainer"], strict=True)]
    return {"plain_s_per_step": min(times["plain"]) / steps, "trainer_s_per_step": min(times["trainer"]) / steps,
            "ratio": statistics.median(pairs), "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cyclegan-phantom-ct")
    parser.add_argument("--sizes", default="128,256", help="crop sizes to time, comma-separated")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}, recipe {args.recipe}")
    for crop in (int(size) for size in args.sizes.split(",")):
        figures = measure(args.recipe, crop, args.steps, args.repeats)
        pairs = figures["pairs"]
        assert isinstance(pairs, list)
        print(f"CycleGAN {crop}x{crop}: plain {figures['plain_s_per_step']:.3f} s/step, trainer {figures['trainer_s_per_step']:.3f} s/step "
              f"(best runs), ratio {figures['ratio']:.3f} (median of {args.repeats} pairs, {min(pairs):.3f}-{max(pairs):.3f}; target >= 0.95)")


if __name__ == "__main__":
    main()
