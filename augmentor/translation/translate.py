"""``augment translate``: phantom slices -> CT-like slices with the phantom's labels, and their safety scores.

Streaming, deterministic and atomic, like :mod:`augmentor.generate`:

- the input is read and written in batches (memory flat in N), through :class:`~augmentor.data.writer.H5Writer`
  (a temporary file renamed into place only when complete);
- networks always run on fixed groups of :data:`GROUP` slices aligned to absolute indices (the last group
  padded), so neither ``batch_size`` nor anything else the caller picks changes a byte; the steganography
  probe's perturbation of slice i depends only on (seed, i);
- the generator is fully convolutional, so slices are translated at the input's own size: no resampling,
  and the masks are the input's label maps copied byte for byte (the file says so in its provenance).

Stored per slice (``extras/``): ``hallucination_dice`` and ``hallucinated_area_mm2`` (when there is a judge),
``cycle_error_hu``, ``perturbed_cycle_error_hu`` and ``steganography_amplification``, and with an ensemble
``ensemble_disagreement_hu`` plus the per-pixel map ``ensemble_disagreement_map`` (N, H, W). The file-level
summary is in ``provenance.details.safety``. See :mod:`augmentor.translation.safety` for what each means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from augmentor.data.intensity import denormalise, normalise
from augmentor.data.provenance import PATIENT_ID_KINDS, make_provenance, sha256_file, stored_path
from augmentor.data.reader import H5File
from augmentor.data.schema import Source
from augmentor.data.writer import H5Writer, check_output
from augmentor.errors import AugmentorError
from augmentor.progress import progress_bar
from augmentor.translation.safety import (
    HallucinationTally,
    ensemble_disagreement,
    hallucination_per_image,
    judge_labels,
    probe_noise,
    steganography_scores,
)
from augmentor.zoo import ModelEntry

GROUP = 4  # forward-pass size, aligned to absolute slice indices
PROBE_NOISE_HU = 4.0  # standard deviation of the steganography probe's perturbation (CT noise is 10-20 HU)
TRANSLATION_ALGORITHM = "cyclegan"
TRANSLATION_FAMILY = "resnet-generator"
HALLUCINATION_COLUMNS = ("hallucination_dice", "hallucinated_area_mm2")
PROBE_COLUMNS = ("cycle_error_hu", "perturbed_cycle_error_hu", "steganography_amplification")
ENSEMBLE_SCORE, ENSEMBLE_MAP = "ensemble_disagreement_hu", "ensemble_disagreement_map"


@dataclass(frozen=True)
class TranslationResult:
    """What ``translate`` wrote and the file's safety summary (also in its provenance)."""

    path: Path
    slices: int
    safety: dict[str, Any]


@dataclass(frozen=True)
class Translator:
    """A translation model loaded for use: both generators, its window, and where it came from."""

    name: str
    forward: nn.Module
    reverse: nn.Module
    window: tuple[float, float]
    card: dict[str, Any]
    path: Path
    origin: str


def check_translation_model(entry: ModelEntry) -> ModelEntry:
    """``entry`` if it is a complete CycleGAN translation model; other models refused in one line."""
    from augmentor.translation.train import REVERSE

    if entry.algorithm != TRANSLATION_ALGORITHM or entry.family != TRANSLATION_FAMILY:
        raise AugmentorError(
            f"model {entry.name!r} is a {entry.family} ({entry.algorithm}) model; augment translate needs a CycleGAN "
            "translation model (train one with a cyclegan recipe: augment train cyclegan-phantom-ct --data-a ... --data-b ...)"
        )
    if not (entry.path / REVERSE).is_dir():
        raise AugmentorError(f"model {entry.name!r} has no {REVERSE}/ generator (B -> A); the model directory is incomplete")
    return entry


def load_translator(model: str | Path, device: torch.device) -> Translator:
    """A CycleGAN model directory (or zoo name) with its reverse generator; other models refused in one line."""
    from augmentor.models.card import load_generator
    from augmentor.translation.train import REVERSE
    from augmentor.zoo import resolve_model

    entry = check_translation_model(resolve_model(model))
    forward, card = load_generator(entry.path, device)
    reverse, _ = load_generator(entry.path / REVERSE, device)
    low, high = card["hu_window"]
    return Translator(entry.name, forward, reverse, (float(low), float(high)), card, entry.path, entry.origin)


def load_judge(path: Path, mask_label_names: Sequence[str], device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """The hallucination judge; refused if its labels are not the input's."""
    from augmentor.models.card import load_generator

    judge, card = load_generator(path, device)
    if tuple(card.get("mask_label_names", ())) != tuple(mask_label_names):
        raise AugmentorError(
            f"segmenter {stored_path(path)}: labels {card.get('mask_label_names')} are not the input's {list(mask_label_names)}; "
            "the hallucination score compares them label by label"
        )
    return judge, card


@torch.inference_mode()
def run_grouped(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``network`` over (B, C, H, W) in groups of exactly :data:`GROUP` (the last one zero-padded)."""
    outputs = []
    for start in range(0, images.shape[0], GROUP):
        part = images[start : start + GROUP]
        count = part.shape[0]
        if count < GROUP:
            part = torch.cat([part, part.new_zeros(GROUP - count, *part.shape[1:])])
        outputs.append(network(part).float()[:count])
    return torch.cat(outputs)


def _to_hu(values: torch.Tensor, window: tuple[float, float]) -> np.ndarray:
    """[-1, 1] network output -> whole-HU int16 (what the file stores)."""
    return torch.as_tensor(denormalise(values, window)).round().clamp(-32768, 32767).to(torch.int16).cpu().numpy()


def translate(
    model: str | Path,
    input: str | Path,
    out: str | Path,
    *,
    ensemble: Sequence[str | Path] = (),
    segmenter: str | Path | None = None,
    seed: int = 0,
    probe_noise_hu: float = PROBE_NOISE_HU,
    batch_size: int = 64,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TranslationResult:
    """Translate a phantom file into the CT domain, with masks copied and safety scores stored.

    Args:
        model: a CycleGAN model directory or zoo name (A -> B; its ``reverse/`` is used by the probe).
        input: the phantom (domain-A) file; any image size (fully convolutional).
        out: the output .h5 path (refused if it exists, unless ``overwrite``).
        ensemble: further models (same recipe, other seeds) for the disagreement score and map.
        segmenter: the hallucination judge's model directory (default: the model's ``segmenter/``).
        seed: seed of the steganography probe's perturbations.
        probe_noise_hu: their standard deviation in HU.
        batch_size: slices read and written at a time (the output does not depend on it).
        device: "cpu", "cuda", ... or None for auto.
        overwrite: replace an existing output (only once the new one is complete).
        progress: show a progress bar.

    Returns:
        The path, the slice count and the safety summary.
    """
    from augmentor.generate import pick_device
    from augmentor.translation.train import SEGMENTER

    output = check_output(out, overwrite)
    if batch_size < 1:
        raise AugmentorError(f"batch size must be positive, got {batch_size}")
    if not probe_noise_hu > 0:
        raise AugmentorError(f"probe noise must be > 0 HU, got {probe_noise_hu}")
    chosen = pick_device(device)
    translator = load_translator(model, chosen)
    members = [load_translator(path, chosen) for path in ensemble]
    source = H5File(input)
    info = source.info
    if info.num_samples == 0:
        raise AugmentorError(f"{stored_path(info.path)}: holds no samples; nothing to translate")
    if info.image_shape[0] != 1:
        raise AugmentorError(f"{stored_path(info.path)}: has {info.image_shape[0]} image channels; the translation model takes one")
    judge_path = Path(segmenter) if segmenter is not None else translator.path / SEGMENTER
    judge = None
    judge_card: dict[str, Any] = {}
    if segmenter is not None or judge_path.is_dir():
        judge, judge_card = load_judge(judge_path, info.mask_label_names, chosen)
    columns = [*(HALLUCINATION_COLUMNS if judge is not None else ()), *PROBE_COLUMNS, *((ENSEMBLE_SCORE, ENSEMBLE_MAP) if members else ())]
    clash = sorted(set(columns) & set(info.extras))
    if clash:
        raise AugmentorError(f"{stored_path(info.path)}: already has columns {clash}; translate the phantom file, not a translated one")
    height, width = info.image_shape[1:]
    window = translator.window
    hu_per_unit = (window[1] - window[0]) / 2.0
    pixel_area = float(info.pixel_spacing_mm[0] * info.pixel_spacing_mm[1])
    tally = HallucinationTally(info.mask_label_names)
    probe_sums = dict.fromkeys(PROBE_COLUMNS, 0.0)
    ensemble_sum = 0.0
    extras_in = {name: source.extra(name) for name in info.extras}
    patient_kind = info.provenance.get("patient_ids")
    training = translator.card.get("training_data", {}) or {}
    details: dict[str, Any] = {
        "translation": {"model_direction": "A -> B", "input_size": [height, width], "resized": False,
                        "masks": "copied byte for byte from the input's label maps (no resize: fully convolutional)"},
        "input_source": info.source.value,
        "group": GROUP,
        "probe_noise_hu": probe_noise_hu,
        "segmenter": {"path": stored_path(judge_path), "weights_sha256": judge_card.get("weights_sha256")} if judge is not None else None,
        "ensemble": [{"name": m.name, "weights_sha256": m.card["weights_sha256"]} for m in members],
    }
    provenance = make_provenance(
        seed=seed,
        recipe=translator.card.get("recipe"),
        inputs={stored_path(info.path): sha256_file(info.path)},
        model={
            "name": translator.name, "origin": translator.origin, "weights_sha256": translator.card["weights_sha256"],
            "trained_on_sha256": training.get("sha256"), "trained_on_patients_sha256": training.get("patients_sha256"),
            "trained_on_path": stored_path(training["path"]) if training.get("path") else None,
            "trained_on_domain_a_sha256": (training.get("domain_a") or {}).get("sha256"),
        },
        details=details,
        patient_ids=patient_kind if isinstance(patient_kind, dict) and patient_kind.get("kind") in PATIENT_ID_KINDS else None,
    )
    with (
        H5Writer(
            output, class_names=info.class_names, image_shape=info.image_shape, source=Source.TRANSLATED,
            mask_label_names=info.mask_label_names, pixel_spacing_mm=info.pixel_spacing_mm, hu_window=info.hu_window,
            provenance=provenance, modality=translator.card.get("modality", info.modality), overwrite=overwrite,
            with_patient_ids=info.has_patient_ids, extras=(*info.extras, *columns),
            extra_shapes={ENSEMBLE_MAP: (height, width)} if members else None,
        ) as writer,
        progress_bar(f"translate {stored_path(info.path)}", info.num_samples, enabled=progress) as advance,
    ):
        ids = source.patient_ids() if info.has_patient_ids else None
        step = max(GROUP, batch_size - batch_size % GROUP)  # whole groups: a batch boundary never splits one
        for start in range(0, info.num_samples, step):
            index = np.arange(start, min(info.num_samples, start + step))
            hu, masks, labels = source.read(index)
            images = torch.as_tensor(normalise(torch.from_numpy(hu).float(), window)).to(chosen)
            translated_hu = _to_hu(run_grouped(translator.forward, images), window)
            stored = torch.as_tensor(normalise(torch.from_numpy(translated_hu).float(), window)).to(chosen)
            scores: dict[str, np.ndarray] = {}
            if judge is not None:
                predicted = torch.cat([judge_labels(judge, stored[i : i + GROUP]) for i in range(0, len(index), GROUP)])
                phantom_labels = torch.from_numpy(masks).to(chosen)
                per_image = hallucination_per_image(predicted, phantom_labels, len(info.mask_label_names), pixel_area)
                tally.add(predicted, phantom_labels, per_image["hallucinated_area_mm2"])
                scores["hallucination_dice"] = per_image["dice_mean"].cpu().numpy()
                scores["hallucinated_area_mm2"] = per_image["hallucinated_area_mm2"].cpu().numpy()
            noise = torch.from_numpy(np.stack([probe_noise(seed, int(i), (height, width), probe_noise_hu / hu_per_unit) for i in index]))
            noise = noise[:, None].to(chosen)
            rebuilt = run_grouped(translator.reverse, stored)
            perturbed = run_grouped(translator.reverse, stored + noise)
            probe = steganography_scores(images, rebuilt, perturbed, noise, hu_per_unit)
            for column, key in zip(PROBE_COLUMNS, ("cycle_error_hu", "perturbed_cycle_error_hu", "amplification"), strict=True):
                scores[column] = probe[key].cpu().numpy()
                probe_sums[column] += float(probe[key].sum())
            if members:
                outputs = [torch.from_numpy(translated_hu).float()]
                for member in members:
                    member_images = torch.as_tensor(normalise(torch.from_numpy(hu).float(), member.window)).to(chosen)
                    outputs.append(torch.from_numpy(_to_hu(run_grouped(member.forward, member_images), member.window)).float())
                spread, score = ensemble_disagreement(outputs)
                scores[ENSEMBLE_MAP], scores[ENSEMBLE_SCORE] = spread.numpy(), score.numpy()
                ensemble_sum += float(score.sum())
            extras = {**{name: values[index] for name, values in extras_in.items()}, **scores}
            writer.append(translated_hu, masks, labels, ids[index] if ids is not None else None, extras=extras)
            advance(len(index))
        count = info.num_samples
        safety: dict[str, Any] = {
            "hallucination": tally.summary() if judge is not None else None,
            "steganography": {
                "probe_noise_hu": probe_noise_hu,
                "mean_amplification": round(probe_sums["steganography_amplification"] / count, 4),
                "mean_cycle_error_hu": round(probe_sums["cycle_error_hu"] / count, 2),
                "mean_perturbed_cycle_error_hu": round(probe_sums["perturbed_cycle_error_hu"] / count, 2),
            },
            "ensemble": {"models": 1 + len(members), "mean_disagreement_hu": round(ensemble_sum / count, 2)} if members else None,
        }
        writer.set_provenance({**provenance, "details": {**details, "safety": safety}})
    source.close()
    return TranslationResult(output, count, safety)


def describe_safety(safety: dict[str, Any]) -> list[str]:
    """The safety summary as a few printable lines."""
    lines = []
    hallucination = safety.get("hallucination")
    if hallucination:
        dice = hallucination["dice"]
        worst = sorted(dice.items(), key=lambda item: item[1])[:3]
        lines.append(
            f"hallucination: mean Dice {hallucination['mean_dice']} over {len(dice)} structures "
            f"(lowest: {', '.join(f'{name} {value}' for name, value in worst)}); "
            f"tissue where the phantom has none: {hallucination['hallucinated_area_mm2_per_slice']} mm2 per slice"
        )
    else:
        lines.append("hallucination: not scored (no judge: the model's domain B had no labels; pass --segmenter DIR)")
    probe = safety["steganography"]
    lines.append(
        f"steganography probe ({probe['probe_noise_hu']} HU noise): amplification {probe['mean_amplification']} "
        f"(~1 honest, >>1 hidden signal); cycle error {probe['mean_cycle_error_hu']} -> {probe['mean_perturbed_cycle_error_hu']} HU"
    )
    if safety.get("ensemble"):
        lines.append(f"ensemble of {safety['ensemble']['models']}: mean disagreement {safety['ensemble']['mean_disagreement_hu']} HU (map in the file)")
    return lines
