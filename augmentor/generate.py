"""Generate labelled synthetic samples from a trained model into the HDF5 contract.

Determinism: sample i of class c depends only on (model weights, c, seed, i). Latent vectors are drawn
in aligned blocks of :data:`GROUP` samples, block b of class c from ``SeedSequence([seed, c, b])``, and
the network always runs on whole aligned blocks (a run that needs part of a block computes all of it
and keeps its part). So neither ``batch_size`` nor a split into shards (``start``) changes a byte:
convolutions see the same inputs in the same batch shape whatever the caller asks for.

Sharded runs rely on that: ``shards=K`` (``augment generate --shards K``) splits the samples into K
consecutive parts written by K local processes, and under torchrun each rank writes one part on its own
device; each part is its own file written atomically, and an HDF5 virtual dataset
(:func:`augmentor.data.shards.join_shards`) joins them into the requested output, identical in content to
a single-process run. On a cluster without torchrun, a job array does the same with ``--start`` and
``augment join`` (see the README).
"""

from __future__ import annotations

import copy
import itertools
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augmentor.data.provenance import make_provenance, stored_path
from augmentor.data.schema import Source
from augmentor.data.writer import H5Writer, check_output
from augmentor.errors import AugmentorError
from augmentor.models.dcgan import fold_resize_upsampling
from augmentor.progress import progress_bar
from augmentor.training.device import resolve_device
from augmentor.training.distributed import Distributed

GROUP = 256  # forward-pass and latent-block size, aligned to absolute sample indices
ALL_CLASSES = "all"
# lzf on CT patches stores ~40 % of the raw bytes (bench/dataset.py); plan for 60 % to be safe.
COMPRESSED_FRACTION = 0.6


@dataclass(frozen=True)
class ClassRequest:
    """``count`` samples of class ``name`` (index ``label`` in the model's class list)."""

    name: str
    label: int
    count: int


def parse_class_requests(classes: Sequence[str], default_count: int | None, class_names: Sequence[str]) -> list[ClassRequest]:
    """Turn ``["cyst", "hemangioma=500"]`` or ``["all"]`` into per-class requests.

    Args:
        classes: class names, ``name=count`` items, or ``all`` (every class of the model).
        default_count: the count for items without ``=count`` (``--n``).
        class_names: the model's ordered class names.
    """
    from augmentor.errors import look_up_option

    requests: dict[str, int] = {}
    for item in classes:
        name, _, count_text = item.partition("=")
        name = name.strip()
        if count_text:
            try:
                count = int(count_text)
            except ValueError:
                raise AugmentorError(f"--class {item!r}: count {count_text!r} is not an integer") from None
        elif default_count is not None:
            if default_count < 1:
                raise AugmentorError(f"--n must be at least 1, got {default_count}")
            count = default_count
        else:
            raise AugmentorError(f"--class {item!r}: give --n or {name}=COUNT")
        if count < 1:
            raise AugmentorError(f"--class {item!r}: count must be at least 1")
        names = list(class_names) if name == ALL_CLASSES else [look_up_option(name, class_names, "class")]
        for each in names:
            if each in requests:
                raise AugmentorError(f"class {each!r} requested twice")
            requests[each] = count
    if not requests:
        raise AugmentorError("no class requested; pass --class NAME (or --class all)")
    return [ClassRequest(name, list(class_names).index(name), count) for name, count in requests.items()]


def latent_block(seed: int, label: int, block: int, latent_dim: int) -> np.ndarray:
    """The (GROUP, latent_dim) float32 latents of aligned block ``block`` of class ``label``."""
    generator = np.random.default_rng(np.random.SeedSequence([seed, label, block]))
    return generator.standard_normal((GROUP, latent_dim), dtype=np.float32)


def _pair(values: Sequence[float]) -> tuple[float, float]:
    return float(values[0]), float(values[1])


def pick_device(device: str | None) -> torch.device:
    """``None``/"auto": CUDA when available, else CPU; otherwise the device named (checked: one-line errors)."""
    return resolve_device(device or None)


class SampleStream:
    """Iterates over (images HU int16, masks uint8) for samples [start, stop) of one class."""

    def __init__(self, network: torch.nn.Module, card: Mapping[str, Any], device: torch.device, seed: int) -> None:
        # resize upsampling sampled as the equal transposed convolutions: the same samples, ~3.7x faster here;
        # channels-last activations: the same bytes again, ~1.2x faster on a CPU (oneDNN's preferred layout)
        self.network = fold_resize_upsampling(copy.deepcopy(network)).to(memory_format=torch.channels_last)
        self.device = device
        self.seed = seed
        self.window = tuple(card["hu_window"])
        self.latent_dim = int(card["architecture"]["config"]["latent_dim"])
        self.image_channels = int(card["architecture"]["config"].get("image_channels", 1))

    @torch.inference_mode()
    def group(self, label: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Images (GROUP, C, H, W) int16 HU and masks (GROUP, H, W) uint8 of one aligned block."""
        latents = torch.from_numpy(latent_block(self.seed, label, block, self.latent_dim))
        if self.device.type == "cuda":
            latents = latents.pin_memory()  # an asynchronous copy: the GPU does not wait on the host
        latents = latents.to(self.device, non_blocking=True)
        labels = torch.full((GROUP,), label, dtype=torch.long, device=self.device)
        output = self.network(latents, labels).float().contiguous()
        # The mask channel is a tanh output or a logit (card: architecture.config.mask_output); > 0 is lesion for both.
        masks = (output[:, self.image_channels] > 0).to(torch.uint8)
        # denormalise in place (the network output is not needed again): HU = (x + 1) * half + low
        low, high = self.window
        half = (high - low) / 2.0
        images = output[:, : self.image_channels].add_(1.0).mul_(half).add_(low).round_()
        return images.to(torch.int16).cpu().numpy(), masks.cpu().numpy()

    def range(self, label: int, start: int, stop: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (images, masks) batches of about ``batch_size`` covering [start, stop)."""
        images_parts: list[np.ndarray] = []
        masks_parts: list[np.ndarray] = []
        pending = 0
        for block in range(start // GROUP, (stop + GROUP - 1) // GROUP if stop > start else start // GROUP):
            low, high = max(start, block * GROUP), min(stop, (block + 1) * GROUP)
            images, masks = self.group(label, block)
            offset = block * GROUP
            images_parts.append(images[low - offset : high - offset])
            masks_parts.append(masks[low - offset : high - offset])
            pending += high - low
            if pending >= batch_size:
                yield np.concatenate(images_parts), np.concatenate(masks_parts)
                images_parts, masks_parts, pending = [], [], 0
        if pending:
            yield np.concatenate(images_parts), np.concatenate(masks_parts)


def generate(
    classes: Sequence[str] | str,
    n: int | None,
    out: str | Path,
    *,
    model: str | Path | None = None,
    seed: int = 0,
    start: int = 0,
    batch_size: int = 1024,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    shards: int = 1,
    world: Distributed | None = None,
) -> Path:
    """Write synthetic (image, mask, label) samples to ``out``.

    Args:
        classes: class names, ``name=count`` items or ``all``; several at once are written one class
            after the other.
        n: samples per class (for items without ``=count``).
        out: output .h5 path (refused if it exists, unless ``overwrite``).
        model: zoo name or model directory; default: the shipped/user model that knows the classes.
        seed: sample i of class c depends only on (model, c, seed, i).
        start: index of the first sample of each class (a shard of a larger run).
        batch_size: samples per write (memory use is flat in the total).
        device: "cpu", "cuda", ... or None for auto.
        overwrite: replace an existing output (only once the new one is complete).
        progress: show a progress bar with rate and ETA.
        shards: write with this many local processes, one shard file each
            (``OUT.shard-001-of-004.h5`` next to ``out``), joined into ``out`` by an HDF5 virtual dataset.
        world: under torchrun (:func:`augmentor.training.distributed.environment_world`), each rank writes
            one shard on its own device and rank 0 joins them (``shards`` is then ignored).

    Returns:
        The written path (the same samples, byte for byte, however it was sharded).
    """
    from augmentor.zoo import model_for_classes, resolve_model

    class_list = [classes] if isinstance(classes, str) else list(classes)
    if n is not None and n < 1:  # before the model loads: an empty file is never what was meant
        raise AugmentorError(f"--n must be at least 1, got {n}")
    output = check_output(out, overwrite)
    if start < 0:
        raise AugmentorError(f"start must be >= 0, got {start}")
    if batch_size <= 0:
        raise AugmentorError(f"batch size must be positive, got {batch_size}")
    if shards < 1:
        raise AugmentorError(f"--shards must be at least 1, got {shards}")
    if model is not None:
        entry = resolve_model(model)
    else:
        plain = [item.partition("=")[0].strip() for item in class_list]
        if ALL_CLASSES in plain:
            raise AugmentorError("--class all needs --model NAME (which model's classes?)")
        entry = model_for_classes(plain)
    card = entry.card
    if card.get("algorithm") == "cyclegan":
        raise AugmentorError(f"model {entry.name!r} is a translation model (CycleGAN): use augment translate --model {entry.name} --input PHANTOMS.h5")
    requests = parse_class_requests(class_list, n, card["class_names"])
    total = sum(request.count for request in requests)
    pick_device(device)  # an unusable device is refused before any process starts

    config = card["architecture"]["config"]
    channels, size = int(config.get("image_channels", 1)), int(config["image_size"])
    estimate = int(total * size * size * (2 * channels + 1) * COMPRESSED_FRACTION) + (1 << 20)
    free = shutil.disk_usage(output.parent).free
    if estimate > free:
        raise AugmentorError(f"{output}: about {estimate / 2**30:.2f} GiB needed, only {free / 2**30:.2f} GiB free on that disk")

    job = GenerationJob(entry.path, entry.name, entry.origin, tuple(requests), seed, start, batch_size, device, overwrite)
    if world is not None and world.is_distributed:
        return _generate_on_ranks(job, output, world)
    if shards > 1:
        return _generate_local_shards(job, output, shards, progress)
    pieces = [(request.label, start, start + request.count) for request in requests]
    return write_samples(job, output, pieces, None, progress)


@dataclass(frozen=True)
class GenerationJob:
    """A validated generate request (picklable: shard processes receive it)."""

    model_path: Path
    model_name: str
    model_origin: str
    requests: tuple[ClassRequest, ...]
    seed: int
    start: int
    batch_size: int
    device: str | None
    overwrite: bool


Piece = tuple[int, int, int]  # (class label, first sample index, stop index)


def shard_pieces(requests: Sequence[ClassRequest], start: int, shards: int) -> list[list[Piece]]:
    """Split the samples of a run (class after class) into ``shards`` consecutive parts of near-equal size.

    Joined in order, the parts are the single-process file's sample order, and since sample i of class c
    depends only on (model, c, seed, i), the same samples.
    """
    sequence = [(request.label, start, start + request.count) for request in requests]
    total = sum(stop - begin for _, begin, stop in sequence)
    if shards > total:
        raise AugmentorError(f"--shards {shards} is more than the {total} samples asked for")
    bounds = [total * index // shards for index in range(shards + 1)]
    parts: list[list[Piece]] = []
    for low, high in itertools.pairwise(bounds):
        part, offset = [], 0
        for label, begin, stop in sequence:
            count = stop - begin
            take_low, take_high = max(low - offset, 0), min(high - offset, count)
            if take_low < take_high:
                part.append((label, begin + take_low, begin + take_high))
            offset += count
        parts.append(part)
    return parts


def shard_path(output: Path, index: int, shards: int) -> Path:
    """Where shard ``index`` of ``shards`` of ``output`` is written (next to it: the joined file points at it)."""
    return output.with_name(f"{output.stem}.shard-{index:03d}-of-{shards:03d}{output.suffix}")


def write_samples(job: GenerationJob, output: Path, pieces: Sequence[Piece], shard: tuple[int, int] | None, progress: bool) -> Path:
    """Write the samples of ``pieces`` to ``output`` (atomically). ``shard``: (index, count) for provenance."""
    from augmentor.models.card import load_generator

    chosen_device = pick_device(job.device)
    network, card = load_generator(job.model_path, device=chosen_device)
    stream = SampleStream(network, card, chosen_device, job.seed)
    config = card["architecture"]["config"]
    channels, size = int(config.get("image_channels", 1)), int(config["image_size"])
    training = card.get("training_data", {}) or {}
    details: dict[str, Any] = {
        "classes": {r.name: r.count for r in job.requests}, "start": job.start, "latent_group": GROUP, "device": str(chosen_device),
    }
    if shard is not None:
        names = {r.label: r.name for r in job.requests}
        details["shard"] = {"index": shard[0], "of": shard[1], "samples": [[names[label], begin, stop] for label, begin, stop in pieces]}
    provenance = make_provenance(
        seed=job.seed,
        recipe=card.get("recipe"),
        model={
            "name": job.model_name,
            "origin": job.model_origin,
            "weights_sha256": card["weights_sha256"],
            "trained_on_sha256": training.get("sha256"),
            "trained_on_patients_sha256": training.get("patients_sha256"),
            "trained_on_path": stored_path(training["path"]) if training.get("path") else None,
        },
        details=details,
    )
    total = sum(stop - begin for _, begin, stop in pieces)
    with (
        H5Writer(
            output,
            class_names=card["class_names"],
            image_shape=(channels, size, size),
            source=Source.SYNTHETIC,
            mask_label_names=("background", "lesion"),
            pixel_spacing_mm=_pair(card.get("pixel_spacing_mm", (1.0, 1.0))),
            hu_window=_pair(card["hu_window"]),
            provenance=provenance,
            overwrite=job.overwrite,
            with_patient_ids=False,
        ) as writer,
        progress_bar(f"generate {', '.join(r.name for r in job.requests)}", total, enabled=progress) as advance,
    ):
        for label, begin, stop in pieces:
            for images, masks in stream.range(label, begin, stop, job.batch_size):
                writer.append(images, masks, np.full(len(images), label))
                advance(len(images))
    return output


def _shard_device(device: str | None, index: int) -> str | None:
    """Local shards spread over the GPUs when the device is left to auto-detection."""
    if device in (None, "", "auto") and torch.cuda.is_available():
        return f"cuda:{index % torch.cuda.device_count()}"
    return device


def _generate_local_shards(job: GenerationJob, output: Path, shards: int, progress: bool) -> Path:
    """``shards`` local processes write one shard each, then a virtual-dataset file joins them into ``output``."""
    from augmentor.data.shards import join_shards

    parts = shard_pieces(job.requests, job.start, shards)
    paths = [check_output(shard_path(output, index, shards), job.overwrite) for index in range(shards)]
    threads = max(1, (os.cpu_count() or 1) // shards)  # the cores shared out, not oversubscribed
    total = sum(request.count for request in job.requests)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    with (
        ProcessPoolExecutor(max_workers=shards, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,)) as pool,
        progress_bar(f"generate {shards} shards", total, enabled=progress) as advance,
    ):
        futures = {
            pool.submit(write_samples, replace(job, device=_shard_device(job.device, index)), path, part, (index, shards), False): part
            for index, (path, part) in enumerate(zip(paths, parts, strict=True))
        }
        for future in as_completed(futures):
            future.result()
            advance(sum(stop - begin for _, begin, stop in futures[future]))
    return join_shards(paths, output, overwrite=job.overwrite)


def _generate_on_ranks(job: GenerationJob, output: Path, world: Distributed) -> Path:
    """Under torchrun: rank r writes shard r on its own device; rank 0 joins them once all are written."""
    from augmentor.data.shards import join_shards
    from augmentor.training.distributed import barrier, init_distributed, shutdown_distributed

    parts = shard_pieces(job.requests, job.start, world.world_size)
    paths = [shard_path(output, index, world.world_size) for index in range(world.world_size)]
    _, device = init_distributed(job.device)
    try:
        write_samples(replace(job, device=str(device)), paths[world.rank], parts[world.rank], (world.rank, world.world_size), False)
        barrier(world)
        if world.is_main:
            join_shards(paths, output, overwrite=job.overwrite)
    except BaseException:
        shutdown_distributed(wait=False)
        raise
    shutdown_distributed()
    return output
