"""Local, lesion-centred scenes: the tissue around a lesion in a 64x64 region of interest.

A scene is the "truth" HU map of a small field of view on a fine grid (``supersample`` times finer than
the output pixels, so that averaging down gives partial volume), before the scanner. Two are modelled:

- liver parenchyma in the portal-venous phase: a per-patient parenchymal HU (~100-130), low-contrast
  texture, portal and hepatic vein branches (near blood-pool HU) seen along their length or in cross
  section, and sometimes the liver capsule with perihepatic fat;
- lung parenchyma: aerated lung (~ -860 HU) with fine texture, branching pulmonary vessels and vessels cut
  in cross section (the classic nodule mimic), sometimes a fissure, and sometimes the pleura with the
  chest wall (muscle, fat, a rib) when the nodule is juxtapleural.

Everything is a pure function of a ``numpy.random.Generator`` so a scene is reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """The fine rendering grid of a square region of interest.

    Args:
        size_px: output size in pixels (the ROI is ``size_px`` x ``size_px``).
        spacing_mm: output pixel spacing.
        supersample: fine pixels per output pixel along each axis (partial-volume factor).
    """

    size_px: int
    spacing_mm: float
    supersample: int = 2

    @property
    def fine_size(self) -> int:
        return self.size_px * self.supersample

    @property
    def fine_spacing_mm(self) -> float:
        return self.spacing_mm / self.supersample

    @property
    def field_of_view_mm(self) -> float:
        return self.size_px * self.spacing_mm

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """(y, x) coordinates in mm of the fine pixel centres, origin at the ROI centre; each (F, F) float32."""
        axis = (np.arange(self.fine_size, dtype=np.float32) + 0.5) * self.fine_spacing_mm - self.field_of_view_mm / 2
        y, x = np.meshgrid(axis, axis, indexing="ij")
        return y, x


def random_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian random field with correlation length ``scale_px`` (float32)."""
    white = rng.standard_normal(shape).astype(np.float32)
    smooth = ndimage.gaussian_filter(white, max(scale_px, 0.3), mode="wrap")
    return (smooth - smooth.mean()) / (smooth.std() + 1e-6)


def smooth_step(signed_distance_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Occupancy in [0, 1] from a signed distance (positive inside); ``width_mm`` sets how soft the edge is."""
    return 0.5 * (1.0 + np.tanh(signed_distance_mm / max(width_mm, 1e-3)))


def segment_distance(y: np.ndarray, x: np.ndarray, start: tuple[float, float], stop: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) from each point to a segment, and the position along it in [0, 1]."""
    (y0, x0), (y1, x1) = start, stop
    dy, dx = y1 - y0, x1 - x0
    length_sq = dy * dy + dx * dx + 1e-9
    along = np.clip(((y - y0) * dy + (x - x0) * dx) / length_sq, 0.0, 1.0)
    distance = np.hypot(y - (y0 + along * dy), x - (x0 + along * dx))
    return distance, along


def tube_occupancy(
    y: np.ndarray,
    x: np.ndarray,
    points: list[tuple[float, float]],
    radii_mm: list[float],
    edge_mm: float,
) -> np.ndarray:
    """Occupancy of a tapering tube along a polyline (radius interpolated between the points)."""
    occupancy = np.zeros_like(y)
    for k in range(len(points) - 1):
        distance, along = segment_distance(y, x, points[k], points[k + 1])
        radius = radii_mm[k] + (radii_mm[k + 1] - radii_mm[k]) * along
        np.maximum(occupancy, smooth_step(radius - distance, edge_mm), out=occupancy)
    return occupancy


def random_polyline(
    rng: np.random.Generator,
    start: tuple[float, float],
    heading: float,
    length_mm: float,
    steps: int,
    wiggle: float,
) -> list[tuple[float, float]]:
    """A gently curving path: ``steps`` segments, each turning by up to ``wiggle`` radians."""
    points = [start]
    step = length_mm / steps
    for _ in range(steps):
        heading += rng.normal(0.0, wiggle)
        y, x = points[-1]
        points.append((y + step * math.sin(heading), x + step * math.cos(heading)))
    return points


def composite(base: np.ndarray, value: np.ndarray | float, occupancy: np.ndarray) -> np.ndarray:
    """Lay a structure of HU ``value`` over ``base`` with fractional ``occupancy`` (partial volume)."""
    return base * (1.0 - occupancy) + value * occupancy


@dataclass(frozen=True)
class VesselTree:
    """One branching vessel: a trunk polyline and its branches, each with radii per point."""

    branches: tuple[tuple[tuple[tuple[float, float], ...], tuple[float, ...]], ...]


def draw_vessel_tree(
    rng: np.random.Generator,
    field_of_view_mm: float,
    trunk_radius_mm: float,
    max_branches: int,
) -> VesselTree:
    """A vessel entering the field of view and branching, with radii that taper (Murray-like split).

    The trunk starts on a circle outside the ROI and heads roughly across it, so vessels pass near the
    lesion as they do in real organs.
    """
    half = field_of_view_mm / 2
    entry_angle = rng.uniform(0, 2 * math.pi)
    start = (1.2 * half * math.sin(entry_angle), 1.2 * half * math.cos(entry_angle))
    # Aim at a point near the centre, so that most trunks cross the field of view.
    target = rng.normal(0.0, 0.35 * half, size=2)
    heading = math.atan2(target[0] - start[0], target[1] - start[1])
    length = 2.6 * half
    trunk = random_polyline(rng, start, heading, length, steps=8, wiggle=0.12)
    taper = np.linspace(1.0, rng.uniform(0.55, 0.85), len(trunk))
    branches = [(tuple(trunk), tuple(float(trunk_radius_mm * t) for t in taper))]
    for _ in range(int(rng.integers(0, max_branches + 1))):
        at = int(rng.integers(2, len(trunk) - 2))
        parent_heading = math.atan2(trunk[at + 1][0] - trunk[at][0], trunk[at + 1][1] - trunk[at][1])
        side = rng.choice([-1.0, 1.0])
        branch_heading = parent_heading + side * rng.uniform(0.45, 1.1)
        # A daughter branch is thinner than its parent (radius ratio ~0.5-0.8).
        branch_radius = float(branches[0][1][at] * rng.uniform(0.5, 0.8))
        branch = random_polyline(rng, trunk[at], branch_heading, rng.uniform(0.6, 1.3) * half, steps=4, wiggle=0.15)
        radii = np.linspace(branch_radius, branch_radius * rng.uniform(0.5, 0.9), len(branch))
        branches.append((tuple(branch), tuple(float(r) for r in radii)))
    return VesselTree(branches=tuple(branches))


def vessel_occupancy(y: np.ndarray, x: np.ndarray, tree: VesselTree, edge_mm: float) -> np.ndarray:
    """Occupancy (0..1) of a whole vessel tree on the grid."""
    occupancy = np.zeros_like(y)
    for points, radii in tree.branches:
        np.maximum(occupancy, tube_occupancy(y, x, list(points), list(radii), edge_mm), out=occupancy)
    return occupancy


def cross_section_dots(
    rng: np.random.Generator,
    y: np.ndarray,
    x: np.ndarray,
    count: int,
    radius_range_mm: tuple[float, float],
    keep_out_mm: float,
    edge_mm: float,
) -> np.ndarray:
    """Vessels cut across by the slice: small round/oval dots, kept ``keep_out_mm`` away from the centre."""
    half = float(-y[0, 0]) + float(y[1, 0] - y[0, 0]) / 2
    occupancy = np.zeros_like(y)
    for _ in range(count):
        for _attempt in range(10):
            centre = rng.uniform(-half, half, size=2)
            if math.hypot(*centre) > keep_out_mm:
                break
        radius = rng.uniform(*radius_range_mm)
        stretch = rng.uniform(1.0, 1.6)  # obliquely cut vessels are oval
        angle = rng.uniform(0, math.pi)
        dy, dx = y - centre[0], x - centre[1]
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        distance = np.hypot(along / stretch, across)
        np.maximum(occupancy, smooth_step(radius - distance, edge_mm), out=occupancy)
    return occupancy


# ----------------------------------------------------------------------------------------- liver ----


@dataclass(frozen=True)
class LiverPatient:
    """Per-patient traits of the portal-venous phase that every lesion of the patient shares.

    Attributes:
        liver_hu: enhanced parenchyma (portal-venous phase, ~100-130 HU).
        blood_pool_hu: portal/hepatic veins and aorta (~140-200 HU); hemangioma nodules follow it.
        texture_sd_hu: amplitude of parenchymal texture (steatosis, perfusion heterogeneity).
        texture_scale_mm: its correlation length.
        noise_sd_hu: image noise in the liver after reconstruction (tube current vs body habitus; routine
            portal-venous CT gives ~10-20 HU).
        fill_speed: how far hemangioma centripetal fill has gone at this patient's scan delay (0.5-1.5).
        metastasis_type: the patient's primary tumour phenotype (index into ``METASTASIS_TYPES``).
        style_seed: seeds the lesion traits one patient's lesions share (lesions of one patient -- the
            metastases of one primary, a crop of cysts -- look alike; see ``lesions.patient_style``).
    """

    liver_hu: float
    blood_pool_hu: float
    texture_sd_hu: float
    texture_scale_mm: float
    noise_sd_hu: float
    fill_speed: float
    metastasis_type: int
    style_seed: int


def draw_liver_patient(rng: np.random.Generator, noise_range_hu: tuple[float, float] = (10.0, 24.0)) -> LiverPatient:
    """Draw the contrast phase, texture and noise level of one virtual patient."""
    enhanced_hu = float(np.clip(rng.normal(112.0, 9.0), 88.0, 138.0))
    blood_pool_hu = float(np.clip(enhanced_hu + rng.normal(55.0, 15.0), enhanced_hu + 25.0, 215.0))
    # Hepatic steatosis (about a fifth of adults) lowers the parenchyma by 15-45 HU; lesion contrast
    # changes with it, so absolute HU alone does not name a lesion.
    liver_hu = enhanced_hu - (rng.uniform(15.0, 45.0) if rng.random() < 0.2 else 0.0)
    return LiverPatient(
        liver_hu=liver_hu,
        blood_pool_hu=blood_pool_hu,
        texture_sd_hu=float(rng.uniform(2.0, 7.0)),
        texture_scale_mm=float(rng.uniform(1.5, 4.0)),
        noise_sd_hu=float(rng.uniform(*noise_range_hu)),
        fill_speed=float(rng.uniform(0.5, 1.5)),
        # colorectal-like hypovascular (most), hypervascular (NET, RCC, melanoma), cystic/mucinous
        metastasis_type=int(rng.choice(3, p=[0.72, 0.16, 0.12])),
        style_seed=int(rng.integers(2**62)),
    )


@dataclass(frozen=True)
class Scene:
    """A rendered background: fine-grid HU and where the lesion may not go (e.g. fat outside the liver)."""

    hu: np.ndarray
    # Signed distance (mm) to the organ boundary, positive inside the organ; +inf when no boundary is in view.
    organ_depth_mm: np.ndarray
    # Geometry a lesion may attach to (the pleura for pleural tags): a point on it and its inward normal.
    boundary_point_mm: tuple[float, float] | None = None
    boundary_normal: tuple[float, float] | None = None


def liver_scene(rng: np.random.Generator, grid: Grid, patient: LiverPatient, lesion_radius_mm: float) -> Scene:
    """Liver parenchyma around a lesion: texture, portal/hepatic vessels, sometimes the capsule and fat.

    Args:
        rng: the generator of this sample.
        grid: the fine grid.
        patient: per-patient contrast phase and texture.
        lesion_radius_mm: the lesion's radius, to keep the capsule outside it.

    Returns:
        The scene.
    """
    y, x = grid.mesh()
    half = grid.field_of_view_mm / 2
    texture = random_field(rng, y.shape, patient.texture_scale_mm / grid.fine_spacing_mm)
    hu = patient.liver_hu + patient.texture_sd_hu * texture
    # A slow gradient: perfusion differences across segments and beam hardening near the edge.
    tilt = rng.normal(0.0, 2.0, size=2) / half
    hu = hu + tilt[0] * y + tilt[1] * x

    # Portal and hepatic vein branches: in the portal-venous phase both are near blood-pool HU; thicker
    # trunks are brighter (less partial volume, better mixing).
    edge = grid.fine_spacing_mm * 0.7
    for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
        tree = draw_vessel_tree(rng, grid.field_of_view_mm, trunk_radius_mm=float(rng.uniform(1.2, 4.5)), max_branches=2)
        vessel_hu = patient.blood_pool_hu + rng.normal(-5.0, 10.0)
        hu = composite(hu, vessel_hu, vessel_occupancy(y, x, tree, edge))
    dots = int(rng.integers(0, 5))
    if dots:
        occupancy = cross_section_dots(rng, y, x, dots, (0.8, 3.5), keep_out_mm=lesion_radius_mm + 2.0, edge_mm=edge)
        hu = composite(hu, patient.blood_pool_hu + rng.normal(-10.0, 10.0), occupancy)

    organ_depth = np.full_like(y, np.inf)
    if rng.random() < 0.22:
        # Subcapsular lesion: the liver surface is a large-radius arc beyond the lesion, perihepatic fat
        # (and sometimes the abdominal wall muscle) outside it.
        normal_angle = rng.uniform(0, 2 * math.pi)
        distance = lesion_radius_mm + rng.uniform(2.0, 14.0)
        curvature_radius = rng.uniform(60.0, 200.0)
        centre = (
            (distance - curvature_radius) * math.sin(normal_angle),
            (distance - curvature_radius) * math.cos(normal_angle),
        )
        organ_depth = curvature_radius - np.hypot(y - centre[0], x - centre[1])
        inside = smooth_step(organ_depth, edge)
        fat = -100.0 + rng.normal(0.0, 12.0) + 6.0 * random_field(rng, y.shape, 1.0 / grid.fine_spacing_mm)
        outside = fat
        if rng.random() < 0.5:
            # Abdominal wall muscle a few mm beyond the fat.
            muscle = smooth_step(-organ_depth - rng.uniform(3.0, 10.0), edge)
            outside = composite(fat, 50.0 + rng.normal(0.0, 6.0), muscle)
        hu = composite(outside, hu, inside)
    return Scene(hu=hu.astype(np.float32), organ_depth_mm=organ_depth.astype(np.float32))


# ------------------------------------------------------------------------------------------ lung ----


@dataclass(frozen=True)
class LungPatient:
    """Per-patient traits of the lung scene.

    Attributes:
        lung_hu: aerated parenchyma (inspiration depth, emphysema: ~ -900 to -800 HU).
        texture_sd_hu: parenchymal texture amplitude.
        vessel_hu: enhanced or unenhanced blood (~ 20-80 HU).
        noise_sd_hu: image noise in aerated lung after reconstruction (screening scans are low dose).
        style_seed: seeds the nodule traits one patient's nodules share (the granulomas of one old
            infection calcify alike; see ``lesions.patient_style``).
    """

    lung_hu: float
    texture_sd_hu: float
    vessel_hu: float
    noise_sd_hu: float
    style_seed: int


def draw_lung_patient(rng: np.random.Generator, noise_range_hu: tuple[float, float] = (12.0, 35.0)) -> LungPatient:
    """Draw one virtual patient's lung density, texture and noise level."""
    return LungPatient(
        lung_hu=float(np.clip(rng.normal(-855.0, 25.0), -930.0, -780.0)),
        texture_sd_hu=float(rng.uniform(12.0, 30.0)),
        vessel_hu=float(rng.uniform(20.0, 80.0)),
        noise_sd_hu=float(rng.uniform(*noise_range_hu)),
        style_seed=int(rng.integers(2**62)),
    )


def lung_scene(
    rng: np.random.Generator,
    grid: Grid,
    patient: LungPatient,
    lesion_radius_mm: float,
    pleura_probability: float = 0.3,
) -> Scene:
    """Lung parenchyma around a nodule: texture, vessels (along and across), a fissure, sometimes pleura.

    Args:
        rng: the generator of this sample.
        grid: the fine grid.
        patient: per-patient lung traits.
        lesion_radius_mm: the nodule's radius, to keep the chest wall outside it.
        pleura_probability: chance that the nodule is juxtapleural (chest wall in view).

    Returns:
        The scene.
    """
    y, x = grid.mesh()
    half = grid.field_of_view_mm / 2
    fine = random_field(rng, y.shape, 0.8 / grid.fine_spacing_mm)
    coarse = random_field(rng, y.shape, 6.0 / grid.fine_spacing_mm)
    # Dependent lung is denser; the coarse field stands for that gradient and for mosaic perfusion.
    hu = patient.lung_hu + patient.texture_sd_hu * fine + 18.0 * coarse
    edge = grid.fine_spacing_mm * 0.6

    # Peripheral pulmonary vessels: a few, 1-3 mm wide, tapering; small ones look fainter because the
    # slice (1-2 mm thick) only partly contains them.
    for _ in range(int(rng.integers(0, 4))):
        trunk_radius = float(rng.uniform(0.4, 1.6))
        tree = draw_vessel_tree(rng, grid.field_of_view_mm, trunk_radius_mm=trunk_radius, max_branches=2)
        fill = min(1.0, 0.45 + 0.4 * trunk_radius)
        hu = composite(hu, patient.vessel_hu + rng.normal(0.0, 10.0), fill * vessel_occupancy(y, x, tree, edge))
    dots = int(rng.integers(0, 5))
    if dots:
        occupancy = cross_section_dots(rng, y, x, dots, (0.5, 1.8), keep_out_mm=lesion_radius_mm + 1.5, edge_mm=edge)
        hu = composite(hu, patient.vessel_hu, occupancy)

    if rng.random() < 0.15:
        # An interlobar fissure: a thin, slightly curved line, denser than lung.
        angle = rng.uniform(0, math.pi)
        offset = rng.normal(0.0, 0.4 * half)
        bend = rng.normal(0.0, 0.004)
        across = -x * math.sin(angle) + y * math.cos(angle) - offset
        along = x * math.cos(angle) + y * math.sin(angle)
        fissure = smooth_step(0.25 - np.abs(across - bend * along**2), edge)
        hu = composite(hu, -100.0, fissure)

    organ_depth = np.full_like(y, np.inf)
    boundary_point: tuple[float, float] | None = None
    boundary_normal: tuple[float, float] | None = None
    if rng.random() < pleura_probability:
        # Juxtapleural: the costal pleura on one side; beyond it, the chest wall: a thin fat line,
        # intercostal muscle and sometimes a rib (cortical shell, cancellous core).
        normal_angle = rng.uniform(0, 2 * math.pi)
        distance = lesion_radius_mm + rng.uniform(1.0, 10.0)
        curvature_radius = rng.uniform(80.0, 250.0)
        direction = (math.sin(normal_angle), math.cos(normal_angle))
        centre = ((distance - curvature_radius) * direction[0], (distance - curvature_radius) * direction[1])
        organ_depth = curvature_radius - np.hypot(y - centre[0], x - centre[1])
        wall = 45.0 + rng.normal(0.0, 8.0) + 8.0 * random_field(rng, y.shape, 1.0 / grid.fine_spacing_mm)
        fat_line = smooth_step(1.2 - np.abs(-organ_depth - rng.uniform(1.5, 3.0)), edge)
        wall = composite(wall, -90.0, fat_line)
        if rng.random() < 0.5:
            rib_centre_depth = -rng.uniform(6.0, 12.0)
            along = -direction[1] * y + direction[0] * x + rng.normal(0.0, 6.0)
            rib_distance = np.hypot((organ_depth - rib_centre_depth) / 1.0, along / 1.8)
            rib_radius = rng.uniform(4.0, 6.0)
            cortex = smooth_step(rib_radius - rib_distance, edge)
            marrow = smooth_step(rib_radius - 0.8 - rib_distance, edge)
            wall = composite(composite(wall, 600.0 + rng.normal(0, 80.0), cortex), 180.0 + rng.normal(0, 40.0), marrow)
        hu = composite(wall, hu, smooth_step(organ_depth, edge))
        boundary_point = (distance * direction[0], distance * direction[1])
        boundary_normal = (-direction[0], -direction[1])
    return Scene(
        hu=hu.astype(np.float32),
        organ_depth_mm=organ_depth.astype(np.float32),
        boundary_point_mm=boundary_point,
        boundary_normal=boundary_normal,
    )
