"""Generate labelled synthetic samples from a trained model into the HDF5 contract.

Determinism: sample i of class c depends only on (model weights, c, seed, i). Latent vectors are drawn
in aligned blocks of :data:`GROUP` samples, block b of class c from ``SeedSequence([seed, c, b])``, and
the network always runs on whole aligned blocks (a run that needs part of a block computes all of it
and keeps its part). So neither ``batch_size`` nor a split into shards (``start``) changes a byte:
convolutions see the same inputs in the same batch shape whatever the caller asks for.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augmentor.data.provenance import make_provenance, stored_path
from augmentor.data.schema import Source
from augmentor.data.writer import H5Writer, check_output
from augmentor.errors import AugmentorError
from augmentor.progress import progress_bar

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
    """``None``/"auto": CUDA when available, else CPU; otherwise the device named."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise AugmentorError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise AugmentorError(f"device {device!r} requested but CUDA is not available")
    return chosen


class SampleStream:
    """Iterates over (images HU int16, masks uint8) for samples [start, stop) of one class."""

    def __init__(self, network: torch.nn.Module, card: Mapping[str, Any], device: torch.device, seed: int) -> None:
        self.network = network
        self.device = device
        self.seed = seed
        self.window = tuple(card["hu_window"])
        self.latent_dim = int(card["architecture"]["config"]["latent_dim"])
        self.image_channels = int(card["architecture"]["config"].get("image_channels", 1))

    @torch.inference_mode()
    def group(self, label: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Images (GROUP, C, H, W) int16 HU and masks (GROUP, H, W) uint8 of one aligned block."""
        latents = torch.from_numpy(latent_block(self.seed, label, block, self.latent_dim)).to(self.device)
        labels = torch.full((GROUP,), label, dtype=torch.long, device=self.device)
        output = self.network(latents, labels).float()
        masks = (output[:, self.image_channels] > 0).to(torch.uint8)  # tanh mask channel: > 0 is lesion
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

    Returns:
        The written path.
    """
    from augmentor.models.card import load_generator
    from augmentor.zoo import model_for_classes, resolve_model

    class_list = [classes] if isinstance(classes, str) else list(classes)
    if n is not None and n < 1:  # before the model loads: an empty file is never what was meant
        raise AugmentorError(f"--n must be at least 1, got {n}")
    output = check_output(out, overwrite)
    if start < 0:
        raise AugmentorError(f"start must be >= 0, got {start}")
    if batch_size <= 0:
        raise AugmentorError(f"batch size must be positive, got {batch_size}")
    if model is not None:
        entry = resolve_model(model)
    else:
        plain = [item.partition("=")[0].strip() for item in class_list]
        if ALL_CLASSES in plain:
            raise AugmentorError("--class all needs --model NAME (which model's classes?)")
        entry = model_for_classes(plain)
    card = entry.card
    requests = parse_class_requests(class_list, n, card["class_names"])
    total = sum(request.count for request in requests)
    chosen_device = pick_device(device)

    config = card["architecture"]["config"]
    channels, size = int(config.get("image_channels", 1)), int(config["image_size"])
    estimate = int(total * size * size * (2 * channels + 1) * COMPRESSED_FRACTION) + (1 << 20)
    free = shutil.disk_usage(output.parent).free
    if estimate > free:
        raise AugmentorError(f"{output}: about {estimate / 2**30:.2f} GiB needed, only {free / 2**30:.2f} GiB free on that disk")

    network, card = load_generator(entry.path, device=chosen_device)
    stream = SampleStream(network, card, chosen_device, seed)
    training = card.get("training_data", {}) or {}
    provenance = make_provenance(
        seed=seed,
        recipe=card.get("recipe"),
        model={
            "name": entry.name,
            "origin": entry.origin,
            "weights_sha256": card["weights_sha256"],
            "trained_on_sha256": training.get("sha256"),
            "trained_on_patients_sha256": training.get("patients_sha256"),
            "trained_on_path": stored_path(training["path"]) if training.get("path") else None,
        },
        details={"classes": {r.name: r.count for r in requests}, "start": start, "latent_group": GROUP, "device": str(chosen_device)},
    )
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
            overwrite=overwrite,
            with_patient_ids=False,
        ) as writer,
        progress_bar(f"generate {', '.join(r.name for r in requests)}", total, enabled=progress) as advance,
    ):
        for request in requests:
            for images, masks in stream.range(request.label, start, start + request.count, batch_size):
                writer.append(images, masks, np.full(len(images), request.label))
                advance(len(images))
    return output
