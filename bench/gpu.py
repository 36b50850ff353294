"""GPU throughput, when a CUDA GPU is present: generation and training, each as a ratio to this machine's CPU.

Generation: ``generate`` of ``--n`` 64x64 samples (shipped liver model, or a random one of its size) on
``cuda`` vs ``cpu``. Training: the generic trainer on the shipped cGAN recipe (64x64, batch 64, the
recipe's mixed precision: bf16 autocast on GPUs that have it, channels_last) for ``--steps`` steps on each
device, after a warm-up run. Each figure is the median of ``--repeats`` interleaved repeats. Without a GPU
it records that it skipped (CI machines and this project's 2-core machines have none).

    python bench/gpu.py [--n 16384] [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import MIN_REPEATS, median, record, spread


def training_rate(device: torch.device, steps: int, folder: Path) -> float:
    from augmentor.recipes import load_recipe
    from augmentor.training.device import resolve_precision
    from augmentor.training.run import build_algorithm
    from bench.train import synthetic_training_set, trainer_loop

    recipe = load_recipe("frid-adar-liver", ["train.log_every=10", f"train.checkpoint_every={steps}"], expect="gan")
    data = synthetic_training_set(len(recipe.data.classes), recipe.model.image_size)
    torch.manual_seed(0)
    algorithm = build_algorithm(recipe, data, device, resolve_precision(recipe.train.mixed_precision, device))
    trainer_loop(algorithm, data, recipe, 3, device, folder / "warm-up")  # allocations, cuDNN's kernel choice
    return steps / trainer_loop(algorithm, data, recipe, steps, device, folder / "timed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        record("GPU throughput (generate, train) vs CPU", "no CUDA GPU here: skipped")
        return
    from bench.generate import generate_rate, model_directory

    print(f"GPU: {torch.cuda.get_device_name(0)}; CPU: {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as folder:
        model, cls = model_directory(Path(folder))
        generate_rate(model, cls, 1024, Path(folder) / "warm.h5", "cuda")
        rates: dict[str, list[float]] = {"cuda": [], "cpu": []}
        train_rates: dict[str, list[float]] = {"cuda": [], "cpu": []}
        for repeat in range(args.repeats):
            for device in ("cuda", "cpu") if repeat % 2 == 0 else ("cpu", "cuda"):
                rates[device].append(generate_rate(model, cls, args.n, Path(folder) / f"{device}.h5", device))
                began = time.perf_counter()
                train_rates[device].append(training_rate(torch.device(device), args.steps, Path(folder) / f"train-{device}-{repeat}"))
                print(f"  repeat {repeat + 1} {device}: generate {rates[device][-1]:,.0f} samples/s, train {train_rates[device][-1]:.2f} step/s "
                      f"({time.perf_counter() - began:.1f} s)", flush=True)
        generate_ratios = [gpu / cpu for gpu, cpu in zip(rates["cuda"], rates["cpu"], strict=True)]
        train_ratios = [gpu / cpu for gpu, cpu in zip(train_rates["cuda"], train_rates["cpu"], strict=True)]
        record(f"GPU generate {median(rates['cuda']):,.0f} samples/s, ratio to CPU", median(generate_ratios), spread_text=spread(generate_ratios, 1), unit="x")
        record(f"GPU train (cGAN 64x64, batch 64) {median(train_rates['cuda']):.1f} step/s, ratio to CPU", median(train_ratios),
               spread_text=spread(train_ratios, 1), unit="x")


if __name__ == "__main__":
    main()
