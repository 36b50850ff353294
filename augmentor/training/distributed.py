"""Data-parallel training on PyTorch's own engine: torchrun starts the processes, DDP averages gradients.

``torchrun --nproc-per-node K -m augmentor.train RECIPE --data ... --out ...`` starts K processes with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment; :func:`init_distributed` reads them,
picks the device (``cuda:LOCAL_RANK`` when GPUs are there, else the CPU) and joins the process group
(backend nccl on GPUs, gloo on CPUs). Without those variables (or with ``WORLD_SIZE=1``) everything
here is the identity and a run is exactly the single-process run.

How one global batch is split, so that K processes compute what one process would (up to float
rounding):

- the recipe's ``batch_size`` is the *global* batch; every rank draws the same global sample order and
  keeps positions ``rank, rank + K, rank + 2K, ...`` (:meth:`Distributed.rows`: the layout of
  ``torch.utils.data.DistributedSampler``), so the batch size must divide by K;
- every random draw of an update (latents, DiffAugment parameters, interpolation weights) is made for
  the whole global batch from a generator seeded alike on every rank, and each rank keeps its rows:
  randomness belongs to a sample, not to a rank;
- BatchNorm statistics are taken over the global batch (:class:`GlobalBatchNorm2d`; PyTorch's
  ``SyncBatchNorm`` does the same but only on GPUs);
- DDP averages the gradients of the per-rank mean losses, which is the gradient of the global mean.

Gradient penalty under DDP: DDP's reducer does not support double backward (``autograd.grad`` with
``create_graph=True`` through a DDP forward). So the penalty's inner gradient is taken through the plain
network (the module DDP wraps) on this rank's rows only; its term joins the same loss as the adversarial
terms, whose DDP forward armed the reducer, and one backward then leaves the total gradient in each
parameter's AccumulateGrad, where DDP's hook averages it across ranks once. The penalty is a mean of
per-sample terms, so the average of the per-rank penalties is the global batch's penalty.
"""

from __future__ import annotations

import datetime
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from augmentor.errors import AugmentorError
from augmentor.training.device import resolve_device

# Environment variables torchrun sets in every process it starts.
RANK, LOCAL_RANK, WORLD_SIZE = "RANK", "LOCAL_RANK", "WORLD_SIZE"
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=30)  # a checkpoint or sample grid on rank 0 can take a while


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes logs, sample grids, checkpoints and the model."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch (``tensor[rank::world_size]``; all of it in one process)."""
        return tensor if self.world_size == 1 else tensor[self.rank :: self.world_size]

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise AugmentorError(
                f"train.batch_size {global_batch} does not divide among {self.world_size} processes; "
                f"use a multiple of {self.world_size} (it is the global batch)"
            )
        return global_batch // self.world_size


SINGLE_PROCESS = Distributed()


def environment_world() -> Distributed:
    """The rank and world size torchrun put in the environment (single process without them)."""
    try:
        world_size = int(os.environ.get(WORLD_SIZE, "1"))
        rank = int(os.environ.get(RANK, "0"))
        local_rank = int(os.environ.get(LOCAL_RANK, str(rank)))
    except ValueError:
        raise AugmentorError(f"{RANK}/{LOCAL_RANK}/{WORLD_SIZE} must be integers (torchrun sets them)") from None
    return Distributed(rank, world_size, local_rank) if world_size > 1 else SINGLE_PROCESS


def init_distributed(device: str | None = None) -> tuple[Distributed, torch.device]:
    """Join torchrun's process group (if any) and pick this rank's device.

    Args:
        device: "auto"/None (``cuda:LOCAL_RANK`` when GPUs are available, else the CPU), "cpu", or
            "cuda" (a GPU per process, ``cuda:LOCAL_RANK``).

    Returns:
        The process's place in the run and its device.
    """
    world = environment_world()
    if not world.is_distributed:
        return world, resolve_device(device)
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise AugmentorError(
                f"local rank {world.local_rank} has no GPU ({torch.cuda.device_count()} on this node); "
                "start at most one process per GPU (--nproc-per-node)"
            )
        chosen = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT, device_id=chosen if chosen.type == "cuda" else None)
    return world, chosen


def shutdown_distributed(wait: bool = True) -> None:
    """Leave the process group; ``wait``: after a barrier, so no rank exits while another still talks to it."""
    if dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier(world: Distributed) -> None:
    if world.is_distributed:
        dist.barrier()


def all_ranks_mean(tensor: torch.Tensor, world: Distributed) -> torch.Tensor:
    """The mean of ``tensor`` over ranks (a copy; the tensor itself in one process)."""
    if not world.is_distributed:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total / world.world_size


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` with its gradient: each rank's input feeds every rank's output, so the
    gradient of an input is the sum over ranks of the output gradients (another all-reduce)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> torch.Tensor:
        total = gradient.contiguous().clone()
        dist.all_reduce(total)
        return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch, summed across ranks.

    Same parameters, buffers and state-dict keys as :class:`torch.nn.BatchNorm2d` (a network converted
    by :func:`use_global_batch_norm` saves and loads as before). The per-channel sums are all-reduced
    through a differentiable all-reduce, so the backward pass sees the global statistics too. Works on every backend (gloo included, unlike ``SyncBatchNorm``); in
    eval mode, or with no process group, it is plain BatchNorm.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        values = input.float()
        count = torch.full((1,), values.numel() / values.shape[1], device=values.device)
        sums = torch.cat([values.sum(dim=(0, 2, 3)), values.square().sum(dim=(0, 2, 3)), count])
        sums = _SumOverRanks.apply(sums)
        channels = values.shape[1]
        total = sums[-1]
        mean = sums[:channels] / total
        variance = (sums[channels : 2 * channels] / total - mean.square()).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(variance.detach() * (total / (total - 1).clamp_min(1.0)), momentum)
        shape = (1, channels, 1, 1)
        normalised = (values - mean.view(shape)) * torch.rsqrt(variance.view(shape) + self.eps)
        if self.affine:
            normalised = normalised * self.weight.view(shape) + self.bias.view(shape)
        return normalised.to(input.dtype)


def use_global_batch_norm(network: nn.Module) -> nn.Module:
    """Swap every ``BatchNorm2d`` of ``network`` (in place) for a :class:`GlobalBatchNorm2d` sharing its
    parameters and buffers (optimisers and EMAs that hold them are unaffected)."""
    for name, child in list(network.named_children()):
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            replacement._parameters = child._parameters
            replacement._buffers = child._buffers
            replacement.train(child.training)
            setattr(network, name, replacement)
        else:
            use_global_batch_norm(child)
    return network


def data_parallel(network: nn.Module, world: Distributed, device: torch.device) -> nn.Module:
    """``network`` wrapped in DistributedDataParallel (the network itself in one process).

    Buffers are not re-broadcast every forward: BatchNorm statistics are global
    (:class:`GlobalBatchNorm2d`) and spectral-norm vectors follow the weights, so ranks stay identical
    without it (DDP still broadcasts rank 0's parameters and buffers once, at construction).
    """
    if not world.is_distributed:
        return network
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=device_ids, forward_sync_buffers=False)


def torchrun_command(arguments: Sequence[str], processes: int, *, nodes: int = 1, endpoint: str = "HOST:29500") -> str:
    """The torchrun line that runs ``python -m augmentor.train ARGUMENTS`` on ``processes`` per node."""
    launcher = ["torchrun", f"--nproc-per-node={processes}"]
    if nodes > 1:
        launcher += [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", "--rdzv-id=augmentor-train"]
    else:
        launcher.append("--standalone")
    return shlex.join([*launcher, "-m", "augmentor.train", *arguments])


def distributed_instructions(arguments: Sequence[str], batch_size: int) -> str:
    """What ``augment train --distributed`` prints: the torchrun lines for this machine and for several nodes."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    processes = gpus or 2
    where = f"{gpus} GPU(s), one process each (nccl)" if gpus else "no GPU: 2 CPU processes (gloo)"
    return "\n".join([
        f"# this machine ({where}):",
        torchrun_command(arguments, processes),
        "# several nodes: run this on every node; HOST:29500 is an address of the first node that all nodes reach",
        torchrun_command(arguments, processes, nodes=2),
        f"# train.batch_size ({batch_size}) is the global batch, shared by all processes: it must divide by their number",
        "# (nodes x processes per node); raise it with --set train.batch_size=... to give each GPU more work.",
    ])
