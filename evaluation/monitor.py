"""Scores of a GAN during training against real lesions of other patients, and which step ships.

Issue 13: the shipped checkpoint is chosen by measurement on the *tuning cohort* (new virtual patients:
cohort seed 1), not by step count. Every ``monitor.every`` steps and at the end, the training run
(:mod:`augmentor.training.run`) hands the EMA generator to :class:`TrainingMonitor`, which scores it with
the standing BatchNorm statistics the shipped model gets (:func:`augmentor.training.run.standing_generator`):

- fidelity (:mod:`evaluation.fidelity`): KID and precision / recall / density / coverage of the
  generator's images against the reference lesions, in the features of a small Frid-Adar CNN trained once
  per run on the reference lesions (early-stopped on a patient-level fifth of them; seeded; cached in the
  run directory as ``monitor-features.safetensors``, so a resumed run does not retrain it), each feature
  standardised by the reference's mean and spread (raw, the cyst features' scale decided KID alone);
- diversity (:mod:`evaluation.diversity`): nearest-neighbour distance and mask IoU, lesion area and the
  bright-vessel fraction, synthetic against real at equal n;
- memorisation (:func:`evaluation.memorisation.audit`): the share of generated samples flagged as
  near-copies of the GAN's training samples, with the reference lesions as the yardstick of new patients.

Per class and for all classes together (``"all"``), with ``samples_per_class`` generated samples per class
(fixed latents, the same at every step) and at most as many reference lesions per class (a seeded
subsample); the fidelity and diversity numbers compare equal numbers of synthetic and real samples, since
precision, recall and nearest-neighbour distances change with the set size. One JSON line per score goes
to ``monitor.jsonl`` and one compact line to the terminal.

Selection (``monitor.select``): ``"kid-covered"`` (the default) ships the step with the lowest KID over all
classes together among the steps whose coverage (all classes) is at least ``MIN_COVERAGE``; ``"kid"`` the
lowest KID of any step; ``"criteria"`` the step whose classes miss the fewest diversity criteria of
:func:`evaluation.diversity.compare_diversity` (among the covered steps), then the lowest KID; ``"last"`` the last step, whatever its scores (for a recipe whose monitor pick lost a
downstream comparison on the tuning cohort: the scores stay on record). On a tie the earlier step; a NaN KID never wins; when no step qualifies, the first.
KID alone is not enough: a generator collapsed onto the mean lesion matches the reference's mean features
and scores a low KID (measured: KID 0.72 at recall 0.00, coverage 0.00, against 1.24 for a diverse run),
while coverage (the share of real lesions with a generated one among their nearest neighbours) is near 0. Its EMA weights are kept in memory and in every checkpoint (so
a resumed run selects exactly as the uninterrupted one), and saved as the run's model at the end; the
card records ``monitor.selected_step``, that step's scores and the reference file's name and SHA-256.

Post hoc, for runs made without the monitor: ``python -m evaluation.monitor RUN_DIR --reference FILE``
scores every checkpoint still in the run directory with the same code (``monitor-posthoc.jsonl``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from augmentor.data.intensity import denormalise, normalise
from augmentor.data.provenance import sha256_file, stored_path
from augmentor.data.reader import H5File
from augmentor.errors import AugmentorError
from augmentor.models.card import write_safetensors_atomic
from augmentor.training.data import TrainingSet
from augmentor.training.recipe import MonitorSection, TrainSection
from augmentor.training.run import build_generator, derive_seed, standing_generator
from evaluation.diversity import LesionSet, compare_diversity
from evaluation.report import json_ready

MONITOR_LOG = "monitor.jsonl"
POSTHOC_LOG = "monitor-posthoc.jsonl"
FEATURE_CACHE = "monitor-features.safetensors"
# The feature CNN: the project's Frid-Adar CNN at a quarter of its width, trained briefly (seconds to a minute
# on a CPU): it only has to embed lesions by what separates the classes, not to win the downstream race.
FEATURE_NETWORK = {"channels": (16, 32, 64), "kernel_size": 5, "dense_units": 128, "dropout": 0.5}
FEATURE_TRAINING = {"batch_size": 32, "learning_rate": 1e-3, "eval_every": 20, "patience": 5, "lr_patience": 3}
FEATURE_EPOCHS, FEATURE_MIN_STEPS, FEATURE_VALIDATION_FRACTION = 5.0, 100, 0.2
KID_SUBSETS, KID_SUBSET_SIZE, NEAREST_K = 50, 128, 5
MIN_COVERAGE = 0.3  # "kid-covered": collapsed steps score <= 0.1, diverse ones 0.6 (liver, k = 5)
SELECTION_NOTE = {
    "kid": "lowest KID (mean over subsets) of all classes together against the reference; the earlier step on a tie",
    "kid-covered": f"lowest KID (mean over subsets) of all classes together among the steps with coverage >= {MIN_COVERAGE} "
    "(a collapsed generator can score a low KID); the earlier step on a tie",
    "criteria": f"among the steps with coverage >= {MIN_COVERAGE}, the fewest diversity criteria missed over the classes "
    "(nearest-neighbour distance, nearest mask IoU, lesion area and bright-pixel fraction against the reference lesions), "
    "then the lowest KID of all classes together; the earlier step on a tie",
    "c2st": f"among the steps with coverage >= {MIN_COVERAGE}, the lowest classifier two-sample AUC (a CNN telling the generated "
    "lesions of all classes from the reference's; 0.5: indistinguishable); the earlier step on a tie",
    "last": "the last step (the scores are a record, not the choice: set where a downstream comparison on the tuning cohort "
    "preferred the last step to the monitor's pick)",
}


@dataclass(frozen=True)
class Reference:
    """The reference lesions, labelled in the model's classes."""

    path: Path
    sha256: str
    hu: np.ndarray  # (N, C, H, W) int16
    masks: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray  # (N,) int64 into class_names
    patient_ids: np.ndarray  # (N,) str


def load_reference(path: str | Path, class_names: Sequence[str], image_shape: tuple[int, int, int]) -> Reference:
    """Read the reference file's lesions of ``class_names`` (refused in one line when a class or the size differs)."""
    file = H5File(path)
    try:
        info = file.info
        missing = [name for name in class_names if name not in info.class_names]
        if missing:
            raise AugmentorError(f"monitor.reference {stored_path(path)}: has no class {missing[0]!r}; its classes: {', '.join(info.class_names)}")
        if info.image_shape != tuple(image_shape):
            raise AugmentorError(f"monitor.reference {stored_path(path)}: images are {info.image_shape}, the training data's {tuple(image_shape)}")
        remap = np.array([class_names.index(name) if name in class_names else -1 for name in info.class_names], dtype=np.int64)
        selected = np.flatnonzero(remap[file.labels()] >= 0)
        hu, masks, labels = file.read(selected)
        patient_ids = file.patient_ids()[selected].astype(str)
    finally:
        file.close()
    return Reference(Path(path), sha256_file(path), hu, masks, remap[labels], patient_ids)


def check_reference(reference: str | Path, training_file: str | Path) -> None:
    """Refuse a reference that is missing, is the training file or shares a patient with it (one line)."""
    from evaluation.leakage import LeakageError, check_real_split, real_file

    if not Path(reference).is_file():
        raise AugmentorError(
            f"monitor.reference {reference}: file not found (real lesions of patients the training file does not hold, e.g. "
            "the simulator's tuning cohort: augment cohort NAME --out DIR --seed 1); set monitor.reference=FILE, or "
            "monitor.every=0 to train without the monitor"
        )
    try:
        check_real_split([real_file(Path(training_file))], [real_file(Path(reference))])
    except LeakageError as error:
        raise AugmentorError(f"monitor.reference {stored_path(reference)} must hold other patients than the training file: {error}") from None


# ------------------------------------------------------------------------------------ feature CNN ----


def _feature_network(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    from evaluation.models import FridAdarCNN

    return FridAdarCNN(in_channels, num_classes, image_size, **FEATURE_NETWORK)  # type: ignore[arg-type]


def feature_extractor(reference: Reference, window: tuple[float, float], num_classes: int, seed: int, cache: Path | None) -> Any:
    """The feature CNN of the run: read from ``cache`` when it was trained on this reference with these
    settings, else trained on the reference lesions (seeded; process-wide generators untouched) and cached."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from evaluation.fidelity import FeatureExtractor
    from evaluation.splits import validation_split
    from evaluation.training import Samples, Task, TrainingStage, TrainSettings, train_network

    in_channels, image_size = int(reference.hu.shape[1]), int(reference.hu.shape[-1])
    key = json.dumps({"reference_sha256": reference.sha256, "window": list(window), "seed": seed, "classes": num_classes,
                      "network": FEATURE_NETWORK, "training": FEATURE_TRAINING, "epochs": FEATURE_EPOCHS, "min_steps": FEATURE_MIN_STEPS})
    with torch.random.fork_rng(devices=[]):  # the training run's random streams must not see this
        torch.manual_seed(seed)
        network = _feature_network(in_channels, num_classes, image_size)
        if cache is not None and cache.is_file():
            with safe_open(str(cache), framework="pt") as handle:
                cached_key = (handle.metadata() or {}).get("key")
            if cached_key == key:
                network.load_state_dict(load_file(str(cache)))
                return FeatureExtractor(network)
        split = validation_split(reference.labels, reference.patient_ids, FEATURE_VALIDATION_FRACTION, seed % 2**32)

        def samples(indices: np.ndarray) -> Samples:
            return Samples(torch.from_numpy(reference.hu[indices]), torch.from_numpy(reference.masks[indices]), torch.from_numpy(reference.labels[indices]), window)

        stage = TrainingStage("train", samples(split.train), FEATURE_EPOCHS, FEATURE_MIN_STEPS)
        train_network(network, [stage], samples(split.validation), Task.CLASSIFICATION, TrainSettings(**FEATURE_TRAINING), seed)  # type: ignore[arg-type]
    network.to(memory_format=torch.contiguous_format)
    if cache is not None:
        write_safetensors_atomic(cache, {k: v.contiguous() for k, v in network.state_dict().items()}, metadata={"key": key})
    return FeatureExtractor(network)


# ------------------------------------------------------------------------------------------ scores ----


class Scorer:
    """Scores generators against a reference (fixed latents, fixed real subsample, one feature CNN).

    Args:
        reference: the reference lesions.
        class_names: the generator's classes (label order).
        window: the training HU window (normalises real and denormalises generated images).
        training_images: (R, C, H, W) the GAN's training images in [-1, 1] (memorisation; None: skipped).
        latent_dim: the generator's latent size.
        samples_per_class: generated samples (and at most that many reference lesions) per class.
        seed: latents, subsamples, the feature CNN, KID subsets.
        cache: where the feature CNN is cached (None: not cached).
    """

    def __init__(
        self, reference: Reference, class_names: Sequence[str], window: tuple[float, float], training_images: np.ndarray | None,
        *, latent_dim: int, samples_per_class: int, seed: int, cache: Path | None, detectability: bool = False,
    ) -> None:
        from evaluation.fidelity import embed

        self.detectability = detectability
        self.reference = reference
        self.class_names = tuple(class_names)
        self.window = window
        self.training_images = training_images
        self.samples_per_class = samples_per_class
        self.seed = seed
        self.extractor = feature_extractor(reference, window, len(self.class_names), derive_seed(seed, "monitor-features"), cache)
        chooser = np.random.default_rng(derive_seed(seed, "monitor-reference"))
        self.real: dict[str, LesionSet] = {}
        raw: dict[str, np.ndarray] = {}
        for index, name in enumerate(self.class_names):
            rows = np.flatnonzero(reference.labels == index)
            if rows.size > samples_per_class:
                rows = np.sort(chooser.choice(rows, samples_per_class, replace=False))
            self.real[name] = LesionSet(reference.hu[rows], reference.masks[rows])
            raw[name] = embed(self.extractor, self._normalised(reference.hu[rows]))
        # Features standardised per dimension by the reference's mean and spread: the CNN's raw features differ
        # in scale by class and dimension, and KID's cubic kernel would let the largest (here: cysts) decide alone.
        pooled = np.concatenate(list(raw.values()))
        self.feature_mean = pooled.mean(axis=0)
        self.feature_scale = pooled.std(axis=0) + 1e-6
        self.real_features = {name: self._standardised(features) for name, features in raw.items()}
        random = torch.Generator().manual_seed(derive_seed(seed, "monitor-latents"))
        self.latents = torch.randn(samples_per_class * len(self.class_names), latent_dim, generator=random)
        self.labels = torch.arange(len(self.class_names)).repeat_interleave(samples_per_class)

    def _normalised(self, hu: np.ndarray) -> np.ndarray:
        return np.asarray(normalise(hu.astype(np.float32), self.window), dtype=np.float32)

    def _standardised(self, features: np.ndarray) -> np.ndarray:
        return np.asarray((features - self.feature_mean) / self.feature_scale, dtype=np.float32)

    def _embed(self, images: np.ndarray) -> np.ndarray:
        from evaluation.fidelity import embed

        return self._standardised(embed(self.extractor, images))

    @torch.no_grad()
    def generate(self, generator: nn.Module, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The fixed latents through ``generator`` (eval mode): images in [-1, 1] (N, C, H, W), masks (N, H, W) bool."""
        device = next(generator.parameters()).device
        parts = [
            generator(self.latents[start : start + batch_size].to(device), self.labels[start : start + batch_size].to(device)).float().cpu()
            for start in range(0, len(self.labels), batch_size)
        ]
        outputs = torch.cat(parts).clamp(-1.0, 1.0).numpy()
        channels = outputs.shape[1] - 1
        return np.ascontiguousarray(outputs[:, :channels]), outputs[:, channels] > 0

    def score(self, generator: nn.Module) -> dict[str, Any]:
        """Every number for a generator ready to sample (eval mode, standing statistics), per class and ``"all"``."""
        from evaluation.fidelity import kernel_inception_distance, precision_recall_density_coverage
        from evaluation.memorisation import audit

        images, masks = self.generate(generator)
        labels = self.labels.numpy()
        flagged: np.ndarray | None = None
        if self.training_images is not None:
            real_images = self._normalised(np.concatenate([lesions.hu for lesions in self.real.values()]))
            result = audit(self.training_images, real_images, [images], self._embed)
            flagged = result.flagged
        groups: dict[str, tuple[np.ndarray, np.ndarray, LesionSet, LesionSet, np.ndarray | None]] = {}
        for index, name in enumerate(self.class_names):
            # as many synthetic samples as reference lesions (at most samples_per_class of them); the latents
            # are independent, so the first n are a random n
            rows = np.flatnonzero(labels == index)[: len(self.real[name])]
            fake = LesionSet(np.asarray(denormalise(images[rows], self.window)), masks[rows])
            groups[name] = (self.real_features[name], self._embed(images[rows]), self.real[name], fake,
                            None if flagged is None else flagged[labels == index])
        if len(groups) > 1:
            parts = list(groups.values())
            groups["all"] = (
                np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                LesionSet(np.concatenate([p[2].hu for p in parts]), np.concatenate([p[2].masks for p in parts])),
                LesionSet(np.concatenate([p[3].hu for p in parts]), np.concatenate([p[3].masks for p in parts])),
                flagged,
            )
        else:
            groups["all"] = next(iter(groups.values()))
        scores: dict[str, Any] = {}
        for name, (real_features, fake_features, real, fake, flags) in groups.items():
            kid, kid_std = kernel_inception_distance(real_features, fake_features, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, seed=self.seed)
            compared = compare_diversity(fake, real, self.window, seed=self.seed)
            scores[name] = {
                "kid": kid,
                "kid_std": kid_std,
                **precision_recall_density_coverage(real_features, fake_features, NEAREST_K),
                "n": len(fake),
                "diversity": {
                    "synthetic": {k: v for k, v in compared["synthetic"].items() if k != "n"},
                    "real": {k: v for k, v in compared["real"].items() if k != "n"},
                    "criteria": {k: c["value"] for k, c in compared["criteria"].items()},
                    "passed": [k for k, c in compared["criteria"].items() if c["passed"]],
                },
                "near_copy_fraction": None if flags is None else float(np.mean(flags)) if len(flags) else None,
            }
        if self.detectability:
            from evaluation.detectability import two_sample_test

            _, _, real, fake, _ = groups["all"]
            tested = two_sample_test(real.hu, fake.hu, self.window, seed=derive_seed(self.seed, "monitor-c2st"))
            scores["all"]["c2st_auc"], scores["all"]["c2st_accuracy"] = tested["auc"], tested["accuracy"]
        return json_ready(scores, significant=6)


def criterion(scores: Mapping[str, Any], select: str, step: int = 0) -> float:
    """The selection value of a step's scores (lower is better; NaN and missing never win); ``"last"``: -step."""
    if select not in SELECTION_NOTE:
        raise ValueError(f"unknown monitor.select {select!r}; valid: {', '.join(SELECTION_NOTE)}")
    if select == "last":
        return -float(step)
    total = scores.get("all", {})
    value = total.get("kid")
    if select in ("kid-covered", "criteria", "c2st") and not (total.get("coverage") or 0.0) >= MIN_COVERAGE:
        return math.inf
    if select == "c2st":
        auc = total.get("c2st_auc")
        return float(auc) if auc is not None else math.inf
    kid = float(value) if value is not None else math.inf
    if select != "criteria" or math.isnan(kid) or math.isinf(kid):
        return kid
    # lexicographic in one number: the count of criteria missed, then KID squashed into (0, 1)
    return float(missed_criteria(scores)) + 0.5 + math.atan(kid) / math.pi


def missed_criteria(scores: Mapping[str, Any]) -> int:
    """How many diversity criteria (:func:`evaluation.diversity.compare_diversity`) the classes miss, summed over
    the classes (``"all"`` counts only for a one-class model)."""
    classes = [name for name in scores if name != "all"] or ["all"]
    missed = 0
    for name in classes:
        diversity = scores[name].get("diversity") or {}
        missed += len(set(diversity.get("criteria") or {}) - set(diversity.get("passed") or []))
    return missed


def compact_line(step: int, scores: Mapping[str, Any], seconds: float, best_step: int | None = None) -> str:
    """One terminal line: the headline numbers of ``"all"``."""
    total = scores.get("all", {})
    diversity = total.get("diversity", {}).get("criteria", {})

    def number(value: Any, pattern: str) -> str:
        return "n/a" if value is None else format(value, pattern)

    flagged = total.get("near_copy_fraction")
    return (
        f"monitor step {step}: KID {number(total.get('kid'), '.4f')}  precision {number(total.get('precision'), '.2f')}  "
        f"recall {number(total.get('recall'), '.2f')}  coverage {number(total.get('coverage'), '.2f')}  "
        f"NN-distance ratio {number(diversity.get('nn_distance'), '.2f')}  mask-IoU excess {number(diversity.get('nn_mask_iou'), '+.2f')}  "
        f"near-copies {number(flagged, '.1%')}" + (f"  C2ST AUC {total['c2st_auc']:.3f}" if total.get("c2st_auc") is not None else "")
        + f"  ({seconds:.0f} s)" + (f"  best: step {best_step}" if best_step is not None else "")
    )


# ------------------------------------------------------------------------------- the training hook ----


class TrainingMonitor:
    """The hook :class:`~augmentor.training.trainer.Trainer` calls with the EMA generator every ``every`` steps.

    Args:
        section: the recipe's ``[monitor]`` section.
        settings: the recipe's ``[train]`` section (standing statistics and seeds, as the shipped model).
        training_set: the GAN's training data (memorisation, the refusal of a reference sharing its patients).
        latent_dim: the generator's latent size.
        directory: the run directory (``monitor.jsonl``, the feature CNN's cache).
    """

    def __init__(self, section: MonitorSection, settings: TrainSection, training_set: TrainingSet, latent_dim: int, directory: Path) -> None:
        self.section = section
        self.settings = settings
        self.every = section.every
        self.directory = Path(directory)
        reference = load_reference(section.reference, training_set.class_names, training_set.image_shape)
        training_images = np.asarray(normalise(training_set.hu.float(), training_set.hu_window).numpy(), dtype=np.float32)
        self.scorer = Scorer(
            reference, training_set.class_names, training_set.hu_window, training_images, latent_dim=latent_dim,
            samples_per_class=section.samples_per_class, seed=settings.seed, cache=self.directory / FEATURE_CACHE,
            detectability=section.detectability,
        )
        self.best_step: int | None = None
        self.best_value = math.inf
        self.best_scores: dict[str, Any] = {}
        self.best_generator: dict[str, torch.Tensor] | None = None

    def __call__(self, network: nn.Module, step: int) -> None:
        started = time.perf_counter()
        scores = self.scorer.score(standing_generator(network, self.settings))
        value = criterion(scores, self.section.select, step)
        if self.best_step is None or value < self.best_value:
            self.best_step, self.best_value, self.best_scores = step, value, scores
            self.best_generator = {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}
        seconds = time.perf_counter() - started
        with open(self.directory / MONITOR_LOG, "a") as stream:
            stream.write(json.dumps({"step": step, "seconds": round(seconds, 3), "scores": scores}) + "\n")
        print(compact_line(step, scores, seconds, self.best_step), flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "reference_sha256": self.scorer.reference.sha256,
            "best_step": -1 if self.best_step is None else self.best_step,
            "best_scores": json.dumps(self.best_scores),  # a string: NaN-free JSON whatever its nesting
            "best_generator": self.best_generator,
        }

    def load_state_dict(self, state: Mapping[str, Any] | None, step: int) -> None:
        """Continue from a checkpoint taken at ``step``: its best so far, and the log cut back to ``step``."""
        if state is None:
            raise AugmentorError("cannot resume with the monitor: the checkpoint was taken without it")
        if state["reference_sha256"] != self.scorer.reference.sha256:
            raise AugmentorError(f"cannot resume: monitor.reference {stored_path(self.scorer.reference.path)} is not the file the run was scored against (SHA-256 differs)")
        self.best_step = None if int(state["best_step"]) < 0 else int(state["best_step"])
        self.best_scores = json.loads(state["best_scores"])
        self.best_value = math.inf if self.best_step is None else criterion(self.best_scores, self.section.select, self.best_step)
        self.best_generator = state["best_generator"]
        log = self.directory / MONITOR_LOG
        if log.exists():
            kept = [line for line in log.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
            log.write_text("".join(f"{line}\n" for line in kept))

    def selected(self, shadow: nn.Module) -> nn.Module:
        """A copy of the EMA network with the selected step's weights (``shadow`` itself before any score)."""
        if self.best_generator is None:
            return shadow
        chosen = copy.deepcopy(shadow)
        chosen.load_state_dict(self.best_generator)
        return chosen

    def card(self) -> dict[str, Any]:
        """What the model card records about the selection."""
        reference = self.scorer.reference
        return {
            "select": self.section.select,
            "rule": SELECTION_NOTE[self.section.select],
            "selected_step": self.best_step,
            "scores": self.best_scores,
            "reference": {"path": stored_path(reference.path), "sha256": reference.sha256, "num_samples": len(reference.labels)},
            "every": self.every,
            "samples_per_class": self.section.samples_per_class,
            "log": MONITOR_LOG,
        }


# ------------------------------------------------------------------------------------------ post hoc ----


def score_checkpoints(
    run: str | Path, reference: str | Path, data: str | Path | None = None, samples_per_class: int = 256, detectability: bool = False
) -> list[dict[str, Any]]:
    """Score every checkpoint still in a run directory, as the monitor would have (``monitor-posthoc.jsonl``).

    Args:
        run: a ``gan`` run directory (``recipe.json``, ``checkpoints/``).
        reference: real lesions of other patients.
        data: the run's training file: enables the memorisation number and the patient check (its SHA-256
            must be the checkpoints'); without it, the HU window and channels come from the reference file.
        samples_per_class: generated samples per class.
        detectability: also the classifier two-sample test (about a minute a checkpoint on 2 CPU cores).

    Returns:
        One record per checkpoint, oldest first.
    """
    from augmentor.recipes import validate_recipe
    from augmentor.training.checkpoint import list_checkpoints, load_checkpoint, read_checkpoint_record
    from augmentor.training.data import load_training_set
    from augmentor.training.run import RESOLVED_RECIPE
    from augmentor.training.trainer import CHECKPOINTS

    folder = Path(run)
    if not (folder / RESOLVED_RECIPE).is_file():
        raise AugmentorError(f"{folder}: not a training run (no {RESOLVED_RECIPE})")
    recipe = validate_recipe(json.loads((folder / RESOLVED_RECIPE).read_text()), source=str(folder / RESOLVED_RECIPE), expect="gan")
    checkpoints = list_checkpoints(folder / CHECKPOINTS)
    if not checkpoints:
        raise AugmentorError(f"{folder}: no checkpoints left to score")
    metadata = read_checkpoint_record(checkpoints[-1][1])["metadata"]
    class_names = tuple(metadata["class_names"])
    training_images: np.ndarray | None = None
    if data is not None:
        training_set = load_training_set(data, class_names, recipe.data.hu_window)
        if training_set.sha256 != metadata.get("training_data_sha256"):
            raise AugmentorError(f"{stored_path(data)} is not the training file of {folder.name} (SHA-256 differs)")
        check_reference(reference, data)
        window, shape = training_set.hu_window, training_set.image_shape
        training_images = np.asarray(normalise(training_set.hu.float(), window).numpy(), dtype=np.float32)
    else:
        info = H5File(reference).info
        window = recipe.data.hu_window or info.hu_window
        shape = info.image_shape
    scorer = Scorer(
        load_reference(reference, class_names, shape), class_names, window, training_images, latent_dim=recipe.model.latent_dim,
        samples_per_class=samples_per_class, seed=recipe.train.seed, cache=folder / FEATURE_CACHE, detectability=detectability,
    )
    generator = build_generator(recipe, len(class_names), shape[0])
    records = []
    with open(folder / POSTHOC_LOG, "w") as stream:
        for step, path in checkpoints:
            started = time.perf_counter()
            state, _ = load_checkpoint(path)
            generator.load_state_dict(state["ema"]["shadow"])
            scores = scorer.score(standing_generator(generator, recipe.train))
            seconds = time.perf_counter() - started
            record = {"step": step, "seconds": round(seconds, 3), "scores": scores}
            stream.write(json.dumps(record) + "\n")
            records.append(record)
            print(compact_line(step, scores, seconds), flush=True)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.monitor", description=score_checkpoints.__doc__.splitlines()[0] if score_checkpoints.__doc__ else None)
    parser.add_argument("run", type=Path, help="the run directory")
    parser.add_argument("--reference", type=Path, required=True, help="HDF5 of real lesions of other patients (the tuning cohort)")
    parser.add_argument("--data", type=Path, default=None, help="the run's training file (memorisation and the patient check)")
    parser.add_argument("--samples-per-class", type=int, default=256)
    parser.add_argument("--select", choices=[name for name in SELECTION_NOTE if name != "last"], default="kid-covered", help="the selection rule (as monitor.select)")
    parser.add_argument("--detectability", action="store_true", help="also the classifier two-sample test (implied by --select c2st)")
    arguments = parser.parse_args(argv)
    try:
        detectability = arguments.detectability or arguments.select == "c2st"
        records = score_checkpoints(arguments.run, arguments.reference, arguments.data, arguments.samples_per_class, detectability)
    except AugmentorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    best = min(records, key=lambda record: (criterion(record["scores"], arguments.select), record["step"]))
    print(f"best: step {best['step']} ({SELECTION_NOTE[arguments.select]}); all scores in {POSTHOC_LOG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
