"""Data-parallel training with gloo: 2 CPU processes compute what 1 process does.

One launch of 2 processes serves the checks here (starting processes costs more than the tiny
training). They are forked from the test process with the environment torchrun gives its workers
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so they skip importing
torch again; the slow test runs the real ``torchrun ... -m augmentor.train``. Each rank takes one update
of the tiny cGAN and WGAN-GP recipes on the same global batch, rank 0 stores the networks, EMA and
metrics after it, and then both ranks run ``python -m augmentor.train``'s entry for a few steps. The
tests compare the first with the same update made in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from augmentor.recipes import load_recipe
from augmentor.training.data import InMemoryBatches, load_training_set
from augmentor.training.device import resolve_precision
from augmentor.training.distributed import SINGLE_PROCESS, Distributed, all_ranks_mean, init_distributed
from augmentor.training.ema import ExponentialMovingAverage
from augmentor.training.run import build_algorithm, derive_seed, train
from augmentor.training.trainer import METRICS_LOG
from cli import app
from tests.one_line import assert_one_line_error

runner = CliRunner()

RECIPES = ("tiny-cgan", "tiny-wgan-gp")
STEPS = 6


def first_step(name: str, data: Path, world: Distributed, device: torch.device) -> dict[str, torch.Tensor]:
    """Networks, EMA and (rank-averaged) metrics after one update of recipe ``name`` on a batch of 8."""
    recipe = load_recipe(name, ["train.batch_size=8"], expect="gan")
    training_set = load_training_set(data)
    algorithm = build_algorithm(recipe, training_set, device, resolve_precision("off", device))
    ema = ExponentialMovingAverage(algorithm.generator, 0.5, warmup=False)
    algorithm.distribute(world)
    batches = InMemoryBatches(training_set, 8, derive_seed(0, "data-order"), device, world)
    metrics = algorithm.update(batches.next(algorithm.real_batches_per_step))
    ema.update(algorithm.generator)
    state = {f"generator.{k}": v for k, v in algorithm.generator.state_dict().items()}
    state |= {f"discriminator.{k}": v for k, v in algorithm.discriminator.state_dict().items()}
    state |= {f"ema.{k}": v for k, v in ema.shadow.state_dict().items()}
    state |= {f"metric.{k}": all_ranks_mean(v.float().reshape(1), world) for k, v in metrics.items()}
    return {key: value.detach().float().contiguous() for key, value in state.items()}


def worker(out: Path, data: Path) -> None:
    """Run under torchrun (2 processes): first steps, then the training entry point."""
    from augmentor.train import main

    torch.set_num_threads(1)
    world, device = init_distributed("cpu")
    for name in RECIPES:
        state = first_step(name, data, world, device)
        if world.is_main:
            save_file(state, str(out / f"{name}.safetensors"))
    arguments = ["tiny-cgan", "--data", str(data), "--out", str(out / "run"), "--set", f"train.steps={STEPS}",
                 "--set", "train.log_every=2", "--set", "train.checkpoint_every=3", "--set", "train.sample_every=3"]
    try:
        main(arguments)
    except SystemExit as exit:
        if exit.code:
            raise


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rank(rank: int, port: int, out: Path, data: Path) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with open(out / f"stdout-{rank}.txt", "w") as stdout, contextlib.redirect_stdout(stdout):
        worker(out, data)


def run_two_processes(tiny_h5: Path, out: Path) -> Path:
    context = torch.multiprocessing.get_context("fork")
    port = _free_port()
    processes = [context.Process(target=_rank, args=(rank, port, out, tiny_h5)) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
    for process in processes:
        if process.is_alive():
            process.kill()
    assert [process.exitcode for process in processes] == [0, 0]
    (out / "stdout.txt").write_text("".join((out / f"stdout-{rank}.txt").read_text() for rank in range(2)))
    return out


@pytest.mark.slow
def test_torchrun_runs_the_training_module(tiny_h5: Path, tmp_path: Path) -> None:
    """The real launcher: torchrun starts 2 processes that run ``-m augmentor.train``."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "augmentor.train",
               "tiny-cgan", "--data", str(tiny_h5), "--out", str(tmp_path / "run"), "--set", "train.steps=4", "--set", "train.log_every=2"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1
    assert json.loads((tmp_path / "run" / "model.json").read_text())["processes"] == 2


def test_two_gloo_processes_match_one_process_and_rank_zero_writes(tiny_h5: Path, tmp_path: Path) -> None:
    """One launch for both checks (under pytest-xdist, a shared fixture could launch once per worker)."""
    two_processes = run_two_processes(tiny_h5, tmp_path)
    for name in RECIPES:
        check_first_step(name, two_processes, tiny_h5)
    check_training_run(two_processes, tiny_h5)


def check_first_step(name: str, two_processes: Path, tiny_h5: Path) -> None:
    """Same global batch: global BatchNorm statistics, per-sample draws (latents, DiffAugment, GP
    interpolation) and DDP-averaged gradients, including the gradient penalty's, give one process's update."""
    distributed = load_file(str(two_processes / f"{name}.safetensors"))
    single = first_step(name, tiny_h5, SINGLE_PROCESS, torch.device("cpu"))
    assert distributed.keys() == single.keys()
    initial = load_recipe(name, ["train.batch_size=8"], expect="gan")
    untouched = build_algorithm(initial, load_training_set(tiny_h5), torch.device("cpu"), resolve_precision("off", torch.device("cpu")))
    moved = 0
    for key, value in single.items():
        torch.testing.assert_close(distributed[key], value, rtol=1e-4, atol=1e-5, msg=lambda text, key=key: f"{name} {key}: {text}")
        if key.startswith("discriminator.") and key.removeprefix("discriminator.") in untouched.discriminator.state_dict():
            moved += int(not torch.equal(value, untouched.discriminator.state_dict()[key.removeprefix("discriminator.")].float()))
    assert moved > 0  # the step changed the weights, so matching them means something
    if name == "tiny-wgan-gp":
        assert single["metric.gradient_penalty"].item() > 0


def check_training_run(two_processes: Path, tiny_h5: Path) -> None:
    """The training entry on 2 ranks: rank 0 alone writes; its checkpoint resumes in 1 process."""
    run = two_processes / "run"
    log = [json.loads(line) for line in (run / METRICS_LOG).read_text().splitlines()]
    assert [line["step"] for line in log] == [2, 4, 6]  # one writer: no line twice
    assert log[0]["discriminator_loss"] != pytest.approx(log[-1]["discriminator_loss"], abs=1e-3)
    assert log[0]["generator_loss"] != pytest.approx(log[-1]["generator_loss"], abs=1e-3)
    card = json.loads((run / "model.json").read_text())
    assert card["processes"] == 2 and card["steps"] == STEPS
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-00000003.png", "step-00000006.png"]
    assert (two_processes / "stdout.txt").read_text().count("wrote ") == 1  # rank 0 alone reports

    # A checkpoint of a 2-process run continues in 1 process (same global batch, same data order).
    recipe = load_recipe("tiny-cgan", [f"train.steps={STEPS + 2}", "train.log_every=2", "train.checkpoint_every=3", "train.sample_every=0"])
    train(recipe, tiny_h5, run, resume=True, progress=False)
    log = [json.loads(line) for line in (run / METRICS_LOG).read_text().splitlines()]
    assert [line["step"] for line in log] == [2, 4, 6, 8]
    assert json.loads((run / "model.json").read_text())["processes"] == 1


def test_a_global_batch_that_does_not_divide_among_the_ranks_is_refused(
    tiny_h5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As torchrun would start it with 2 processes: refused in one line before any process group is joined."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = runner.invoke(app, ["train", "tiny-cgan", "--data", str(tiny_h5), "--out", str(tmp_path / "run"), "--set", "train.batch_size=7"])
    assert_one_line_error(result, "train.batch_size 7", "multiple of 2")
    assert not (tmp_path / "run").exists()


def test_distributed_flag_prints_the_torchrun_lines(tiny_h5: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "tiny-cgan", "--data", str(tiny_h5), "--out", str(tmp_path / "run"), "--set", "train.steps=5", "--distributed"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("torchrun")]
    arguments = f"-m augmentor.train tiny-cgan --data {tiny_h5} --out {tmp_path / 'run'} --set=train.steps=5"
    assert lines[0] == f"torchrun --nproc-per-node=2 --standalone {arguments}"  # no GPU here: 2 CPU processes
    assert lines[1].startswith("torchrun --nproc-per-node=2 --nnodes=2 --rdzv-backend=c10d --rdzv-endpoint=") and lines[1].endswith(arguments)
    assert not (tmp_path / "run").exists()  # printed, not run

