"""Lesion appearance models: liver lesions and lung nodules as they look on portal-venous CT.

Each model draws a lesion's parameters from its class's radiological appearance and paints it onto a
scene's fine grid (see :mod:`augmentor.simulate.scenes`), returning the HU map and the lesion mask.

Liver (portal-venous phase; the parenchyma enhances to ~100-130 HU):

- **cyst**: water attenuation (0-20 HU), homogeneous, imperceptible wall, sharp round or oval margin;
  rarely a thin septum or two abutting locules.
- **metastasis**: hypoattenuating to liver, ill-defined or lobulated, heterogeneous; often a continuous
  enhancing rim and a hypodense perilesional halo ("target"), a necrotic near-water centre when large;
  hypervascular primaries (NET, RCC, melanoma) give iso- to hyperattenuating lesions, cystic/mucinous
  ones near-water lesions. Multiple lesions share the patient's phenotype.
- **hemangioma**: peripheral nodular, *discontinuous* enhancement that follows the blood pool, filling
  centripetally; small ones "flash fill" (homogeneously blood-pool bright), large ones keep a central
  hypodense scar.

Lung: **benign** nodules are smaller, smooth and round, sometimes calcified (diffuse, central, laminated,
popcorn) or fat-containing (hamartoma), sometimes perifissural (lentiform); **malignant** ones are larger,
lobulated, spiculated, with pleural tags and retraction, sometimes part-solid (ground glass around a solid
core) or with bubble-like lucencies.

The classes overlap at their margins on purpose: small, fairly sharp metastases look like cysts; flash-
filling hemangiomas look like hypervascular metastases; small smooth cancers look like granulomas.

Traits of a patient's disease (a primary tumour's enhancement, one infection's calcified granulomas, a
cancer's histology) are drawn from :func:`patient_style`, so one patient's lesions look alike. That is
what makes the task hard with the published counts and easier with thousands: 182 lesions from about 90
patients show far fewer distinct appearances than 182 independent lesions would
(``bench/cohort_difficulty.py`` measures it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from augmentor.simulate.scenes import (
    Grid,
    LiverPatient,
    LungPatient,
    Scene,
    composite,
    random_field,
    smooth_step,
    tube_occupancy,
)


class LiverLesionClass(IntEnum):
    """Liver lesion classes, in the order stored in ``class_names``."""

    CYST = 0
    METASTASIS = 1
    HEMANGIOMA = 2


class LungNoduleClass(IntEnum):
    """Lung nodule classes, in the order stored in ``class_names``."""

    BENIGN = 0
    MALIGNANT = 1


LIVER_CLASS_NAMES: tuple[str, ...] = tuple(c.name.lower() for c in LiverLesionClass)
LUNG_CLASS_NAMES: tuple[str, ...] = tuple(c.name.lower() for c in LungNoduleClass)
METASTASIS_TYPES = ("hypovascular", "hypervascular", "cystic")

# Appearance variants (stored per sample as an index; names go into the file's provenance).
LIVER_VARIANTS: dict[str, tuple[str, ...]] = {
    "cyst": ("simple", "septated", "bilocular", "proteinaceous"),
    "metastasis": ("homogeneous", "rim", "target", "necrotic", "hypervascular", "cystic", "calcified"),
    "hemangioma": ("nodular-fill", "flash-fill", "scar"),
}
LUNG_VARIANTS: dict[str, tuple[str, ...]] = {
    "benign": ("solid", "calcified", "hamartoma", "perifissural", "inflammatory"),
    "malignant": ("solid", "spiculated", "part-solid", "cavitary"),
}


@dataclass(frozen=True)
class LesionShape:
    """A closed, star-shaped outline: an ellipse of equal area to a circle of ``diameter_mm``, modulated
    radially by low-order harmonics (lobulation).

    Args:
        centre_mm: (y, x) of the centre.
        diameter_mm: equivalent-area diameter.
        aspect: major/minor axis ratio (>= 1).
        angle: orientation of the major axis (radians).
        harmonics: ``(order, relative amplitude, phase)`` radial modulations.
    """

    centre_mm: tuple[float, float]
    diameter_mm: float
    aspect: float = 1.0
    angle: float = 0.0
    harmonics: tuple[tuple[int, float, float], ...] = ()


@dataclass
class ShapeFields:
    """Per-pixel fields of a shape: depth inside the edge (mm), normalised radius u (0 centre, 1 edge), angle."""

    depth_mm: np.ndarray
    radius_fraction: np.ndarray
    theta: np.ndarray
    boundary_mm: np.ndarray


def shape_fields(shape: LesionShape, y: np.ndarray, x: np.ndarray) -> ShapeFields:
    """Evaluate a shape on the grid. ``depth_mm`` > 0 inside; it approximates the distance to the edge."""
    dy, dx = y - shape.centre_mm[0], x - shape.centre_mm[1]
    cos_a, sin_a = math.cos(shape.angle), math.sin(shape.angle)
    stretch = math.sqrt(shape.aspect)
    along = (dx * cos_a + dy * sin_a) / stretch
    across = (-dx * sin_a + dy * cos_a) * stretch
    rho = np.hypot(along, across)
    theta = np.arctan2(across, along)
    boundary = np.full_like(rho, shape.diameter_mm / 2)
    modulation = np.ones_like(rho)
    for order, amplitude, phase in shape.harmonics:
        modulation += amplitude * np.cos(order * theta + phase)
    boundary = boundary * modulation
    return ShapeFields(
        depth_mm=boundary - rho,
        radius_fraction=rho / np.maximum(boundary, 1e-3),
        theta=theta,
        boundary_mm=boundary,
    )


def truncated_lognormal(rng: np.random.Generator, median: float, sigma: float, low: float, high: float) -> float:
    """A size from a log-normal distribution (sizes of lesions are right-skewed), kept within [low, high]."""
    for _ in range(100):
        value = median * math.exp(rng.normal(0.0, sigma))
        if low <= value <= high:
            return float(value)
    return float(np.clip(median, low, high))


def random_harmonics(rng: np.random.Generator, amplitude: tuple[float, float], orders: tuple[int, int], count: int) -> tuple[tuple[int, float, float], ...]:
    """``count`` lobulation harmonics of random order in ``orders`` and amplitude in ``amplitude``."""
    chosen = rng.choice(np.arange(orders[0], orders[1] + 1), size=min(count, orders[1] - orders[0] + 1), replace=False)
    return tuple((int(k), float(rng.uniform(*amplitude)), float(rng.uniform(0, 2 * math.pi))) for k in chosen)


def angular_noise(rng: np.random.Generator, theta: np.ndarray, orders: int = 6) -> np.ndarray:
    """A smooth random function of angle with unit-ish amplitude (sum of low harmonics)."""
    result = np.zeros_like(theta)
    for order in range(1, orders + 1):
        result += rng.normal(0.0, 1.0 / order) * np.cos(order * theta + rng.uniform(0, 2 * math.pi))
    return result / 1.1


@dataclass
class RenderedLesion:
    """A lesion painted onto its scene (fine grid)."""

    hu: np.ndarray
    mask: np.ndarray  # bool, fine grid: inside the lesion
    class_index: int
    diameter_mm: float
    variant: int
    details: dict[str, float] = field(default_factory=dict)


def patient_style(patient: LiverPatient | LungPatient, lesion_class: int) -> np.random.Generator:
    """The generator of the traits that all of one patient's lesions of one class share.

    Drawing a trait from it (instead of the lesion's own generator) makes it a property of the patient:
    every metastasis of one primary has the same enhancement pattern, every cyst of one liver the same
    fluid, every granuloma of one old infection the same calcification. A small training set therefore
    covers fewer distinct appearances than its lesion count says.
    """
    return np.random.default_rng([patient.style_seed, int(lesion_class)])


def distance_from_offset(y: np.ndarray, x: np.ndarray, centre_mm: tuple[float, float], angle: float, offset_mm: float) -> np.ndarray:
    """Distance (mm) of every grid point from the point ``offset_mm`` from ``centre_mm`` in direction ``angle``:
    where a blob (calcium, fat, air, a satellite nodule) placed off a lesion's centre is drawn."""
    return np.hypot(y - centre_mm[0] - offset_mm * math.sin(angle), x - centre_mm[1] - offset_mm * math.cos(angle))


def lesion_centre(rng: np.random.Generator, grid: Grid, jitter_px: float = 2.0) -> tuple[float, float]:
    """The lesion centre: the ROI centre plus a small offset (ROIs are drawn around lesions by hand)."""
    offset = rng.uniform(-jitter_px, jitter_px, size=2) * grid.spacing_mm
    return float(offset[0]), float(offset[1])


def draw_lesion_shape(
    rng: np.random.Generator,
    grid: Grid,
    diameter_mm: float,
    *,
    aspect: float | tuple[float, float],
    lobulation: tuple[float, float],
    orders: tuple[int, int],
    harmonic_count: int | tuple[int, int],
) -> LesionShape:
    """A lesion outline near the ROI centre: aspect ratio, orientation and lobulation drawn from ``rng``.

    Args:
        rng: the generator of this sample.
        grid: the fine grid (for the centre's jitter).
        diameter_mm: equivalent-area diameter.
        aspect: a fixed major/minor ratio, or the (low, high) range to draw it from.
        lobulation: range of the harmonics' relative amplitudes.
        orders: range of the harmonics' orders.
        harmonic_count: how many harmonics, or the [low, high) range to draw it from.

    Returns:
        The shape. The draws happen in a fixed order (centre, aspect, angle, count, harmonics), so a
        seed gives the same outline wherever this is called from.
    """
    centre = lesion_centre(rng, grid)
    aspect_ratio = float(rng.uniform(*aspect)) if isinstance(aspect, tuple) else float(aspect)
    angle = float(rng.uniform(0, math.pi))
    count = int(rng.integers(*harmonic_count)) if isinstance(harmonic_count, tuple) else int(harmonic_count)
    return LesionShape(centre, diameter_mm, aspect_ratio, angle, random_harmonics(rng, lobulation, orders, count))


# ----------------------------------------------------------------------------------- liver models ----


def draw_liver_diameter(rng: np.random.Generator, lesion_class: LiverLesionClass) -> float:
    """Diameter (mm, 5-40) from the class's size distribution.

    Most incidental liver lesions are small (the "too small to characterise" problem): cysts mostly under
    a centimetre, metastases and hemangiomas a little larger with long tails to 4 cm. Medians and spreads
    overlap widely, so size alone does not separate the classes.
    """
    median, sigma = {
        LiverLesionClass.CYST: (9.0, 0.5),
        LiverLesionClass.METASTASIS: (12.0, 0.55),
        LiverLesionClass.HEMANGIOMA: (13.0, 0.5),
    }[lesion_class]
    return truncated_lognormal(rng, median, sigma, 5.0, 40.0)


def render_cyst(rng: np.random.Generator, scene: Scene, grid: Grid, patient: LiverPatient, diameter_mm: float) -> RenderedLesion:
    """A simple hepatic cyst: water HU, homogeneous, sharp, round to oval."""
    y, x = grid.mesh()
    shape = draw_lesion_shape(rng, grid, diameter_mm, aspect=(1.0, 1.35), lobulation=(0.0, 0.03), orders=(2, 4), harmonic_count=2)
    fields = shape_fields(shape, y, x)
    style = patient_style(patient, LiverLesionClass.CYST)
    occupancy = smooth_step(fields.depth_mm, style.uniform(0.05, 0.2))
    cyst_hu = float(np.clip(style.normal(8.0, 5.0) + rng.normal(0.0, 1.5), -3.0, 22.0))
    # Proteinaceous or haemorrhagic cysts (a patient trait, e.g. polycystic disease) are denser than
    # water but stay homogeneous and sharp: a cyst with a metastasis's HU.
    proteinaceous = style.random() < 0.1
    if proteinaceous:
        cyst_hu = float(style.uniform(25.0, 50.0) + rng.normal(0.0, 3.0))
    interior = np.full_like(y, cyst_hu)
    variant = int(rng.choice(3, p=[0.86, 0.07, 0.07]))
    mask = fields.depth_mm > 0
    if variant == 1:
        # A thin, faintly enhancing septum across the cyst.
        angle = rng.uniform(0, math.pi)
        offset = rng.uniform(-0.3, 0.3) * diameter_mm / 2
        across = -(x - shape.centre_mm[1]) * math.sin(angle) + (y - shape.centre_mm[0]) * math.cos(angle) - offset
        interior = composite(interior, patient.liver_hu * 0.6, smooth_step(0.35 - np.abs(across), 0.1))
    elif variant == 2:
        # Two abutting locules (a daughter cyst), sharing the same fluid.
        angle = rng.uniform(0, 2 * math.pi)
        second = LesionShape(
            centre_mm=(
                shape.centre_mm[0] + 0.55 * diameter_mm * math.sin(angle),
                shape.centre_mm[1] + 0.55 * diameter_mm * math.cos(angle),
            ),
            diameter_mm=diameter_mm * rng.uniform(0.4, 0.7),
            aspect=float(rng.uniform(1.0, 1.3)),
        )
        second_depth = shape_fields(second, y, x).depth_mm
        occupancy = np.maximum(occupancy, smooth_step(second_depth, 0.1))
        mask = mask | (second_depth > 0)
    if proteinaceous and variant == 0:
        variant = 3
    hu = composite(scene.hu, interior, occupancy)
    return RenderedLesion(hu=hu, mask=mask, class_index=int(LiverLesionClass.CYST), diameter_mm=diameter_mm, variant=variant)


def render_metastasis(rng: np.random.Generator, scene: Scene, grid: Grid, patient: LiverPatient, diameter_mm: float) -> RenderedLesion:
    """A liver metastasis in the portal-venous phase, following the patient's primary-tumour phenotype."""
    y, x = grid.mesh()
    radius = diameter_mm / 2
    shape = draw_lesion_shape(rng, grid, diameter_mm, aspect=(1.0, 1.45), lobulation=(0.02, 0.13), orders=(2, 6), harmonic_count=(1, 4))
    fields = shape_fields(shape, y, x)
    u = fields.radius_fraction
    # Enhancement pattern, margin and texture belong to the primary tumour: drawn once per patient,
    # with a little lesion-to-lesion variation.
    style = patient_style(patient, LiverLesionClass.METASTASIS)
    # Most are ill-defined (infiltrative edge); a quarter are fairly sharp -- those mimic cysts when small.
    margin_mm = float(style.uniform(0.15, 0.5) if style.random() < 0.25 else style.uniform(0.6, 2.2)) * rng.uniform(0.8, 1.25)
    phenotype = METASTASIS_TYPES[patient.metastasis_type]
    liver = patient.liver_hu
    variant = {"hypervascular": 4, "cystic": 5}.get(phenotype, 0)
    rim_probability = 0.5
    if phenotype == "hypervascular":
        # NET / RCC / melanoma: brighter than liver but heterogeneous and below the blood pool, unlike
        # a flash-filling hemangioma, which is homogeneous and follows the blood pool.
        core_hu = liver + style.normal(22.0, 10.0)
        texture_sd = style.uniform(8.0, 16.0)
    elif phenotype == "cystic":
        # Mucinous / cystic (ovarian, GIST after treatment): near-water centre behind an irregular,
        # thick, enhancing wall -- the wall is what tells it from a cyst.
        core_hu = style.uniform(12.0, 35.0)
        texture_sd = style.uniform(3.0, 7.0)
        rim_probability = 0.9
    else:
        core_hu = liver - float(np.clip(style.normal(72.0, 18.0), 30.0, 110.0))
        texture_sd = style.uniform(4.0, 12.0)
    core_hu += rng.normal(0.0, 5.0)
    heterogeneity = random_field(rng, y.shape, style.uniform(1.0, 3.0) / grid.fine_spacing_mm)
    interior = core_hu + texture_sd * heterogeneity

    # Viable, enhancing tumour at the periphery: a continuous (not nodular) rim, thickness varying slowly,
    # a little above the parenchyma -- well below the blood-pool brightness of hemangioma nodules.
    has_rim = style.random() < rim_probability
    rim_thickness, rim_offset = style.uniform(1.2, 3.5), style.normal(8.0, 10.0)
    if has_rim:
        mean_thickness = min(rim_thickness * rng.uniform(0.8, 1.25), 0.4 * radius)
        thickness = np.clip(mean_thickness * (1.0 + 0.35 * angular_noise(rng, fields.theta, 3)), 0.5, None)
        rim = smooth_step(thickness - (fields.boundary_mm - fields.boundary_mm * u), 0.4) * (u <= 1.05)
        rim_hu = max(core_hu + 15.0, liver + rim_offset)
        interior = composite(interior, rim_hu, rim)
        variant = variant or 1
    # Central necrosis: near water, irregular, more likely in large lesions.
    if rng.random() < 0.75 / (1.0 + math.exp(-(diameter_mm - 20.0) / 4.0)):
        necrosis_radius = rng.uniform(0.3, 0.6) * (1.0 + 0.2 * angular_noise(rng, fields.theta, 4))
        necrosis = smooth_step((necrosis_radius - u) * radius, 0.6)
        interior = composite(interior, rng.uniform(10.0, 32.0), necrosis)
        variant = 3 if phenotype == "hypovascular" else variant
    # Mucinous colorectal metastases calcify: clumps of punctate calcium scattered through the tumour
    # (brighter, more central and more irregular than a hemangioma's peripheral blood-pool nodules).
    if phenotype == "hypovascular" and style.random() < 0.08:
        calcium = np.zeros_like(y)
        for _ in range(int(rng.integers(2, 7))):
            angle, depth = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.7) * radius
            blob = distance_from_offset(y, x, shape.centre_mm, angle, depth)
            np.maximum(calcium, smooth_step(rng.uniform(0.4, 1.2) - blob, 0.2), out=calcium)
        interior = composite(interior, rng.uniform(250.0, 600.0), calcium)
        variant = 6

    occupancy = smooth_step(fields.depth_mm, margin_mm)
    hu = scene.hu
    # Perilesional hypodense halo (compressed/oedematous parenchyma): the outer ring of the target sign.
    has_halo = style.random() < (0.5 if phenotype == "hypervascular" else 0.3)
    halo_width, halo_depth = style.uniform(1.0, 3.5), style.uniform(8.0, 22.0)
    if has_halo:
        halo = smooth_step(halo_width + fields.depth_mm, 0.7) * (1.0 - occupancy)
        hu = hu - halo_depth * halo
        if variant in (0, 1):
            variant = 2
    hu = composite(hu, interior, occupancy)
    return RenderedLesion(
        hu=hu, mask=fields.depth_mm > 0, class_index=int(LiverLesionClass.METASTASIS), diameter_mm=diameter_mm, variant=variant
    )


def render_hemangioma(rng: np.random.Generator, scene: Scene, grid: Grid, patient: LiverPatient, diameter_mm: float) -> RenderedLesion:
    """A cavernous hemangioma: peripheral discontinuous nodular enhancement, centripetal fill."""
    y, x = grid.mesh()
    radius = diameter_mm / 2
    shape = draw_lesion_shape(rng, grid, diameter_mm, aspect=(1.0, 1.4), lobulation=(0.02, 0.09), orders=(3, 6), harmonic_count=(1, 3))
    fields = shape_fields(shape, y, x)
    u, theta = fields.radius_fraction, fields.theta
    style = patient_style(patient, LiverLesionClass.HEMANGIOMA)
    # Unenhanced hemangioma is ~ 30-45 HU; by the portal phase the unfilled centre has gained a little.
    centre_hu = float(style.uniform(38.0, 70.0) + rng.normal(0.0, 4.0))
    # The enhancing parts follow the blood pool (the diagnostic clue), a little below it.
    pool_hu = patient.blood_pool_hu * style.uniform(0.88, 1.02)
    # Small hemangiomas often flash-fill; big ones fill slowly and keep a central scar.
    flash = rng.random() < 0.55 / (1.0 + math.exp((diameter_mm - 13.0) / 3.0))
    fill = 1.0 if flash else float(np.clip(rng.beta(1.6, 3.0) * patient.fill_speed, 0.0, 0.95))
    interior = np.full_like(y, centre_hu) + rng.uniform(2.0, 6.0) * random_field(rng, y.shape, 1.5 / grid.fine_spacing_mm)
    variant = 1 if flash else 0
    if flash:
        interior = pool_hu + rng.uniform(1.0, 4.0) * random_field(rng, y.shape, 1.0 / grid.fine_spacing_mm)
    else:
        # Peripheral globules: discrete nodules along the inner margin.
        nodules = np.zeros_like(y)
        count = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * math.pi, count))
        for angle in angles:
            nodule_radius = max(1.5, radius * rng.uniform(0.18, 0.36))
            depth = radius - nodule_radius * rng.uniform(0.8, 1.2)
            centre = (
                shape.centre_mm[0] + depth * math.sin(angle),
                shape.centre_mm[1] + depth * math.cos(angle),
            )
            distance = np.hypot(y - centre[0], x - centre[1])
            np.maximum(nodules, smooth_step(nodule_radius - distance, 0.3), out=nodules)
        # Centripetal fill: the enhanced band grows inward from the nodules with an irregular front.
        front = 1.0 - fill * (1.0 + 0.3 * angular_noise(rng, theta, 5))
        band = smooth_step((u - front) * radius, 0.8) if fill > 0.05 else np.zeros_like(y)
        enhanced = np.maximum(nodules, band * rng.uniform(0.7, 1.0))
        interior = composite(interior, pool_hu, np.clip(enhanced, 0.0, 1.0))
    if diameter_mm > 25.0 and rng.random() < 0.6:
        # Central fibrous scar / thrombosis: stays hypodense even on delayed images.
        scar = smooth_step((rng.uniform(0.15, 0.3) * (1.0 + 0.4 * angular_noise(rng, theta, 4)) - u) * radius, 0.5)
        interior = composite(interior, rng.uniform(15.0, 35.0), scar)
        variant = 2
    occupancy = smooth_step(fields.depth_mm, rng.uniform(0.15, 0.6))
    hu = composite(scene.hu, interior, occupancy)
    return RenderedLesion(
        hu=hu,
        mask=fields.depth_mm > 0,
        class_index=int(LiverLesionClass.HEMANGIOMA),
        diameter_mm=diameter_mm,
        variant=variant,
        details={"fill": fill},
    )


LIVER_RENDERERS = {
    LiverLesionClass.CYST: render_cyst,
    LiverLesionClass.METASTASIS: render_metastasis,
    LiverLesionClass.HEMANGIOMA: render_hemangioma,
}


def render_liver_lesion(
    rng: np.random.Generator, lesion_class: LiverLesionClass, scene: Scene, grid: Grid, patient: LiverPatient, diameter_mm: float
) -> RenderedLesion:
    """Paint a liver lesion of ``lesion_class`` onto ``scene``.

    Args:
        rng: the generator of this sample.
        lesion_class: cyst, metastasis or hemangioma.
        scene: the liver background (fine grid).
        grid: the fine grid.
        patient: per-patient contrast phase and phenotype.
        diameter_mm: equivalent diameter (see :func:`draw_liver_diameter`).

    Returns:
        The HU map with the lesion and the lesion mask, both on the fine grid.
    """
    return LIVER_RENDERERS[LiverLesionClass(lesion_class)](rng, scene, grid, patient, diameter_mm)


# ------------------------------------------------------------------------------------ lung models ----


def draw_lung_diameter(rng: np.random.Generator, nodule_class: LungNoduleClass) -> float:
    """Diameter (mm): benign nodules are mostly < 10 mm, cancers mostly 10-30 mm; the tails overlap."""
    if nodule_class == LungNoduleClass.BENIGN:
        return truncated_lognormal(rng, 10.5, 0.45, 4.0, 25.0)
    return truncated_lognormal(rng, 13.5, 0.45, 5.0, 30.0)


def _spicules(
    rng: np.random.Generator, y: np.ndarray, x: np.ndarray, shape: LesionShape, count: int, edge_mm: float, length_scale: float = 1.0
) -> np.ndarray:
    """Spiculation: thin radial strands (tumour and fibrotic reaction) leaving the margin, tapering."""
    occupancy = np.zeros_like(y)
    radius = shape.diameter_mm / 2
    for angle in rng.uniform(0, 2 * math.pi, count):
        length = length_scale * (radius * rng.uniform(0.2, 0.7) + rng.uniform(1.5, 7.0))
        curve = rng.normal(0.0, 0.15)
        start = (shape.centre_mm[0] + 0.8 * radius * math.sin(angle), shape.centre_mm[1] + 0.8 * radius * math.cos(angle))
        middle_angle = angle + curve
        middle = (start[0] + 0.5 * length * math.sin(middle_angle), start[1] + 0.5 * length * math.cos(middle_angle))
        end_angle = angle + 2 * curve
        end = (middle[0] + 0.5 * length * math.sin(end_angle), middle[1] + 0.5 * length * math.cos(end_angle))
        width = rng.uniform(0.35, 0.9)
        np.maximum(occupancy, tube_occupancy(y, x, [start, middle, end], [width, 0.6 * width, 0.15], edge_mm), out=occupancy)
    return occupancy


def render_benign_nodule(rng: np.random.Generator, scene: Scene, grid: Grid, patient: LungPatient, diameter_mm: float) -> RenderedLesion:
    """A benign nodule: granuloma (sometimes calcified), hamartoma (fat, popcorn calcium), intrapulmonary
    lymph node (perifissural, lentiform), inflammatory nodule (irregular, a few strands), or a
    nonspecific smooth solid nodule."""
    y, x = grid.mesh()
    radius = diameter_mm / 2
    # What kind of benign disease a patient has (old granulomatous infection, hamartoma, nodes,
    # organising inflammation) is the patient's: their nodules share it, density and margin too.
    style = patient_style(patient, LungNoduleClass.BENIGN)
    propensity = style.dirichlet(6.0 * np.asarray([0.48, 0.13, 0.07, 0.13, 0.19]))
    variant = int(rng.choice(5, p=propensity))
    aspect = float(rng.uniform(1.0, 1.25))
    if variant == 3:
        aspect = float(rng.uniform(1.6, 2.5))  # lentiform/triangular perifissural node
    # Inflammatory nodules and about a fifth of the others are lobulated: the overlap with cancer.
    lobulation = (0.04, 0.12) if variant == 4 or rng.random() < 0.2 else (0.0, 0.04)
    shape = draw_lesion_shape(rng, grid, diameter_mm, aspect=aspect, lobulation=lobulation, orders=(2, 4), harmonic_count=2)
    fields = shape_fields(shape, y, x)
    u = fields.radius_fraction
    solid_hu = float(style.normal(38.0, 13.0) + rng.normal(0.0, 5.0))
    interior = solid_hu + rng.uniform(2.0, 6.0) * random_field(rng, y.shape, 1.0 / grid.fine_spacing_mm)
    hu = scene.hu
    if variant == 1:
        # Benign calcification patterns: diffuse, central, laminated, popcorn.
        pattern = int(style.integers(0, 4)) if style.random() < 0.7 else int(rng.integers(0, 4))
        calcium_hu = float(np.clip(style.uniform(250.0, 900.0) * rng.uniform(0.8, 1.2), 200.0, 1000.0))
        if pattern == 0:
            calcium = np.ones_like(y) * rng.uniform(0.6, 1.0)
        elif pattern == 1:
            calcium = smooth_step((rng.uniform(0.25, 0.55) - u) * radius, 0.25)
        elif pattern == 2:
            rings = rng.uniform(0.25, 0.45)
            calcium = smooth_step(0.22 - np.abs(((u / rings) % 1.0) - 0.5) * rings * radius, 0.15) * (u < 0.95)
            calcium = np.maximum(calcium, smooth_step((0.2 - u) * radius, 0.2))
        else:
            calcium = np.zeros_like(y)
            for _ in range(int(rng.integers(3, 7))):
                angle, depth = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.6) * radius
                blob = distance_from_offset(y, x, shape.centre_mm, angle, depth)
                np.maximum(calcium, smooth_step(radius * rng.uniform(0.12, 0.25) - blob, 0.2), out=calcium)
        interior = composite(interior, calcium_hu, calcium)
    elif variant == 2:
        # Hamartoma: fat pockets (-120 to -40 HU) and sometimes popcorn calcification.
        fat = np.zeros_like(y)
        for _ in range(int(rng.integers(1, 4))):
            angle, depth = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.5) * radius
            blob = distance_from_offset(y, x, shape.centre_mm, angle, depth)
            np.maximum(fat, smooth_step(radius * rng.uniform(0.2, 0.4) - blob, 0.3), out=fat)
        interior = composite(interior, rng.uniform(-120.0, -40.0), fat)
        if rng.random() < 0.4:
            angle = rng.uniform(0, 2 * math.pi)
            blob = distance_from_offset(y, x, shape.centre_mm, angle, 0.3 * radius)
            interior = composite(interior, rng.uniform(300.0, 800.0), smooth_step(radius * 0.18 - blob, 0.2))
    elif variant == 3:
        # The fissure the lymph node sits on.
        across = -(x - shape.centre_mm[1]) * math.sin(shape.angle) + (y - shape.centre_mm[0]) * math.cos(shape.angle)
        hu = composite(hu, -100.0, smooth_step(0.25 - np.abs(across), grid.fine_spacing_mm * 0.6))
    margin_mm = style.uniform(0.1, 0.3) * rng.uniform(0.8, 1.2)  # crisp: granulomas and nodes are well circumscribed
    if variant == 4:
        # Inflammatory / organising nodule: softer margin and a few short fibrotic strands -- shorter and
        # fewer than a cancer's spicules, but enough to fool a quick look.
        margin_mm = rng.uniform(0.3, 0.7)
        strands = _spicules(rng, y, x, shape, int(rng.integers(2, 6)), grid.fine_spacing_mm * 0.6, length_scale=0.5)
        hu = composite(hu, solid_hu * 0.5 - 80.0, strands * (scene.organ_depth_mm > 0))
        if rng.random() < 0.7:
            # Satellite micronodules (1-3 mm) around the nodule: a sign of infection, not of cancer --
            # small and faint enough that it takes many examples to learn.
            satellites = np.zeros_like(y)
            for _ in range(int(rng.integers(2, 7))):
                angle, distance = rng.uniform(0, 2 * math.pi), radius + rng.uniform(1.5, 6.0)
                blob = distance_from_offset(y, x, shape.centre_mm, angle, distance)
                np.maximum(satellites, smooth_step(rng.uniform(0.5, 1.5) - blob, 0.3), out=satellites)
            hu = composite(hu, solid_hu * 0.7 - 60.0, satellites * (scene.organ_depth_mm > 0))
    occupancy = smooth_step(fields.depth_mm, margin_mm)
    hu = composite(hu, interior, occupancy)
    return RenderedLesion(hu=hu, mask=fields.depth_mm > 0, class_index=int(LungNoduleClass.BENIGN), diameter_mm=diameter_mm, variant=variant)


def render_malignant_nodule(rng: np.random.Generator, scene: Scene, grid: Grid, patient: LungPatient, diameter_mm: float) -> RenderedLesion:
    """A lung cancer: lobulated, spiculated, pleural tags, sometimes part-solid or with lucencies."""
    y, x = grid.mesh()
    radius = diameter_mm / 2
    # Histology is the patient's (a second primary or a satellite nodule tends to share it).
    style = patient_style(patient, LungNoduleClass.MALIGNANT)
    smooth_cancer = style.random() < 0.4  # smooth cancers: the overlap with benign nodules
    lobulation = (0.01, 0.05) if smooth_cancer else (0.05, 0.14)
    shape = draw_lesion_shape(rng, grid, diameter_mm, aspect=(1.0, 1.5), lobulation=lobulation, orders=(2, 5), harmonic_count=(2, 4))
    fields = shape_fields(shape, y, x)
    u = fields.radius_fraction
    solid_hu = float(style.normal(35.0, 11.0) + rng.normal(0.0, 5.0))
    interior = solid_hu + rng.uniform(4.0, 10.0) * random_field(rng, y.shape, 1.2 / grid.fine_spacing_mm)
    edge = grid.fine_spacing_mm * 0.6
    variant = 0
    hu = scene.hu
    part_solid = rng.random() < 0.18
    if part_solid:
        # Adenocarcinoma spectrum: ground glass (-700 to -400 HU) with a solid, often eccentric, core.
        ground_glass = rng.uniform(-700.0, -400.0) + 40.0 * random_field(rng, y.shape, 1.0 / grid.fine_spacing_mm)
        core_fraction = rng.uniform(0.3, 0.7)
        offset = rng.uniform(0.0, 0.3) * radius
        angle = rng.uniform(0, 2 * math.pi)
        core = LesionShape(
            centre_mm=(shape.centre_mm[0] + offset * math.sin(angle), shape.centre_mm[1] + offset * math.cos(angle)),
            diameter_mm=diameter_mm * core_fraction,
            aspect=float(rng.uniform(1.0, 1.4)),
            angle=float(rng.uniform(0, math.pi)),
            harmonics=random_harmonics(rng, (0.03, 0.1), (2, 4), 2),
        )
        core_occupancy = smooth_step(shape_fields(core, y, x).depth_mm, 0.3)
        interior = composite(ground_glass, interior, core_occupancy)
        variant = 2
    elif rng.random() < 0.1:
        # Cavitation: an eccentric air space with an irregular thick wall.
        cavity = smooth_step((rng.uniform(0.3, 0.55) * (1.0 + 0.3 * angular_noise(rng, fields.theta, 4)) - u) * radius, 0.3)
        interior = composite(interior, -950.0, cavity)
        variant = 3
    elif rng.random() < 0.1:
        # Bubble-like lucencies (pseudocavitation).
        for _ in range(int(rng.integers(1, 4))):
            angle, depth = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.5) * radius
            blob = distance_from_offset(y, x, shape.centre_mm, angle, depth)
            interior = composite(interior, -900.0, smooth_step(rng.uniform(0.5, 1.5) - blob, 0.2))
    # Even smooth cancers have a slightly fuzzy, infiltrating edge -- a subtle cue that takes many examples to learn.
    occupancy = smooth_step(fields.depth_mm, rng.uniform(0.45, 1.0) if not part_solid else 0.6)
    strands = np.zeros_like(y)
    if not smooth_cancer and rng.random() < 0.55:
        strands = _spicules(rng, y, x, shape, int(rng.integers(3, 14)), edge)
        variant = variant or 1
    if scene.boundary_point_mm is not None and scene.boundary_normal is not None and rng.random() < 0.6:
        # Pleural tag: linear strands from the nodule to the pleura, with a small retraction notch.
        for _ in range(int(rng.integers(1, 3))):
            spread = rng.normal(0.0, 0.35)
            direction = (-scene.boundary_normal[0], -scene.boundary_normal[1])
            tangent = (direction[1], -direction[0])
            target = (
                scene.boundary_point_mm[0] + spread * radius * 2 * tangent[0] + 2.0 * direction[0],
                scene.boundary_point_mm[1] + spread * radius * 2 * tangent[1] + 2.0 * direction[1],
            )
            start = (shape.centre_mm[0] + 0.7 * radius * direction[0], shape.centre_mm[1] + 0.7 * radius * direction[1])
            np.maximum(strands, tube_occupancy(y, x, [start, target], [rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.6)], edge), out=strands)
    hu = composite(hu, solid_hu * 0.5 - 80.0, strands * (1.0 - occupancy) * (scene.organ_depth_mm > 0))
    hu = composite(hu, interior, occupancy)
    return RenderedLesion(
        hu=hu, mask=fields.depth_mm > 0, class_index=int(LungNoduleClass.MALIGNANT), diameter_mm=diameter_mm, variant=variant
    )


LUNG_RENDERERS = {
    LungNoduleClass.BENIGN: render_benign_nodule,
    LungNoduleClass.MALIGNANT: render_malignant_nodule,
}


def render_lung_nodule(
    rng: np.random.Generator, nodule_class: LungNoduleClass, scene: Scene, grid: Grid, patient: LungPatient, diameter_mm: float
) -> RenderedLesion:
    """Paint a lung nodule of ``nodule_class`` onto ``scene``.

    Args:
        rng: the generator of this sample.
        nodule_class: benign or malignant.
        scene: the lung background (fine grid).
        grid: the fine grid.
        patient: per-patient lung traits.
        diameter_mm: equivalent diameter (see :func:`draw_lung_diameter`).

    Returns:
        The HU map with the nodule and the nodule mask, both on the fine grid.
    """
    return LUNG_RENDERERS[LungNoduleClass(nodule_class)](rng, scene, grid, patient, diameter_mm)
