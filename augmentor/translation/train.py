"""``train_cyclegan(recipe, data_a, data_b, out)``: a ``cyclegan`` recipe and two unpaired files in, a
translation model directory out.

The run directory ``out`` holds:

- ``model.safetensors`` + ``model.json``: the A -> B generator (phantom -> CT) and its card (``algorithm``
  "cyclegan"); what ``augment translate`` loads;
- ``reverse/``: the B -> A generator (the steganography probe runs the cycle through it);
- ``segmenter/``: the hallucination judge, a UNet trained on labelled domain-B slices only (absent when
  domain B has no labels; ``augment translate --segmenter DIR`` then names one);
- ``recipe.json``, ``metrics.jsonl``, ``samples/step-*.png`` (rows A, A->B, A->B->A, B, B->A, B->A->B) and
  ``checkpoints/``, from which ``resume=True`` continues exactly (:mod:`augmentor.training.trainer`).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augmentor.data.provenance import command_line, stored_path
from augmentor.data.reader import read_info
from augmentor.errors import AugmentorError
from augmentor.models.card import save_model, write_json_atomic
from augmentor.models.registry import build_network
from augmentor.recipes import to_dict
from augmentor.training.cyclegan import CycleGAN
from augmentor.training.data import TrainingSet, load_training_set
from augmentor.training.device import Precision, resolve_device, resolve_precision
from augmentor.training.run import (
    RESOLVED_RECIPE,
    SAMPLES,
    _check_output,
    _clear_output,
    derive_seed,
    resume_checkpoint,
)
from augmentor.training.samples import CycleSampleGrid
from augmentor.training.trainer import Trainer
from augmentor.training.unpaired import UnpairedBatches
from augmentor.translation.recipe import CycleGanRecipe

REVERSE = "reverse"
SEGMENTER = "segmenter"
SAMPLE_SLICES = 4
SPACING_TOLERANCE = 0.02  # relative difference of pixel spacing tolerated between the domains


def load_domain(path: str | Path, option: str, window: tuple[float, float]) -> TrainingSet:
    """One domain's training file, refused in one line if empty or not single-channel."""
    info = read_info(path)
    if info.num_samples == 0:
        raise AugmentorError(f"{option} {stored_path(path)}: holds no samples")
    if info.image_shape[0] != 1:
        raise AugmentorError(f"{option} {stored_path(path)}: has {info.image_shape[0]} image channels; CycleGAN translates single-channel slices")
    return load_training_set(path, (), window)


def has_labels(data: TrainingSet) -> bool:
    """Whether a domain's masks label anything (a label map with more than background)."""
    return len(data.mask_label_names) > 1 and bool(data.masks.any())


def check_domains(domain_a: TrainingSet, domain_b: TrainingSet, crop_size: int) -> None:
    """Refuse domains that cannot be trained together, in one line each."""
    size_a, size_b = domain_a.image_shape[1:], domain_b.image_shape[1:]
    if size_a != size_b:
        raise AugmentorError(
            f"--data-a is {size_a[0]}x{size_a[1]} and --data-b is {size_b[0]}x{size_b[1]}: the domains must have the same "
            "image size and pixel spacing (anatomy must be at the same scale in both)"
        )
    spacing_a, spacing_b = domain_a.pixel_spacing_mm[0], domain_b.pixel_spacing_mm[0]
    if abs(spacing_a - spacing_b) > SPACING_TOLERANCE * max(spacing_a, spacing_b):
        raise AugmentorError(f"--data-a has {spacing_a:.3f} mm pixels and --data-b {spacing_b:.3f} mm: resample one domain to the other's spacing")
    if crop_size > min(size_a):
        raise AugmentorError(f"model.image_size {crop_size} is larger than the slices ({size_a[0]}x{size_a[1]}); set --set model.image_size={min(size_a)}")


def build_cyclegan(
    recipe: CycleGanRecipe, *, judge: bool, structure: bool, num_labels: int, device: torch.device, precision: Precision
) -> CycleGAN:
    """The four networks (and segmenters), seeded and built on the CPU so every device starts alike, and the rule."""
    model, settings = recipe.model, recipe.train
    generator = {"base_channels": model.generator_channels, "residual_blocks": model.residual_blocks,
                 "downsamplings": model.downsamplings, "upsampling": model.upsampling}
    discriminator = {"base_channels": model.discriminator_channels, "num_layers": model.discriminator_layers,
                     "normalization": model.discriminator_normalization}
    segmenter = {"num_labels": num_labels, "channels": list(model.segmenter_channels), "residual_units": model.segmenter_residual_units}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(settings.seed, "initialisation"))
        networks = [build_network(model.generator, **generator), build_network(model.generator, **generator),
                    build_network(model.discriminator, **discriminator), build_network(model.discriminator, **discriminator)]
        judge_network = build_network("unet-segmenter", **segmenter) if judge else None
        structure_network = build_network("unet-segmenter", **segmenter) if structure else None
        # built last: the networks above start alike with or without it
        structure_network_a = build_network("unet-segmenter", **segmenter) if structure else None
    return CycleGAN(
        *networks, judge=judge_network, structure_segmenter=structure_network, structure_segmenter_a=structure_network_a,
        loss=settings.loss, lr=settings.lr,
        betas=settings.betas, steps=settings.steps, decay_from=settings.decay_from, lambda_cycle=settings.lambda_cycle,
        lambda_identity=settings.lambda_identity, lambda_structure=settings.lambda_structure, pool_size=settings.pool_size,
        precision=precision, seed=derive_seed(settings.seed, "image-pool"), device=device,
    )


def _domain_record(data: TrainingSet) -> dict[str, Any]:
    return {
        "path": stored_path(data.path), "sha256": data.sha256, "patients_sha256": data.patients_sha256,
        "num_samples": len(data), "num_patients": data.num_patients, "image_size": list(data.image_shape[1:]),
        "pixel_spacing_mm": list(data.pixel_spacing_mm), "mask_label_names": list(data.mask_label_names),
    }


def _sample_slices(data: TrainingSet, window: tuple[float, float]) -> torch.Tensor:
    """Evenly spaced whole slices of a domain in [-1, 1], for the sample grids."""
    from augmentor.data.intensity import normalise

    index = torch.linspace(0, len(data) - 1, min(SAMPLE_SLICES, len(data))).round().long()
    return torch.as_tensor(normalise(data.hu[index].float(), window))


def train_cyclegan(
    recipe: CycleGanRecipe,
    data_a: str | Path | None,
    data_b: str | Path | None,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
    single_file: str | Path | None = None,
) -> Path:
    """Train a CycleGAN from domain A (phantoms) to domain B (CT) and write its model directory.

    Args:
        recipe: a validated ``cyclegan`` recipe.
        data_a: the source-domain file (phantom slices with their label maps).
        data_b: the target-domain file (CT slices; with organ labels, the judge and the structure term train).
        out: the run directory (created).
        resume: continue from the newest checkpoint in ``out`` (same recipe and data; ``train.steps`` may grow).
        overwrite: replace a previous run's outputs in ``out``.
        device: "cpu", "cuda", ...; default: a CUDA GPU if there is one.
        progress: show a progress bar.
        single_file: what was passed as ``--data`` (refused: a CycleGAN trains on two domains).

    Returns:
        ``out``, holding ``model.safetensors``, ``model.json``, ``reverse/`` and (with labelled B) ``segmenter/``.
    """
    if single_file is not None:
        raise AugmentorError("a cyclegan recipe trains on two domains: pass --data-a PHANTOMS.h5 --data-b CT.h5, not --data")
    if data_a is None or data_b is None:
        raise AugmentorError(f"missing option {'--data-a' if data_a is None else '--data-b'}: a cyclegan recipe needs --data-a PHANTOMS.h5 --data-b CT.h5")
    out = Path(out)
    _check_output(out, resume, overwrite)
    resolved = to_dict(recipe)
    settings, window = recipe.train, recipe.data.hu_window
    torch_device = resolve_device(device)
    precision = resolve_precision(settings.mixed_precision, torch_device)
    domain_a, domain_b = load_domain(data_a, "--data-a", window), load_domain(data_b, "--data-b", window)
    check_domains(domain_a, domain_b, recipe.model.image_size)
    labelled_b = has_labels(domain_b)
    if settings.structure_consistency:
        if not labelled_b:
            raise AugmentorError("train.structure_consistency needs organ labels in --data-b; its masks are empty")
        if domain_a.mask_label_names != domain_b.mask_label_names:
            raise AugmentorError("train.structure_consistency needs the same mask_label_names in --data-a and --data-b")
    judge = settings.judge and labelled_b
    metadata = {"recipe": resolved, "training_data_sha256": f"{domain_a.sha256}+{domain_b.sha256}"}
    checkpoint = resume_checkpoint(out, metadata) if resume else None
    _clear_output(out, resume)
    if not resume:
        for folder in (REVERSE, SEGMENTER):
            shutil.rmtree(out / folder, ignore_errors=True)

    random.seed(settings.seed)
    np.random.seed(settings.seed % 2**32)
    torch.manual_seed(settings.seed)
    num_labels = max(len(domain_b.mask_label_names), int(domain_b.masks.max()) + 1)
    algorithm = build_cyclegan(recipe, judge=judge, structure=settings.structure_consistency, num_labels=num_labels,
                               device=torch_device, precision=precision)
    batches = UnpairedBatches(domain_a, domain_b, settings.batch_size, recipe.model.image_size,
                              derive_seed(settings.seed, "data-order"), torch_device)
    sampler = CycleSampleGrid(out / SAMPLES, algorithm.generator_ab, algorithm.generator_ba,
                              _sample_slices(domain_a, window), _sample_slices(domain_b, window))
    trainer = Trainer(
        algorithm, batches, out, steps=settings.steps, ema=None, ema_source=algorithm.generator_ab,
        sampler=sampler, checkpoint_every=settings.checkpoint_every, sample_every=settings.sample_every,
        log_every=settings.log_every, keep_checkpoints=settings.keep_checkpoints, metadata=metadata, progress=progress,
        description=recipe.name or out.name,
    )
    if checkpoint is not None:
        trainer.restore(checkpoint)
    write_json_atomic(out / RESOLVED_RECIPE, resolved)
    result = trainer.run()

    card: dict[str, Any] = {
        "algorithm": "cyclegan",
        "class_names": list(domain_a.class_names),
        "hu_window": list(window),
        "image_size": recipe.model.image_size,
        "image_channels": 1,
        "modality": domain_b.modality,
        "pixel_spacing_mm": list(domain_b.pixel_spacing_mm),
        "mask_label_names": list(domain_a.mask_label_names),
        "translation": {
            "direction": "A -> B", "from": "phantom (domain A)", "to": "CT (domain B)",
            "fully_convolutional": True, "reverse": REVERSE, "segmenter": SEGMENTER if judge else None,
            "structure_consistency": settings.structure_consistency,
        },
        "outputs": {"channels": ["image"], "image": "tanh output in [-1, 1]; HU = augmentor.data.intensity.denormalise(value, hu_window)"},
        "recipe": resolved,
        # the top-level sha256 / patients_sha256 are domain B's: the CT patients the model has seen, which an
        # evaluation must keep out of its test set
        "training_data": {"path": stored_path(domain_b.path), "sha256": domain_b.sha256, "patients_sha256": domain_b.patients_sha256,
                          "domain_a": _domain_record(domain_a), "domain_b": _domain_record(domain_b)},
        "steps": result.steps,
        "wall_time_s": round(result.wall_time_s, 1),
        "final_losses": {key: round(value, 6) for key, value in result.final_metrics.items()},
        "device": str(torch_device),
        "precision": precision.describe(),
        "command": command_line(),
    }
    # companions first, the main card last: a directory with model.json is complete
    save_model(out / REVERSE, algorithm.generator_ba.cpu(), {**card, "translation": {**card["translation"], "direction": "B -> A"}})
    if algorithm.judge is not None:
        judge_card = {key: card[key] for key in ("class_names", "hu_window", "modality", "pixel_spacing_mm", "recipe", "training_data", "steps")}
        save_model(out / SEGMENTER, algorithm.judge.cpu(), {
            **judge_card, "algorithm": "segmenter", "mask_label_names": list(domain_b.mask_label_names),
            "purpose": "hallucination judge: trained on labelled domain-B slices only, never on translations",
        })
    save_model(out, algorithm.generator_ab.cpu(), card)
    return out
