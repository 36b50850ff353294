"""The safety scores that travel with every translated file: pure functions of tensors.

- **Hallucination** (Cohen et al. 2018, "Distribution matching losses can hallucinate features in medical
  image translation"): a *judge* segmenter, trained on labelled domain-B slices only, segments each
  translation; its labels are compared with the phantom's, which are the translation's by construction.
  Per structure, Dice; per slice, the mean Dice over the structures present and the area the judge calls
  tissue where the phantom has none (``hallucinated_area_mm2``). A structure painted into the image lowers
  its Dice (false positive pixels) and, outside the body, raises the hallucinated area; an erased structure
  lowers its Dice (false negatives).
- **Ensemble disagreement**: CycleGANs trained from different seeds with the same recipe translate the same
  slice; the per-pixel standard deviation of their outputs (HU) is the map, its mean the slice's score.
  Where they disagree, the translation is a guess, not a mapping the data pinned down.
- **Steganography probe** (Chu et al. 2017, "CycleGAN, a master of steganography"): a generator can hide
  its source in low-amplitude, high-frequency signal so that the reverse generator rebuilds the source
  from it. A small Gaussian perturbation (a few HU, invisible under CT noise) of the translated slice is
  fed to the reverse generator: ``amplification = mean|G_BA(y + δ) - G_BA(y)| / mean|δ|``. An honest
  reverse mapping moves by about as much as its input (~1 or less); a steganographic one amplifies the
  perturbation many times, and its cycle error grows accordingly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Network = Callable[[torch.Tensor], torch.Tensor]


def dice_counts(predicted: torch.Tensor, labels: torch.Tensor, num_labels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, H, W) predicted and reference label maps -> (B, L) intersection, predicted and reference pixel counts."""
    one_hot_p = torch.nn.functional.one_hot(predicted.long().clamp(0, num_labels - 1), num_labels).flatten(1, 2).float()
    one_hot_l = torch.nn.functional.one_hot(labels.long().clamp(0, num_labels - 1), num_labels).flatten(1, 2).float()
    return (one_hot_p * one_hot_l).sum(1), one_hot_p.sum(1), one_hot_l.sum(1)


def hallucination_per_image(predicted: torch.Tensor, labels: torch.Tensor, num_labels: int, pixel_area_mm2: float) -> dict[str, torch.Tensor]:
    """Per-slice hallucination scores.

    Args:
        predicted: (B, H, W) the judge's labels of the translations.
        labels: (B, H, W) the phantom's labels.
        num_labels: labels including background (0).
        pixel_area_mm2: area of a pixel.

    Returns:
        ``dice_mean`` (B,): mean Dice over the structures (label > 0) present in either map (NaN if none);
        ``hallucinated_area_mm2`` (B,): area the judge labels as tissue where the phantom has background.
    """
    intersection, predicted_area, label_area = (t[:, 1:] for t in dice_counts(predicted, labels, num_labels))
    present = (predicted_area + label_area) > 0
    dice = torch.where(present, 2 * intersection / (predicted_area + label_area).clamp_min(1), torch.zeros_like(intersection))
    dice_mean = dice.sum(1) / present.sum(1).clamp_min(1)
    dice_mean = torch.where(present.any(1), dice_mean, torch.full_like(dice_mean, math.nan))
    hallucinated = ((predicted > 0) & (labels == 0)).flatten(1).sum(1).float() * pixel_area_mm2
    return {"dice_mean": dice_mean, "hallucinated_area_mm2": hallucinated}


@dataclass
class HallucinationTally:
    """Dice per structure pooled over a file (sums of pixel counts), and the hallucinated area per slice."""

    label_names: Sequence[str]
    intersection: np.ndarray = field(init=False)
    predicted_area: np.ndarray = field(init=False)
    label_area: np.ndarray = field(init=False)
    hallucinated_mm2: float = 0.0
    slices: int = 0

    def __post_init__(self) -> None:
        self.intersection, self.predicted_area, self.label_area = (np.zeros(len(self.label_names)) for _ in range(3))

    def add(self, predicted: torch.Tensor, labels: torch.Tensor, hallucinated_area_mm2: torch.Tensor) -> None:
        counts = dice_counts(predicted, labels, len(self.label_names))
        self.intersection += counts[0].sum(0).double().cpu().numpy()
        self.predicted_area += counts[1].sum(0).double().cpu().numpy()
        self.label_area += counts[2].sum(0).double().cpu().numpy()
        self.hallucinated_mm2 += float(hallucinated_area_mm2.sum())
        self.slices += int(predicted.shape[0])

    def summary(self) -> dict[str, Any]:
        """``dice`` per structure present in the phantom labels, their mean, and the mean hallucinated area."""
        dice = {
            name: round(float(2 * self.intersection[i] / (self.predicted_area[i] + self.label_area[i])), 4)
            for i, name in enumerate(self.label_names)
            if i > 0 and self.label_area[i] > 0
        }
        return {
            "dice": dice,
            "mean_dice": round(float(np.mean(list(dice.values()))), 4) if dice else None,
            "hallucinated_area_mm2_per_slice": round(self.hallucinated_mm2 / max(self.slices, 1), 2),
            "slices": self.slices,
        }


@torch.no_grad()
def judge_labels(judge: Network, images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) images in [-1, 1] -> (B, H, W) the judge's most likely labels."""
    return judge(images).argmax(dim=1)


def ensemble_disagreement(translations: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """K translations (B, 1, H, W) of the same slices in HU -> per-pixel std map (B, H, W) and its mean (B,)."""
    if len(translations) < 2:
        raise ValueError("ensemble disagreement needs at least two models")
    stacked = torch.stack([t[:, 0].float() for t in translations])  # (K, B, H, W)
    spread = stacked.std(dim=0, unbiased=True)
    return spread, spread.flatten(1).mean(1)


def steganography_scores(
    source: torch.Tensor, rebuilt: torch.Tensor, perturbed: torch.Tensor, noise: torch.Tensor, hu_per_unit: float
) -> dict[str, torch.Tensor]:
    """The probe's scores from the reverse generator's outputs (see :func:`steganography_probe`)."""
    return {
        "cycle_error_hu": (rebuilt - source).abs().flatten(1).mean(1) * hu_per_unit,
        "perturbed_cycle_error_hu": (perturbed - source).abs().flatten(1).mean(1) * hu_per_unit,
        "amplification": (perturbed - rebuilt).abs().flatten(1).mean(1) / noise.abs().flatten(1).mean(1).clamp_min(1e-12),
    }


@torch.no_grad()
def steganography_probe(reverse: Network, source: torch.Tensor, translated: torch.Tensor, noise: torch.Tensor, hu_per_unit: float) -> dict[str, torch.Tensor]:
    """How much the cycle reconstruction moves when the translation is perturbed invisibly.

    Args:
        reverse: the B -> A generator.
        source: (B, 1, H, W) the phantom slices in [-1, 1].
        translated: (B, 1, H, W) their translations in [-1, 1] (as stored: rounded to whole HU).
        noise: (B, 1, H, W) the perturbation δ in the same units.
        hu_per_unit: HU per unit of the [-1, 1] scale (half the window width).

    Returns:
        Per slice (B,): ``cycle_error_hu`` = mean|G_BA(y) - a|, ``perturbed_cycle_error_hu`` =
        mean|G_BA(y + δ) - a| (both HU), and ``amplification`` = mean|G_BA(y + δ) - G_BA(y)| / mean|δ|.
    """
    return steganography_scores(source, reverse(translated).float(), reverse(translated + noise).float(), noise, hu_per_unit)


def probe_noise(seed: int, index: int, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """The (H, W) float32 perturbation of slice ``index``: depends only on (seed, index)."""
    generator = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    return (generator.standard_normal(shape, dtype=np.float32) * sigma).astype(np.float32)
