"""Tissues of the virtual abdomen: their label values, names, CT numbers and texture.

Label values are the ``masks`` values of phantom and ``abdomen-ct`` files (``mask_label_names`` in the
file lists the names in this order). CT numbers are portal-venous phase (~70 s after contrast), built as
``unenhanced + enhancement * phase`` where ``phase`` is drawn per patient (bolus timing, cardiac output,
body size): liver lands at ~100-120 HU and the aorta at ~150-200 HU, as reported for routine
portal-venous abdominal CT; unenhanced organs (fat, bone, air, bile) vary a little on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Label value of each tissue (0 = air outside the body)."""

    BACKGROUND = 0
    SKIN = 1
    SUBCUTANEOUS_FAT = 2
    MUSCLE = 3
    VISCERAL_FAT = 4
    LUNG = 5
    LUNG_VESSEL = 6
    HEART = 7
    LIVER = 8
    HEPATIC_VESSEL = 9
    GALLBLADDER = 10
    SPLEEN = 11
    KIDNEY = 12
    STOMACH = 13
    BOWEL = 14
    GI_FLUID = 15
    GI_GAS = 16
    AORTA = 17
    IVC = 18
    SPINE_CORTICAL = 19
    SPINE_CANCELLOUS = 20
    SPINAL_CANAL = 21
    RIB = 22
    PANCREAS = 23
    VESSEL = 24  # other abdominal vessels: extrahepatic portal, splenic, mesenteric veins and arteries


LABEL_NAMES: tuple[str, ...] = tuple(tissue.name.lower() for tissue in Tissue)


@dataclass(frozen=True)
class TissueProperties:
    """CT number model of one tissue.

    Attributes:
        unenhanced_hu: CT number before contrast.
        enhancement_hu: added at a nominal portal-venous phase (phase factor 1).
        patient_spread_hu: standard deviation of a per-patient offset (composition, age, steatosis).
        texture_sd_hu: amplitude of the tissue's own correlated texture (0: homogeneous).
        texture_mm: correlation length of that texture, mm.
    """

    unenhanced_hu: float
    enhancement_hu: float = 0.0
    patient_spread_hu: float = 0.0
    texture_sd_hu: float = 0.0
    texture_mm: float = 2.0


# Portal-venous phase values (e.g. Bae, Radiology 2010, contrast enhancement review; typical PV
# enhancement: aorta ~130-160 HU over baseline, portal vein ~150, liver ~50-60, spleen ~60, kidney ~100+).
TISSUES: dict[Tissue, TissueProperties] = {
    Tissue.BACKGROUND: TissueProperties(-1000.0),
    Tissue.SKIN: TissueProperties(40.0, 10.0, 5.0, 3.0, 1.0),
    Tissue.SUBCUTANEOUS_FAT: TissueProperties(-105.0, 0.0, 8.0, 8.0, 1.5),
    Tissue.MUSCLE: TissueProperties(45.0, 12.0, 5.0, 6.0, 1.5),
    Tissue.VISCERAL_FAT: TissueProperties(-95.0, 0.0, 8.0, 12.0, 2.0),
    Tissue.LUNG: TissueProperties(-855.0, 0.0, 25.0, 20.0, 1.5),
    Tissue.LUNG_VESSEL: TissueProperties(40.0, 110.0, 10.0),
    Tissue.HEART: TissueProperties(42.0, 100.0, 8.0, 6.0, 3.0),
    Tissue.LIVER: TissueProperties(60.0, 50.0, 2.0, 4.0, 2.5),
    Tissue.HEPATIC_VESSEL: TissueProperties(42.0, 130.0, 8.0),
    Tissue.GALLBLADDER: TissueProperties(8.0, 0.0, 5.0),
    Tissue.SPLEEN: TissueProperties(48.0, 70.0, 6.0, 3.0, 3.0),
    Tissue.KIDNEY: TissueProperties(35.0, 135.0, 10.0, 8.0, 2.0),
    Tissue.STOMACH: TissueProperties(40.0, 50.0, 6.0, 4.0, 1.5),
    Tissue.BOWEL: TissueProperties(40.0, 50.0, 6.0, 4.0, 1.5),
    Tissue.GI_FLUID: TissueProperties(12.0, 0.0, 8.0, 5.0, 3.0),
    Tissue.GI_GAS: TissueProperties(-985.0, 0.0, 5.0),
    Tissue.AORTA: TissueProperties(42.0, 135.0, 3.0),
    Tissue.IVC: TissueProperties(40.0, 100.0, 8.0),
    Tissue.SPINE_CORTICAL: TissueProperties(900.0, 0.0, 100.0, 60.0, 1.0),
    Tissue.SPINE_CANCELLOUS: TissueProperties(210.0, 0.0, 45.0, 35.0, 1.5),
    Tissue.SPINAL_CANAL: TissueProperties(25.0, 0.0, 4.0),
    Tissue.RIB: TissueProperties(420.0, 0.0, 60.0, 40.0, 1.0),
    Tissue.PANCREAS: TissueProperties(40.0, 60.0, 8.0, 8.0, 1.5),
    Tissue.VESSEL: TissueProperties(42.0, 130.0, 8.0),
}

# The phantom domain's flat intensities: every tissue at its nominal portal-venous value, as XCAT
# assigns one value per organ.
NOMINAL_HU: dict[int, float] = {
    int(tissue): properties.unenhanced_hu + properties.enhancement_hu for tissue, properties in TISSUES.items()
}


@dataclass(frozen=True)
class ContrastPhase:
    """One patient's portal-venous enhancement.

    Attributes:
        phase: multiplies every tissue's nominal enhancement (bolus timing, cardiac output, weight).
        offsets_hu: per-tissue offsets (composition), tissue value -> HU.
    """

    phase: float
    offsets_hu: dict[int, float]

    def tissue_hu(self) -> dict[int, float]:
        """Mean CT number of every tissue for this patient."""
        return {
            int(tissue): properties.unenhanced_hu + properties.enhancement_hu * self.phase + self.offsets_hu[int(tissue)]
            for tissue, properties in TISSUES.items()
        }


def draw_contrast_phase(rng: np.random.Generator) -> ContrastPhase:
    """Draw a patient's enhancement: phase factor in [0.85, 1.15] and per-tissue offsets.

    Offsets are clipped to 2 standard deviations, so liver = 60 + 50 * phase (+-4) stays in ~98-122 HU
    and the aorta = 42 + 135 * phase (+-6) in ~150-205 HU.
    """
    phase = float(rng.uniform(0.85, 1.15))
    offsets = {
        int(tissue): float(np.clip(rng.normal(0.0, 1.0), -2.0, 2.0) * properties.patient_spread_hu)
        for tissue, properties in TISSUES.items()
    }
    return ContrastPhase(phase=phase, offsets_hu=offsets)


def tissue_textures() -> dict[int, tuple[float, float]]:
    """Tissue value -> (correlation_mm, texture_sd_hu) of the textured tissues."""
    return {
        int(tissue): (properties.texture_mm, properties.texture_sd_hu)
        for tissue, properties in TISSUES.items()
        if properties.texture_sd_hu > 0
    }
