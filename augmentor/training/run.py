"""``train(recipe, data, out)``: a ``gan`` recipe and a training file in, a model directory out.

The run directory ``out`` holds:

- ``model.safetensors`` + ``model.json``: the EMA generator (float16 storage, standing BatchNorm
  statistics) and its card (see :mod:`augmentor.models.card`) -- what ``augment generate`` loads;
- ``recipe.json``: the resolved recipe; ``metrics.jsonl``: one line of averaged metrics per ``log_every``
  steps; ``samples/step-*.png``: sample grids; ``checkpoints/step-*.{safetensors,json}``: the newest
  ``keep_checkpoints`` checkpoints, from which ``resume=True`` continues exactly.

Under torchrun (``torchrun --nproc-per-node K -m augmentor.train ...``) the same function runs in every
process as one rank of a data-parallel run (:mod:`augmentor.training.distributed`): rank 0 writes every
file, the recipe's ``batch_size`` is the global batch, and a checkpoint resumes on any number of
processes (the data order and every random draw of an update are the same whatever the world size).
"""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from augmentor.data.provenance import command_line, stored_path
from augmentor.errors import AugmentorError, OutputExistsError
from augmentor.models.card import MODEL_CARD, MODEL_WEIGHTS, save_model, write_json_atomic
from augmentor.models.registry import build_network
from augmentor.recipes import to_dict
from augmentor.training.algorithm import AdversarialAlgorithm
from augmentor.training.cgan import ConditionalGAN
from augmentor.training.checkpoint import latest_checkpoint, read_checkpoint_record
from augmentor.training.data import InMemoryBatches, TrainingSet, load_training_set
from augmentor.training.device import Precision, resolve_precision
from augmentor.training.diffaugment import DiffAugment
from augmentor.training.distributed import (
    Distributed,
    barrier,
    environment_world,
    init_distributed,
    shutdown_distributed,
)
from augmentor.training.ema import ExponentialMovingAverage
from augmentor.training.recipe import GanRecipe, TrainSection
from augmentor.training.samples import SampleGrid, with_standing_statistics
from augmentor.training.trainer import CHECKPOINTS, METRICS_LOG, Trainer
from augmentor.training.wgan_gp import WassersteinGP

if TYPE_CHECKING:
    from evaluation.monitor import TrainingMonitor

RESOLVED_RECIPE = "recipe.json"
SAMPLES = "samples"
# The [monitor]'s files (evaluation.monitor: MONITOR_LOG, FEATURE_CACHE), removed with a replaced run's outputs.
MONITOR_FILES = ("monitor.jsonl", "monitor-features.safetensors")
STANDING_STATISTICS_BATCHES = 16
# The card's description of the mask channel, by model.mask_output (augment generate thresholds both at 0).
MASK_OUTPUTS = {
    "tanh": "tanh output in [-1, 1]; lesion where value > 0",
    "logits": "logit (unbounded; lesion probability sigmoid(value)); lesion where value > 0",
}
# Train-section keys that do not change what is computed, so a resumed run may change them.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "sample_every", "log_every", "keep_checkpoints", "compile")


def derive_seed(seed: int, purpose: str) -> int:
    """An independent seed for one purpose (data order, augmentation, ...) from the recipe's seed."""
    digest = hashlib.sha256(f"augmentor:{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def standing_generator(network: torch.nn.Module, settings: TrainSection) -> torch.nn.Module:
    """A copy of an EMA generator as it ships: eval mode, BatchNorm statistics averaged over seeded latents."""
    return with_standing_statistics(network, settings.batch_size, STANDING_STATISTICS_BATCHES, derive_seed(settings.seed, "standing-statistics"))


def _seed_process(seed: int, world: Distributed) -> None:
    """Seed the process-wide generators: ``seed`` on rank 0, a seed derived from it and the rank elsewhere."""
    seed = seed if world.is_main else derive_seed(seed, f"rank-{world.rank}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_output(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a run directory that cannot be used as asked; touches nothing."""
    if resume and overwrite:
        raise AugmentorError("--resume continues a run and --overwrite replaces it; pass only one")
    if resume:
        if not out.is_dir():
            raise AugmentorError(f"{out}: no run to resume (directory not found)")
        return
    if out.exists() and not out.is_dir():
        raise AugmentorError(f"{out} is a file; give a directory for the model")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it or --resume to continue it")


def _clear_output(out: Path, resume: bool) -> None:
    """Create the run directory; for a new run, remove a previous run's outputs (checked by :func:`_check_output`)."""
    if not resume and out.is_dir():
        for name in (CHECKPOINTS, SAMPLES):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (MODEL_WEIGHTS, MODEL_CARD, METRICS_LOG, RESOLVED_RECIPE, *MONITOR_FILES):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def resume_checkpoint(out: Path, metadata: dict[str, Any]) -> Path:
    """The newest intact checkpoint in ``out`` for ``--resume``, refused in one line when there is none or when
    it was trained on other data or another recipe (:func:`_check_resumable`)."""
    checkpoint = latest_checkpoint(out / CHECKPOINTS)
    if checkpoint is None:
        raise AugmentorError(f"{out}: no intact checkpoint to resume from; run without --resume")
    _check_resumable(read_checkpoint_record(checkpoint)["metadata"], metadata, checkpoint)
    return checkpoint


def _check_resumable(saved: dict[str, Any], current: dict[str, Any], checkpoint: Path) -> None:
    """Refuse to resume with a different recipe or data (the result would match neither run)."""
    if saved.get("training_data_sha256") != current["training_data_sha256"]:
        raise AugmentorError(f"cannot resume from {checkpoint}: it was trained on different data (SHA-256 differs)")
    old, new = saved.get("recipe", {}), current["recipe"]
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section), new.get(section)
        if before is None and isinstance(after, dict):
            before = {}  # a section added later (e.g. [monitor]): each key compares with its default below
        if isinstance(before, dict) and isinstance(after, dict):
            # A key the checkpoint's recipe lacks was added later with a default that reproduces the old behaviour.
            added = to_dict(GanRecipe()).get(section, {})
            for key in sorted(set(before) | set(after)):
                if section == "train" and key in RESUMABLE_CHANGES:
                    continue
                if before.get(key, added.get(key)) != after.get(key):
                    raise AugmentorError(
                        f"cannot resume from {checkpoint}: {section}.{key} was {before.get(key, added.get(key))!r}, the recipe now says "
                        f"{after.get(key)!r} (only train.{', train.'.join(RESUMABLE_CHANGES)} may change)"
                    )
        elif before != after and section not in ("name", "description"):
            raise AugmentorError(f"cannot resume from {checkpoint}: recipe key {section!r} changed")


def build_generator(recipe: GanRecipe, num_classes: int, image_channels: int) -> torch.nn.Module:
    """The recipe's generator, with every model switch (training and post-hoc scoring build it here alike)."""
    model = recipe.model
    return build_network(
        model.generator, num_classes=num_classes, latent_dim=model.latent_dim, image_size=model.image_size,
        base_channels=model.base_channels, embedding_dim=model.embedding_dim, image_channels=image_channels,
        upsample=model.upsample, mask_output=model.mask_output, embedding_init=model.embedding_init,
        **({"noise_inputs": True} if model.noise_inputs else {}),
    )


def build_algorithm(recipe: GanRecipe, data: TrainingSet, device: torch.device, precision: Precision) -> AdversarialAlgorithm:
    """The networks (seeded initialisation, on the CPU so every device starts alike) and the update rule."""
    model, settings = recipe.model, recipe.train
    image_channels = data.image_shape[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(settings.seed, "initialisation"))
        generator = build_generator(recipe, len(data.class_names), image_channels)
        discriminator = build_network(
            model.discriminator or "", num_classes=len(data.class_names), image_size=model.image_size,
            base_channels=model.discriminator_channels, in_channels=image_channels + 1,
            normalization=model.discriminator_normalization, minibatch_std=model.minibatch_std,
        )
    assert settings.generator_lr is not None and settings.discriminator_lr is not None and settings.betas is not None
    common: dict[str, Any] = {
        "generator_lr": settings.generator_lr,
        "discriminator_lr": settings.discriminator_lr,
        "betas": settings.betas,
        "augment": DiffAugment(settings.diffaugment, image_channels=image_channels, mask_background_fill=settings.mask_background_fill),
        "precision": precision,
        "seed": derive_seed(settings.seed, "algorithm"),
        "device": device,
        "mask_smoothing": settings.mask_smoothing,
        "real_dihedral": settings.real_dihedral,
    }
    if settings.algorithm == "wgan-gp":
        return WassersteinGP(generator, discriminator, n_critic=settings.n_critic or 5, lambda_gp=settings.lambda_gp, **common)
    return ConditionalGAN(
        generator, discriminator, loss=settings.loss or "non-saturating", r1_gamma=settings.r1_gamma, r1_every=settings.r1_every,
        lecam_weight=settings.lecam_weight, ada_target=settings.ada_target, ada_images=settings.ada_images, **common,
    )


def train(
    recipe: GanRecipe,
    data: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Train a class-conditional GAN of (image, mask) pairs and write its model directory.

    Args:
        recipe: a validated ``gan`` recipe (:func:`augmentor.recipes.load_recipe` with ``expect="gan"``).
        data: the training HDF5 file (only the training patients; its SHA-256 goes in the card).
        out: the run directory (created).
        resume: continue from the newest checkpoint in ``out`` (same recipe and data; ``train.steps`` may grow).
        overwrite: replace a previous run's outputs in ``out``.
        device: "cpu", "cuda", "cuda:1", ...; default: a CUDA GPU if there is one.
        progress: show a progress bar.

    Returns:
        ``out``, holding ``model.safetensors`` and ``model.json``.
    """
    out = Path(out)
    # Everything that can refuse the run does so before a previous run's files are touched.
    _check_output(out, resume, overwrite)
    resolved = to_dict(recipe)
    if recipe.monitor.reference:  # recorded as a file name (checkpoints and card): folders may name a patient
        resolved["monitor"]["reference"] = stored_path(recipe.monitor.reference)
    environment_world().local_batch(recipe.train.batch_size)  # before joining a process group: refuse a batch K ranks cannot share
    world, torch_device = init_distributed(device)
    try:
        written = _train(recipe, resolved, data, out, world, torch_device, resume=resume, progress=progress)
    except BaseException:
        shutdown_distributed(wait=False)  # the other ranks may be stuck in a collective; torchrun stops them
        raise
    shutdown_distributed()
    return written


def _train(
    recipe: GanRecipe, resolved: dict[str, Any], data: str | Path, out: Path, world: Distributed, torch_device: torch.device,
    *, resume: bool, progress: bool,
) -> Path:
    """:func:`train` once the device and (under torchrun) the process group are set."""
    settings = recipe.train
    precision = resolve_precision(settings.mixed_precision, torch_device)
    training_set = load_training_set(data, recipe.data.classes, recipe.data.hu_window)
    if training_set.image_shape[1:] != (recipe.model.image_size, recipe.model.image_size):
        raise AugmentorError(
            f"{training_set.path}: images are {training_set.image_shape[1]}x{training_set.image_shape[2]}, the recipe's "
            f"model.image_size is {recipe.model.image_size}; set --set model.image_size={training_set.image_shape[1]}"
        )
    metadata = {"recipe": resolved, "training_data_sha256": training_set.sha256, "class_names": list(training_set.class_names)}
    checkpoint = resume_checkpoint(out, metadata) if resume else None
    if recipe.monitor.every > 0:  # on every rank: one refused alone would leave the others waiting at the barrier
        # lazy: augmentor trains without the evaluation package (as models/segmenter.py)
        from evaluation.monitor import check_reference

        check_reference(recipe.monitor.reference, training_set.path)
    if world.is_main:
        _clear_output(out, resume)
    barrier(world)  # no rank reads the run directory before rank 0 has prepared it

    # Every random draw below comes from generators seeded here; the process-wide ones are seeded too, for
    # any library code that draws from them (per rank: the run seed on rank 0, one derived from it elsewhere).
    _seed_process(settings.seed, world)
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    algorithm = build_algorithm(recipe, training_set, torch_device, precision)
    batches = InMemoryBatches(training_set, settings.batch_size, derive_seed(settings.seed, "data-order"), torch_device, world)
    ema = ExponentialMovingAverage(algorithm.generator, settings.ema_decay)
    if settings.compile:
        # torch.compile in place (state-dict keys unchanged), after the EMA's copy (which stays eager). Not the
        # WGAN-GP critic nor an R1-regularised discriminator: compiled graphs do not support their double backward.
        algorithm.generator.compile()
        if settings.algorithm != "wgan-gp" and not settings.r1_gamma:
            algorithm.discriminator.compile()
    algorithm.distribute(world)  # after the EMA's copy: the copy keeps plain BatchNorm
    image_channels = training_set.image_shape[0]
    sampler = SampleGrid(
        out / SAMPLES, training_set.class_names, recipe.model.latent_dim, seed=derive_seed(settings.seed, "samples"),
        statistics_batch_size=settings.batch_size, image_channels=image_channels,
    )
    monitor: TrainingMonitor | None = None
    if recipe.monitor.every > 0 and world.is_main:  # rank 0 alone scores (the other ranks train on)
        from evaluation.monitor import TrainingMonitor

        monitor = TrainingMonitor(recipe.monitor, settings, training_set, recipe.model.latent_dim, out)
    trainer = Trainer(
        algorithm, batches, out, steps=settings.steps, ema=ema, ema_source=algorithm.generator, sampler=sampler,
        checkpoint_every=settings.checkpoint_every, sample_every=settings.sample_every, log_every=settings.log_every,
        keep_checkpoints=settings.keep_checkpoints, metadata=metadata, progress=progress,
        description=recipe.name or out.name, world=world, monitor=monitor,
    )
    if checkpoint is not None:
        trainer.restore(checkpoint)
        if not world.is_main:  # the checkpoint holds rank 0's process-wide generators
            _seed_process(derive_seed(settings.seed, f"rank-{world.rank}-step-{trainer.step}"), world)
    if world.is_main:
        write_json_atomic(out / RESOLVED_RECIPE, resolved)
    result = trainer.run()
    if not world.is_main:
        return out

    # With a monitor, the step it selected ships (evaluation.monitor); otherwise the last step.
    generator = standing_generator(monitor.selected(ema.shadow) if monitor is not None else ema.shadow, settings).cpu()
    card = {
        "algorithm": settings.algorithm,
        "class_names": list(training_set.class_names),
        "hu_window": list(training_set.hu_window),
        "image_size": recipe.model.image_size,
        "image_channels": image_channels,
        "modality": training_set.modality,
        "pixel_spacing_mm": list(training_set.pixel_spacing_mm),
        "mask_label_names": list(training_set.mask_label_names),
        "latent_dim": recipe.model.latent_dim,
        "latent_distribution": "standard normal",
        "outputs": {
            "channels": ["image"] * image_channels + ["mask"],
            "image": "tanh output in [-1, 1]; HU = augmentor.data.intensity.denormalise(value, hu_window)",
            "mask": MASK_OUTPUTS[recipe.model.mask_output],
        },
        "recipe": resolved,
        "training_data": {
            "path": stored_path(training_set.path),  # the file name only: folders may name a patient
            "sha256": training_set.sha256,
            "patients_sha256": training_set.patients_sha256,
            "num_samples": len(training_set),
            "num_patients": training_set.num_patients,
            "class_counts": training_set.class_counts(),
        },
        "steps": result.steps,
        "wall_time_s": round(result.wall_time_s, 1),
        "final_losses": {key: round(value, 6) for key, value in result.final_metrics.items()},
        "device": str(torch_device),
        "processes": world.world_size,
        "precision": precision.describe(),
        "command": command_line(),
    }
    if monitor is not None:
        card["monitor"] = monitor.card()
    save_model(out, generator, card)
    return out
