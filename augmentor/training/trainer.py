"""The generic training loop, written once for every algorithm.

It draws batches, calls ``algorithm.update(batch)``, keeps the EMA of the generator, logs metrics to
``metrics.jsonl``, writes sample grids and checkpoints, and drives a rich progress bar. It knows nothing
about losses or networks beyond the :class:`~augmentor.training.algorithm.Algorithm` interface.

No host synchronisation per step: ``update`` returns device tensors; they are averaged and read back
once per ``log_every`` steps (and at sample/checkpoint steps).

Exact resume: a checkpoint holds everything a step depends on (networks, optimisers, loss scalers, EMA,
the algorithm's generator, the data order, the process-wide RNGs, the step), and sampling works on a
copy of the EMA network, so a run resumed from a checkpoint continues bit for bit as the uninterrupted
run would have (on the CPU; GPU kernels are not all deterministic).

Data-parallel: every rank runs the loop; metrics are averaged over ranks at logging steps only (one
all-reduce per ``log_every`` steps), and rank 0 alone writes the log, sample grids and checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from torch import nn

from augmentor.training.algorithm import Algorithm
from augmentor.training.checkpoint import (
    global_rng_state,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_global_rng_state,
)
from augmentor.training.data import BatchSource
from augmentor.training.distributed import SINGLE_PROCESS, Distributed, all_ranks_mean
from augmentor.training.ema import ExponentialMovingAverage

METRICS_LOG = "metrics.jsonl"
CHECKPOINTS = "checkpoints"

Sampler = Callable[[nn.Module, int], Path]


class Monitor(Protocol):
    """Scores the EMA network every ``every`` steps and at the end (:class:`evaluation.monitor.TrainingMonitor`);
    its state (the best step so far) goes into every checkpoint."""

    every: int

    def __call__(self, network: nn.Module, step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any] | None, step: int) -> None: ...


@dataclass(frozen=True)
class TrainingResult:
    steps: int
    wall_time_s: float
    final_metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


class Trainer:
    """Runs an algorithm for a number of steps with logging, sampling, checkpoints and EMA.

    Args:
        algorithm: the update rule (owns networks and optimisers).
        batches: the training data source.
        directory: the run directory (``metrics.jsonl``, ``checkpoints/``; the sampler picks its own place).
        steps: total steps of the run (a resumed run continues to this count).
        ema: EMA of ``ema_source`` updated after every step (None: no EMA).
        ema_source: the network the EMA follows (the generator).
        sampler: called as ``sampler(network, step)`` every ``sample_every`` steps and at the end, with the
            EMA network (or ``ema_source`` without EMA).
        checkpoint_every, sample_every, log_every: intervals in steps (0 turns sampling off).
        keep_checkpoints: how many checkpoints to keep.
        metadata: stored in every checkpoint's JSON (resolved recipe, data hash, ...).
        progress: show a rich progress bar.
        world: this process's place in a data-parallel run (rank 0 writes every file).
        monitor: called as ``monitor(network, step)`` with the EMA network every ``monitor.every`` steps and at
            the end, on rank 0, after the sample grid and before the checkpoint (which stores its state).
    """

    def __init__(
        self,
        algorithm: Algorithm,
        batches: BatchSource,
        directory: Path,
        *,
        steps: int,
        ema: ExponentialMovingAverage | None = None,
        ema_source: nn.Module | None = None,
        sampler: Sampler | None = None,
        checkpoint_every: int = 1000,
        sample_every: int = 1000,
        log_every: int = 50,
        keep_checkpoints: int = 2,
        metadata: Mapping[str, Any] | None = None,
        progress: bool = True,
        description: str = "training",
        world: Distributed = SINGLE_PROCESS,
        monitor: Monitor | None = None,
    ) -> None:
        if ema is not None and ema_source is None:
            raise ValueError("an EMA needs the network it follows (ema_source)")
        self.algorithm = algorithm
        self.batches = batches
        self.directory = Path(directory)
        self.steps = steps
        self.ema = ema
        self.ema_source = ema_source
        self.sampler = sampler
        self.checkpoint_every = max(1, checkpoint_every)
        self.sample_every = sample_every
        self.log_every = max(1, log_every)
        self.keep_checkpoints = keep_checkpoints
        self.metadata = dict(metadata or {})
        self.progress = progress
        self.description = description
        self.world = world
        self.monitor = monitor
        self.step = 0
        self.wall_time_before = 0.0  # seconds spent in earlier sessions of a resumed run
        self.last_metrics: dict[str, float] = {}
        self.last_checkpoint: Path | None = None

    # --- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "algorithm": self.algorithm.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "data": self.batches.state_dict(),
            "global_rng": global_rng_state(),
            "last_metrics": dict(self.last_metrics),
            **({"monitor": self.monitor.state_dict()} if self.monitor is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.algorithm.load_state_dict(state["algorithm"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.batches.load_state_dict(state["data"])
        set_global_rng_state(state["global_rng"])
        self.step = int(state["step"])
        self.last_metrics = dict(state.get("last_metrics") or {})
        if self.monitor is not None:
            self.monitor.load_state_dict(state.get("monitor"), self.step)

    def restore(self, checkpoint: Path) -> int:
        """Load a checkpoint, drop later lines of the metrics log, and return the step it was taken at."""
        state, record = load_checkpoint(checkpoint)
        self.load_state_dict(state)
        self.wall_time_before = float(record["metadata"].get("wall_time_s", 0.0))
        self.last_checkpoint = checkpoint
        log = self.directory / METRICS_LOG
        if self.world.is_main and log.exists():
            kept = [line for line in log.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= self.step]
            log.write_text("".join(f"{line}\n" for line in kept))
        return self.step

    def save(self, elapsed: float) -> Path:
        metadata = {**self.metadata, "wall_time_s": elapsed}
        path = save_checkpoint(self.directory / CHECKPOINTS, self.step, self.state_dict(), metadata)
        prune_checkpoints(self.directory / CHECKPOINTS, self.keep_checkpoints)
        self.last_checkpoint = path
        return path

    # --- the loop -------------------------------------------------------------------------------

    def _log(self, window: list[dict[str, torch.Tensor]], elapsed: float, stream: Any) -> None:
        keys = list(window[0])
        means = torch.stack([torch.stack([m[k].float() for k in keys]) for m in window]).mean(dim=0)
        self.last_metrics = dict(zip(keys, all_ranks_mean(means, self.world).tolist(), strict=True))
        if stream is not None:
            stream.write(json.dumps({"step": self.step, "elapsed_s": round(elapsed, 3), **self.last_metrics}) + "\n")
            stream.flush()

    def _progress_bar(self) -> Progress:
        """The project's convention (augmentor.progress): on stderr, transient, silent unless a terminal."""
        console = Console(stderr=True)
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=True,
            disable=not (self.progress and console.is_terminal and self.world.is_main),
        )

    def sample_network(self) -> nn.Module | None:
        return self.ema.shadow if self.ema is not None else self.ema_source

    def run(self) -> TrainingResult:
        """Train from the current step to ``steps``. Returns the steps, wall time and last metrics."""
        self.directory.mkdir(parents=True, exist_ok=True)
        start_time, start_step = time.perf_counter(), self.step
        window: list[dict[str, torch.Tensor]] = []
        per_step = self.algorithm.real_batches_per_step
        main = self.world.is_main
        log = open(self.directory / METRICS_LOG, "a") if main else contextlib.nullcontext()  # noqa: SIM115
        with log as stream, self._progress_bar() as bar:
            task = bar.add_task(self.description, total=self.steps, completed=self.step, rate="", info="")
            while self.step < self.steps:
                metrics = self.algorithm.update(self.batches.next(per_step))
                if main and self.ema is not None and self.ema_source is not None:
                    self.ema.update(self.ema_source)  # ranks hold identical weights; only rank 0's EMA is saved
                self.step += 1
                window.append(metrics)
                final = self.step == self.steps
                elapsed = self.wall_time_before + time.perf_counter() - start_time
                if self.step % self.log_every == 0 or final:
                    self._log(window, elapsed, stream)
                    window = []
                    rate = (self.step - start_step) / max(time.perf_counter() - start_time, 1e-9)
                    info = "  ".join(f"{k.removesuffix('_loss')} {v:.3f}" for k, v in self.last_metrics.items() if k.endswith("_loss"))
                    bar.update(task, rate=f"{rate:.2f} step/s", info=info)
                network = self.sample_network()
                if main and self.sampler is not None and network is not None and self.sample_every > 0 and (self.step % self.sample_every == 0 or final):
                    self.sampler(network, self.step)
                if main and self.monitor is not None and network is not None and self.monitor.every > 0 and (self.step % self.monitor.every == 0 or final):
                    self.monitor(network, self.step)
                if main and (self.step % self.checkpoint_every == 0 or final):
                    self.save(elapsed)
                bar.update(task, advance=1)
        wall = self.wall_time_before + time.perf_counter() - start_time
        return TrainingResult(self.step, wall, dict(self.last_metrics), self.last_checkpoint)
