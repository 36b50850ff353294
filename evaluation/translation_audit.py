"""How well a phantom -> CT translation model does its job, on slices it never saw.

Three sets of slices are scored the same way:

- ``ct``: held-out CT slices of the CT domain (other patients than the model's): what a perfect translation
  would score, the ceiling;
- ``phantom``: phantom slices as they are (flat tissue HU, the cartoon look): the gap a translation has to close;
- ``translated``: the same phantom slices through the model, by :func:`augmentor.translation.translate.translate`
  (so the audit scores exactly what ``augment translate`` writes, its safety scores included).

Per set:

- **structure** (the hallucination score of ``augment translate``): the model's judge, a segmenter trained on
  labelled CT slices only, segments each slice; Dice per structure against the slice's own labels (the
  simulator's for CT, the phantom's for the others), pooled over slices, with a 95 % percentile interval from a
  cluster bootstrap over patients; and the area the judge calls tissue where the labels say background;
- **look**: in the liver (eroded 3 px, away from its edge), the mean HU, the noise (standard deviation of the
  residual after a 5 x 5 box filter: CT's quantum noise and texture; a flat phantom has none) and the
  contrast of the hepatic vessels over the liver.

The steganography probe (Chu et al. 2017) and the translation speed come from the same ``translate`` run.
The JSON it writes (``results/translation-<model>.json``) is what the README's table is generated from::

    python -m evaluation.translation_audit --model cyclegan-phantom-ct --phantoms phantoms-seed1.h5 \\
        --ct cohorts/abdomen-ct-k48-seed0/test.h5 --out results/translation-cyclegan-phantom-ct.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.summary import AUDIT_FORMAT

SETS = ("ct", "phantom", "translated")
SET_TITLES = {"ct": "CT (held-out patients): the ceiling", "phantom": "phantoms, untranslated", "translated": "phantoms, translated"}
STRUCTURES = ("liver", "hepatic_vessel")
RESAMPLES = 1000
CONFIDENCE = 0.95
EROSION_PX = 3
NOISE_BOX_PX = 5


def _labels(judge: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The judge's labels of (N, 1, H, W) images in [-1, 1], in the fixed groups translation uses."""
    from augmentor.translation.translate import GROUP, run_grouped

    chunk = 16 * GROUP  # whole groups, so the grouping is translate's; only the labels of a chunk are kept
    return torch.cat([run_grouped(judge, images[start : start + chunk]).argmax(dim=1) for start in range(0, images.shape[0], chunk)])


def _pooled_dice(intersection: np.ndarray, predicted: np.ndarray, reference: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Dice pooled over slices (N, L) -> (L,), or per bootstrap replicate with (B, N) weights -> (B, L)."""
    if weights is None:
        return 2 * intersection.sum(0) / np.maximum(predicted.sum(0) + reference.sum(0), 1)
    return 2 * (weights @ intersection) / np.maximum(weights @ (predicted + reference), 1)


def look(images_hu: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    """Liver mean HU, liver noise (std of the 5x5 box-filter residual) and vessel-over-liver contrast, pooled.

    Args:
        images_hu: (N, H, W) HU.
        labels: (N, H, W) label maps.
        names: label names (``liver`` and ``hepatic_vessel`` looked up by name).

    Returns:
        ``liver_hu``, ``liver_noise_hu`` and ``vessel_contrast_hu`` (None where a structure is absent).
    """
    image = torch.from_numpy(images_hu.astype(np.float32))[:, None]
    liver = torch.from_numpy(labels == names.index("liver"))[:, None].float() if "liver" in names else torch.zeros_like(image)
    inner = -F.max_pool2d(-liver, 2 * EROSION_PX + 1, stride=1, padding=EROSION_PX) > 0.5
    smooth = F.avg_pool2d(image, NOISE_BOX_PX, stride=1, padding=NOISE_BOX_PX // 2, count_include_pad=False)
    result: dict[str, float | None] = {"liver_hu": None, "liver_noise_hu": None, "vessel_contrast_hu": None}
    if int(inner.sum()) < 2:
        return result
    liver_hu = float(image[inner].mean())
    result["liver_hu"] = round(liver_hu, 1)
    result["liver_noise_hu"] = round(float((image - smooth)[inner].std()), 1)
    if "hepatic_vessel" in names:
        vessel = torch.from_numpy(labels == names.index("hepatic_vessel"))[:, None]
        if vessel.any():
            result["vessel_contrast_hu"] = round(float(image[vessel].mean()) - liver_hu, 1)
    return result


def score_set(judge: torch.nn.Module, window: tuple[float, float], images_hu: np.ndarray, labels: np.ndarray,
              patients: np.ndarray, names: Sequence[str], pixel_area_mm2: float, seed: int) -> dict[str, Any]:
    """One set's structure and look scores (see the module docstring).

    Args:
        judge: the hallucination judge (a segmenter of ``names``).
        window: the HU window the judge reads ([-1, 1] in between).
        images_hu: (N, H, W) HU.
        labels: (N, H, W) the slices' own label maps.
        patients: (N,) patient of each slice (the bootstrap resamples patients).
        names: label names, background first.
        pixel_area_mm2: area of one pixel.
        seed: seed of the bootstrap.
    """
    from augmentor.data.intensity import normalise
    from augmentor.translation.safety import dice_counts
    from evaluation.bootstrap import patient_weights

    images = torch.as_tensor(normalise(torch.from_numpy(images_hu.astype(np.float32)), window))[:, None]
    reference = torch.from_numpy(labels.astype(np.int64))
    predicted = _labels(judge, images)
    intersection, predicted_area, reference_area = (t.double().numpy() for t in dice_counts(predicted, reference, len(names)))
    weights = patient_weights(patients, RESAMPLES, np.random.default_rng(seed))
    point = _pooled_dice(intersection, predicted_area, reference_area)
    replicates = _pooled_dice(intersection, predicted_area, reference_area, weights)
    tail = 100 * (1 - CONFIDENCE) / 2
    dice: dict[str, dict[str, float]] = {}
    for index, name in enumerate(names):
        if index == 0 or reference_area[:, index].sum() == 0:
            continue
        low, high = np.percentile(replicates[:, index], [tail, 100 - tail])
        dice[name] = {"estimate": round(float(point[index]), 4), "low": round(float(low), 4), "high": round(float(high), 4)}
    present = [index for index in range(1, len(names)) if reference_area[:, index].sum() > 0]
    mean_replicates = replicates[:, present].mean(1)
    low, high = np.percentile(mean_replicates, [tail, 100 - tail])
    hallucinated = ((predicted > 0) & (reference == 0)).flatten(1).sum(1).double().numpy() * pixel_area_mm2
    return {
        "slices": int(images_hu.shape[0]),
        "patients": int(np.unique(patients.astype(str)).size),
        "dice": dice,
        "mean_dice": {"estimate": round(float(point[present].mean()), 4), "low": round(float(low), 4), "high": round(float(high), 4)},
        "hallucinated_area_mm2_per_slice": round(float(hallucinated.mean()), 1),
        **look(images_hu, labels, names),
    }


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, H, W) HU, label maps and patient ids of a whole-slice file."""
    from augmentor.data.reader import H5File

    file = H5File(path)
    index = np.arange(file.info.num_samples)
    images, masks, _ = file.read(index)
    patients = file.patient_ids() if file.info.has_patient_ids else index.astype(str)
    file.close()
    return images[:, 0], masks, np.asarray(patients)


def audit(model: str | Path, phantoms: str | Path, ct: str | Path, *, work: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Score a translation model on held-out phantoms and CT (see the module docstring).

    Args:
        model: a CycleGAN model directory or zoo name, with its judge (``segmenter/``).
        phantoms: phantom slices the model did not train on (other virtual patients).
        ct: labelled CT slices of patients the model did not train on.
        work: where the translated file is written (default: a temporary folder, removed after).
        seed: seed of the steganography probe and of the bootstrap.

    Returns:
        The audit record written by :func:`main` (``format``, the model, the inputs, per-set scores, safety, speed).
    """
    from augmentor.data.provenance import sha256_file, sha256_text, stored_path
    from augmentor.data.reader import read_info
    from augmentor.errors import AugmentorError
    from augmentor.translation.train import SEGMENTER
    from augmentor.translation.translate import load_judge, load_translator, translate

    translator = load_translator(model, torch.device("cpu"))
    phantom_info, ct_info = read_info(phantoms), read_info(ct)
    if tuple(phantom_info.mask_label_names) != tuple(ct_info.mask_label_names):
        raise AugmentorError(f"{stored_path(ct)}: labels differ from {stored_path(phantoms)}'s; the audit compares them label by label")
    names = list(phantom_info.mask_label_names)
    if not (translator.path / SEGMENTER).is_dir():
        raise AugmentorError(f"model {translator.name!r} has no judge ({SEGMENTER}/): its domain B had no labels to train one on")
    judge, _ = load_judge(translator.path / SEGMENTER, names, torch.device("cpu"))
    training = translator.card.get("training_data") or {}
    ct_images, ct_labels, ct_patients = _read(Path(ct))
    if training.get("sha256") == sha256_file(ct) or training.get("patients_sha256") == sha256_text(str(p) for p in ct_patients):
        raise AugmentorError(f"{stored_path(ct)}: holds the model's own training patients; audit on held-out CT slices")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(work) if work is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        result = translate(model, phantoms, folder / "translated.h5", seed=seed, overwrite=True, progress=False, device="cpu")
        seconds = time.perf_counter() - started
        sets = {"ct": (ct_images, ct_labels, ct_patients), "phantom": _read(Path(phantoms)), "translated": _read(result.path)}
    scores = {
        key: score_set(judge, translator.window, images, labels, patients, names,
                       float(np.prod(ct_info.pixel_spacing_mm if key == "ct" else phantom_info.pixel_spacing_mm)), seed)
        for key, (images, labels, patients) in sets.items()
    }
    card = translator.card
    return {
        "format": AUDIT_FORMAT,
        "name": f"translation-{translator.name}",
        "model": {"name": translator.name, "weights_sha256": card["weights_sha256"], "steps": card.get("steps"),
                  "wall_time_s": card.get("wall_time_s"), "device": card.get("device")},
        "inputs": {"phantoms": {"path": Path(phantoms).name, "sha256": sha256_file(phantoms)},
                   "ct": {"path": Path(ct).name, "sha256": sha256_file(ct)}},
        "structures": list(STRUCTURES),
        "sets": scores,
        "steganography": result.safety["steganography"],
        "translate": {"slices": result.slices, "seconds": round(seconds, 1), "slices_per_s": round(result.slices / seconds, 2),
                      "threads": torch.get_num_threads()},
        "confidence": CONFIDENCE,
        "resamples": RESAMPLES,
        "seed": seed,
    }


def _dice_text(entry: Mapping[str, Any] | None) -> str:
    from evaluation.report import format_interval

    return format_interval(entry, digits=2)


def markdown(record: Mapping[str, Any]) -> str:
    """The README table of an audit record: one row per set, then the probe and the speed."""
    structures = [str(name) for name in record["structures"]]
    header = ["slices", *(f"judge Dice, {name.replace('_', ' ')}" for name in structures), "judge Dice, all structures",
              "tissue where the labels have none (mm²/slice)", "liver HU", "liver noise (HU)", "vessel contrast (HU)"]
    lines = ["| set | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]

    def number(value: Any) -> str:
        return "–" if value is None else f"{value:g}"

    for key in SETS:
        entry = record["sets"][key]
        cells = [SET_TITLES[key], f"{entry['slices']} of {entry['patients']} patients",
                 *(_dice_text(entry["dice"].get(name)) for name in structures), _dice_text(entry["mean_dice"]),
                 number(entry["hallucinated_area_mm2_per_slice"]), number(entry["liver_hu"]), number(entry["liver_noise_hu"]),
                 number(entry["vessel_contrast_hu"])]
        lines.append("| " + " | ".join(cells) + " |")
    probe, speed = record["steganography"], record["translate"]
    lines += [
        "",
        f"Model `{record['model']['name']}` ({record['model']['steps']} steps); phantoms `{record['inputs']['phantoms']['path']}`, "
        f"CT `{record['inputs']['ct']['path']}`; {int(record['confidence'] * 100)} % intervals from {record['resamples']} "
        f"bootstraps of patients. Steganography probe ({probe['probe_noise_hu']} HU noise on the translation): amplification "
        f"{probe['mean_amplification']} (about 1 or less: no hidden copy of the phantom), cycle error "
        f"{probe['mean_cycle_error_hu']} → {probe['mean_perturbed_cycle_error_hu']} HU. Translation with the scores: "
        f"{speed['slices_per_s']} slices/s on {speed['threads']} CPU threads.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from augmentor.errors import AugmentorError

    parser = argparse.ArgumentParser(description="Score a phantom -> CT translation model on held-out phantoms and CT.")
    parser.add_argument("--model", required=True, help="CycleGAN model directory or zoo name")
    parser.add_argument("--phantoms", required=True, type=Path, help="phantom slices the model did not train on")
    parser.add_argument("--ct", required=True, type=Path, help="labelled CT slices of patients the model did not train on")
    parser.add_argument("--out", required=True, type=Path, help="the audit JSON (e.g. results/translation-NAME.json)")
    parser.add_argument("--work", type=Path, help="keep the translated file in this folder")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    try:
        record = audit(arguments.model, arguments.phantoms, arguments.ct, work=arguments.work, seed=arguments.seed)
    except AugmentorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    from augmentor.models.card import write_json_atomic

    write_json_atomic(arguments.out, record)
    sys.stdout.write(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
