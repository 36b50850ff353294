"""Scaling on one machine: generation with 1 vs 2 local shards, and DDP training with 1 vs 2 gloo processes.

Generation: ``augment generate --n N`` against ``augment generate --n N --shards 2``, each a fresh
command (so the sharded side pays for starting its worker processes, as a user's run does), the same
samples; the figure is the throughput ratio (2 shards / 1 process).

Training: the shipped cGAN recipe (64x64, batch 64 global, DiffAugment on) on a synthetic training file,
run by :func:`augmentor.training.run.train` in 1 process with 2 torch threads against 2 data-parallel
processes (gloo, 1 thread each, the global batch split between them), started the way torchrun starts
them (``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``); the rate is read from the run's own
``metrics.jsonl`` between its first and last log lines (start-up and the final checkpoint excluded). The
figure is the step-rate ratio (2 processes / 1).

Both take turns in ``--repeats`` (>= 5) interleaved repeats, the order reversing every repeat; each figure
is the median of the per-repeat ratios with their min-max. Neither has a target: on 2 cores, 2 processes
of 1 thread replace 1 process of 2 threads, so the figures say what sharding and DDP cost or gain where
cores, not devices, are shared -- with one process per GPU the same code scales with the GPUs.

    python bench/scaling.py [--n 4096] [--steps 15] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import MIN_REPEATS, median, record, spread

LOG_EVERY = 5


def generate_seconds(n: int, out: Path, shards: int) -> float:
    command = [sys.executable, "-m", "cli", "generate", "--class", "metastasis", "--n", str(n), "--out", str(out), "--overwrite"]
    if shards > 1:
        command += ["--shards", str(shards)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    return time.perf_counter() - start


def training_file(path: Path, count: int = 512, size: int = 64) -> Path:
    from augmentor.data.writer import H5Writer

    rng = np.random.default_rng(0)
    images = rng.integers(-160, 240, (count, 1, size, size)).astype(np.int16)
    masks = (rng.random((count, size, size)) > 0.7).astype(np.uint8)
    with H5Writer(path, class_names=("cyst", "metastasis", "hemangioma"), image_shape=(1, size, size), hu_window=(-160.0, 240.0)) as writer:
        writer.append(images, masks, np.arange(count) % 3, [f"p{i // 4:04d}" for i in range(count)])
    return path


def _train_rank(rank: int, world_size: int, port: int, data: Path, out: Path, steps: int, threads: int) -> None:
    from augmentor.recipes import load_recipe
    from augmentor.training.run import train

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(name, None)
    if world_size > 1:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    overrides = [f"train.steps={steps}", f"train.log_every={LOG_EVERY}", "train.sample_every=0", f"train.checkpoint_every={steps}", "monitor.every=0"]
    train(load_recipe("frid-adar-liver", overrides, expect="gan"), data, out, overwrite=True, device="cpu", progress=False)


def training_rate(data: Path, out: Path, steps: int, world_size: int) -> float:
    """Steps/s of a run with ``world_size`` processes sharing the machine's cores."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    threads = max(1, (os.cpu_count() or 1) // world_size)
    context = torch.multiprocessing.get_context("fork")  # the parent has run no torch op: nothing to inherit
    processes = [context.Process(target=_train_rank, args=(rank, world_size, port, data, out, steps, threads)) for rank in range(world_size)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    if any(process.exitcode for process in processes):
        raise RuntimeError(f"a training process failed (exit codes {[p.exitcode for p in processes]})")
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return (log[-1]["step"] - log[0]["step"]) / (log[-1]["elapsed_s"] - log[0]["elapsed_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4096, help="samples per generate run")
    parser.add_argument("--steps", type=int, default=15, help="training steps per run (the rate is taken after the first 5)")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        # Training first: its processes are forked, and the parent has computed nothing yet.
        data = training_file(Path(folder) / "train.h5")
        rates: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for world_size in (1, 2) if repeat % 2 == 0 else (2, 1):
                rates[world_size].append(training_rate(data, Path(folder) / f"run-{world_size}", args.steps, world_size))
            print(f"  repeat {repeat + 1}: train 1 process {rates[1][-1]:.2f} step/s, 2 processes {rates[2][-1]:.2f} step/s", flush=True)
        ratios = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
        record(f"DDP train, 2 gloo processes / 1 (cGAN 64x64, global batch 64; 1 process {median(rates[1]):.2f} step/s)",
               median(ratios), spread_text=spread(ratios))

        seconds: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for shards in (1, 2) if repeat % 2 == 0 else (2, 1):
                seconds[shards].append(generate_seconds(args.n, Path(folder) / f"shards-{shards}.h5", shards))
            print(f"  repeat {repeat + 1}: generate 1 process {seconds[1][-1]:.1f} s, 2 shards {seconds[2][-1]:.1f} s", flush=True)
        speedups = [one / two for one, two in zip(seconds[1], seconds[2], strict=True)]
        record(f"generate {args.n} samples, 2 local shards / 1 process (whole commands; 1 process {args.n / median(seconds[1]):,.0f} samples/s)",
               median(speedups), spread_text=spread(speedups))


if __name__ == "__main__":
    main()
