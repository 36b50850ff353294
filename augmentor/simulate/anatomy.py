"""Virtual patients: axial label maps of the lower chest and upper abdomen (the XCAT-like phantom domain).

A :class:`VirtualPatient` is a set of 3D shapes in patient coordinates (mm): ``x`` runs to the patient's
left (image right, radiological convention), ``y`` to posterior (image down, patient supine), ``z``
caudally from the top of the right hemidiaphragm (z = 0) to below the kidneys (~z = 180). Every organ is
defined in 3D — ellipsoids with lobulated outlines, a paraboloid diaphragm per side, tubes for vessels
and gut — so a stack of neighbouring slices changes smoothly, and the same patient renders at any pixel
spacing (render finer, then average, for partial volume).

Per-patient variation: body size and shape, subcutaneous fat, muscle bulk, diaphragm height, organ size,
position and outline, a random hepatic (portal and hepatic venous) tree, lung-base vessels, bowel loops
and their gas/fluid content, rib obliquity, contrast phase (:mod:`augmentor.simulate.tissues`).

Everything is a pure function of a seed: :func:`draw_patient` samples a patient from an
``np.random.Generator``; :func:`render_labels` is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from augmentor.simulate.tissues import ContrastPhase, Tissue, draw_contrast_phase

# Default reconstruction field of view: 256 pixels of 1.4 mm (358 mm, an adult abdominal FOV).
DEFAULT_SIZE = 256
DEFAULT_SPACING_MM = 1.4
FIELD_OF_VIEW_MM = DEFAULT_SIZE * DEFAULT_SPACING_MM
SLICE_SPACING_MM = 5.0  # a routine 5 mm axial reconstruction interval

Region = np.ndarray  # boolean mask on the slice grid


@dataclass(frozen=True)
class Ellipsoid:
    """An organ: elliptical cross-sections that swell and shrink along z, with a lobulated outline.

    Attributes:
        centre: (x, y) at ``z_mid``, mm.
        drift: (dx/dz, dy/dz): how the centre moves caudally.
        radii: (rx, ry) of the largest cross-section, mm.
        angle: rotation of the cross-section, radians.
        z_mid, half_height: the organ spans ``z_mid +- half_height``.
        lobulation: (k, amplitude, phase) Fourier terms of the outline.
    """

    centre: tuple[float, float]
    drift: tuple[float, float]
    radii: tuple[float, float]
    angle: float
    z_mid: float
    half_height: float
    lobulation: tuple[tuple[int, float, float], ...] = ()

    def profile(self, z: np.ndarray | float) -> np.ndarray:
        """Cross-section scale at ``z`` (0 outside the organ)."""
        u = (np.asarray(z, dtype=np.float64) - self.z_mid) / self.half_height
        return np.sqrt(np.clip(1.0 - u * u, 0.0, None))

    def normalised_radius(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        """Distance from the axis in units of the local outline: < 1 inside."""
        if np.ndim(z) == 0:
            if abs(float(z) - self.z_mid) >= self.half_height:
                return np.full(np.shape(x), np.inf)  # this slice misses the organ
            if _is_slice_grid(x, y):
                return self._on_slice_grid(x, y, float(z))
        return self._normalised_radius(x, y, z)

    def _on_slice_grid(self, x: np.ndarray, y: np.ndarray, z: float) -> np.ndarray:
        """Evaluate only in the organ's bounding box (a slice grid is mostly elsewhere)."""
        offset = z - self.z_mid
        centre_x, centre_y = self.centre[0] + self.drift[0] * offset, self.centre[1] + self.drift[1] * offset
        # Generous reach: outline bumps add at most the sum of the lobulation amplitudes; 1.6 covers grow.
        reach = 1.6 * max(self.radii) * (1.0 + sum(abs(a) for _, a, _ in self.lobulation)) + 2.0
        columns, rows = x[0], y[:, 0]
        c0, c1 = np.searchsorted(columns, [centre_x - reach, centre_x + reach])
        r0, r1 = np.searchsorted(rows, [centre_y - reach, centre_y + reach])
        result = np.full(x.shape, np.inf)
        if c1 > c0 and r1 > r0:
            result[r0:r1, c0:c1] = self._normalised_radius(x[r0:r1, c0:c1], y[r0:r1, c0:c1], z)
        return result

    def _normalised_radius(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
        offset = np.asarray(z, dtype=np.float64) - self.z_mid
        dx = x - (self.centre[0] + self.drift[0] * offset)
        dy = y - (self.centre[1] + self.drift[1] * offset)
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        u = (dx * cos + dy * sin) / self.radii[0]
        v = (-dx * sin + dy * cos) / self.radii[1]
        outline = np.ones_like(u)
        if self.lobulation:
            phi = np.arctan2(v, u)
            for order, amplitude, phase in self.lobulation:
                outline = outline + amplitude * np.cos(order * phi + phase)
        scale = self.profile(z) * outline
        radius = np.hypot(u, v)
        return np.where(scale > 0, radius / np.maximum(scale, 1e-9), np.inf)

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray | float, grow: float = 1.0) -> np.ndarray:
        return self.normalised_radius(x, y, z) < grow


def _is_slice_grid(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether (x, y) is a :func:`slice_grid` (x constant down columns, y along rows, both ascending)."""
    return (
        x.ndim == 2 and x.shape == y.shape and x.shape[0] > 1 and x.shape[1] > 1
        and x[0, 0] == x[1, 0] and y[0, 0] == y[0, 1] and x[0, 1] > x[0, 0] and y[1, 0] > y[0, 0]
    )


@dataclass(frozen=True)
class Tube:
    """A polyline tube (vessel or gut) in 3D: consecutive segments share their end points.

    Attributes:
        points: (K, 3) x, y, z of the axis, mm.
        radii: (K - 1,) radius of each segment, mm.
    """

    points: np.ndarray
    radii: np.ndarray

    def z_range(self) -> tuple[float, float]:
        margin = float(self.radii.max())
        return float(self.points[:, 2].min()) - margin, float(self.points[:, 2].max()) + margin


@dataclass(frozen=True)
class GutLoop:
    """A loop of stomach-free gut (colon or small bowel) with its content.

    Attributes:
        tube: the lumen's axis and outer radius.
        wall_mm: wall thickness.
        gas_level: gas fills the lumen anterior to ``axis_y + gas_level * radius`` (-1: no gas, 1: all gas).
    """

    tube: Tube
    wall_mm: float
    gas_level: float


@dataclass(frozen=True)
class VirtualPatient:
    """One virtual patient's anatomy (all lengths in mm, see the module docstring for the axes)."""

    patient_id: str
    phase: ContrastPhase
    # Body outline: superellipse half-width, anterior/posterior half-depths and exponents, centre.
    half_width: float
    half_depth_anterior: float
    half_depth_posterior: float
    exponent_anterior: float
    exponent_posterior: float
    centre: tuple[float, float]
    width_slope: float  # relative change of the body width per mm caudally
    skin_mm: float
    fat_mm: float
    fat_anterior_factor: float
    fat_lateral_factor: float
    muscle_mm: float
    paraspinal_radii: tuple[float, float]
    # Spine and vessels behind the abdomen.
    spine_y: float
    vertebra_radii: tuple[float, float]
    canal_radius: float
    spinous_length: float
    aorta: tuple[float, float, float]  # x, y, radius
    ivc: tuple[float, float, float, float]  # x, y, rx, ry
    # Diaphragm: a paraboloid per side, z = z_apex + curvature * distance^2 from the apex.
    dome_right: tuple[float, float, float, float]  # x, y, z_apex, curvature
    dome_left: tuple[float, float, float, float]
    heart: Ellipsoid
    # Organs.
    liver_right: Ellipsoid
    liver_left: Ellipsoid
    gallbladder: Ellipsoid
    spleen: Ellipsoid
    kidneys: tuple[Ellipsoid, Ellipsoid]
    stomach: Ellipsoid
    stomach_gas_level: float
    psoas_z_start: float
    # Ribs: rib k crosses the wall where z = rib_phase + k * rib_period + rib_slope * angle_from_spine.
    rib_period: float
    rib_height: float
    rib_slope: float
    rib_phase: float
    costal_margin: tuple[float, float]  # reach (angle from spine) at z = 0 and its change per mm
    pancreas: Tube | None = None
    abdominal_vessels: tuple[Tube, ...] = field(default_factory=tuple)
    hepatic_vessels: tuple[Tube, ...] = field(default_factory=tuple)
    lung_vessels: tuple[Tube, ...] = field(default_factory=tuple)
    gut: tuple[GutLoop, ...] = field(default_factory=tuple)
    first_slice_z: float = 0.0


# --------------------------------------------------------------------------------------------------
# Regions of the body (vectorised over x, y and z, so trees can be grown in 3D with the same code)


def _angle_from(theta: np.ndarray, reference: float) -> np.ndarray:
    """Absolute angular distance in [0, pi]."""
    return np.abs((theta - reference + np.pi) % (2.0 * np.pi) - np.pi)


def _body_polar(patient: VirtualPatient, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance from the body centre, angle, outline radius at that angle)."""
    dx, dy = x - patient.centre[0], y - patient.centre[1]
    theta = np.arctan2(dy, dx)  # +pi/2 is posterior
    rho = np.hypot(dx, dy)
    width = patient.half_width * (1.0 + patient.width_slope * (np.asarray(z, dtype=np.float64) - 60.0))
    posterior = dy > 0
    depth = np.where(posterior, patient.half_depth_posterior, patient.half_depth_anterior)
    exponent = np.where(posterior, patient.exponent_posterior, patient.exponent_anterior)
    outline = (np.abs(np.cos(theta) / width) ** exponent + np.abs(np.sin(theta) / depth) ** exponent) ** (-1.0 / exponent)
    return rho, theta, outline


def _fat_inner_radius(patient: VirtualPatient, theta: np.ndarray, outline: np.ndarray) -> np.ndarray:
    anterior = np.clip(-np.sin(theta), 0.0, None)
    fat = patient.fat_mm * (1.0 + patient.fat_anterior_factor * anterior + patient.fat_lateral_factor * np.cos(theta) ** 2)
    return outline - patient.skin_mm - fat


def _cavity_radius(patient: VirtualPatient, theta: np.ndarray, outline: np.ndarray) -> np.ndarray:
    """Inner edge of the muscle wall (abdominal wall muscles, or ribs and intercostals higher up)."""
    return _fat_inner_radius(patient, theta, outline) - patient.muscle_mm


def _paraspinal(patient: VirtualPatient, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The erector spinae either side of the spinous process, from the laminae back to the fat."""
    rx, ry = patient.paraspinal_radii
    centre_y = patient.spine_y + patient.vertebra_radii[1] + 2.0 * patient.canal_radius + ry * 0.75
    left = ((x - rx * 0.95) / rx) ** 2 + ((y - centre_y) / ry) ** 2 < 1.0
    right = ((x + rx * 0.95) / rx) ** 2 + ((y - centre_y) / ry) ** 2 < 1.0
    return left | right


def _retrospinal(patient: VirtualPatient, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spine, its posterior elements and the paraspinal muscles: outside the body cavities."""
    body_rx, body_ry = patient.vertebra_radii
    vertebra = (x / (body_rx + 4.0)) ** 2 + ((y - patient.spine_y) / (body_ry + 4.0)) ** 2 < 1.0
    behind = (np.abs(x) < body_rx + 8.0) & (y > patient.spine_y)
    return vertebra | behind | _paraspinal(patient, x, y)


def _diaphragm_z(patient: VirtualPatient, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (z) of the diaphragm above each (x, y): the lower of the two domes' paraboloids."""
    heights = []
    for apex_x, apex_y, apex_z, curvature in (patient.dome_right, patient.dome_left):
        heights.append(apex_z + curvature * ((x - apex_x) ** 2 + (y - apex_y) ** 2))
    return np.minimum(heights[0], heights[1])


def _diaphragm_band(patient: VirtualPatient, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Thickness in z of the diaphragm muscle, so that it is ~4 mm thick in the slice where it is oblique."""
    slope = []
    for apex_x, apex_y, _, curvature in (patient.dome_right, patient.dome_left):
        slope.append(2.0 * curvature * np.hypot(x - apex_x, y - apex_y))
    return 1.0 + 3.5 * np.minimum(slope[0], slope[1])


def cavity(patient: VirtualPatient, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
    """Inside the muscle wall (thorax above the diaphragm, abdomen below)."""
    rho, theta, outline = _body_polar(patient, x, y, z)
    return (rho < _cavity_radius(patient, theta, outline)) & ~_retrospinal(patient, x, y)


def abdomen(patient: VirtualPatient, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
    """The abdominal cavity: inside the wall and below the diaphragm muscle."""
    below = np.asarray(z) > _diaphragm_z(patient, x, y) + _diaphragm_band(patient, x, y) * 0.5
    return cavity(patient, x, y, z) & below


def _mediastinum(patient: VirtualPatient, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Posterior mediastinum (oesophagus, aorta, azygos in fat) between the lungs, in front of the spine."""
    aorta_x = patient.aorta[0]
    return (((x - aorta_x * 0.5) / 34.0) ** 2 + ((y - patient.spine_y + 25.0) / 40.0) ** 2) < 1.0


# Fat kept between the descending aorta and the heart (oesophagus, pericardium), mm.
AORTA_HEART_GAP_MM = 6.0
# Length of the IVC above the diaphragm before it opens into the right atrium, mm.
SUPRADIAPHRAGMATIC_IVC_MM = 15.0
# Pericardial fat around the IVC and the atrium it enters: the lung never touches them, mm.
CAVAL_SLEEVE_MM = 5.0


def _aorta_keep_out(patient: VirtualPatient, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The descending aorta with a sleeve of posterior-mediastinal fat: no heart there."""
    aorta_x, aorta_y, aorta_radius = patient.aorta
    return (x - aorta_x) ** 2 + (y - aorta_y) ** 2 < (aorta_radius + AORTA_HEART_GAP_MM) ** 2


def ivc_centre(patient: VirtualPatient, z: float) -> tuple[float, float]:
    """(x, y) of the IVC at ``z``: above the liver's bare area it runs more anteriorly, inside the liver."""
    ivc_x, ivc_y = patient.ivc[0], patient.ivc[1]
    return ivc_x, ivc_y - 12.0 * float(np.clip((40.0 - z) / 40.0, 0.0, 1.0))


def ivc_hiatus_z(patient: VirtualPatient) -> float:
    """z where the IVC crosses the diaphragm (the caval hiatus, in the central tendon)."""
    ivc_x, ivc_y = ivc_centre(patient, 0.0)
    return float(_diaphragm_z(patient, np.array([ivc_x]), np.array([ivc_y]))[0])


def _caval_region(patient: VirtualPatient, x: np.ndarray, y: np.ndarray, z: float, grow_mm: float) -> np.ndarray:
    """The IVC's cross-section at ``z`` grown by ``grow_mm``; above its end, the right atrium's inflow (wider)."""
    ivc_x, ivc_y = ivc_centre(patient, z)
    radius_x, radius_y = patient.ivc[2], patient.ivc[3]
    if z < ivc_hiatus_z(patient) - SUPRADIAPHRAGMATIC_IVC_MM:
        radius_x, radius_y = radius_x * 1.5, radius_y * 1.6
    return ((x - ivc_x) / (radius_x + grow_mm)) ** 2 + ((y - ivc_y) / (radius_y + grow_mm)) ** 2 < 1.0


def thorax(patient: VirtualPatient, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
    """The pleural space (lungs): inside the wall, above the diaphragm, outside mediastinum, heart and cava."""
    above = np.asarray(z) < _diaphragm_z(patient, x, y) - _diaphragm_band(patient, x, y) * 0.5
    outside_heart = ~patient.heart.contains(x, y, z, grow=1.08)
    lungs = cavity(patient, x, y, z) & above & ~_mediastinum(patient, x, y) & outside_heart
    if np.ndim(z) == 0:
        lungs &= ~_caval_region(patient, x, y, float(z), CAVAL_SLEEVE_MM)
    return lungs


def liver(patient: VirtualPatient, x: np.ndarray, y: np.ndarray, z: np.ndarray | float) -> np.ndarray:
    """Right lobe (fills the right upper quadrant under the dome) plus the left lobe anteriorly."""
    lobes = patient.liver_right.contains(x, y, z) | patient.liver_left.contains(x, y, z)
    # The bare area stops at the IVC: nothing of the liver around the crura, aorta and spine.
    ivc_x = patient.ivc[0]
    aorta_x = patient.aorta[0]
    centre_x = 0.5 * (ivc_x + aorta_x) + 6.0
    half_width = 0.5 * (aorta_x - ivc_x) + 10.0
    retroperitoneum = ((x - centre_x) / half_width) ** 2 + ((y - patient.spine_y - 5.0) / (patient.vertebra_radii[1] + 38.0)) ** 2 < 1.0
    return lobes & abdomen(patient, x, y, z) & ~retroperitoneum


# --------------------------------------------------------------------------------------------------
# Sampling a patient


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _turn(direction: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate ``direction`` by ``angle`` about a random axis perpendicular to it."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = _unit(np.cross(direction, helper))
    second = np.cross(direction, first)
    spin = rng.uniform(0.0, 2.0 * math.pi)
    axis = math.cos(spin) * first + math.sin(spin) * second
    return _unit(direction * math.cos(angle) + axis * math.sin(angle))


def grow_tree(
    rng: np.random.Generator,
    root: np.ndarray,
    direction: np.ndarray,
    radius: float,
    inside: Callable[[np.ndarray], bool],
    *,
    segment_mm: float,
    min_radius: float,
    max_depth: int,
) -> list[Tube]:
    """A random bifurcating vessel tree, each branch a short tube, kept inside an organ.

    Child radii follow Murray's law loosely (each child 0.62-0.82 of its parent); branching angles are
    20-50 degrees; a branch that would leave the organ is shortened, then dropped.

    Args:
        rng: randomness.
        root: (x, y, z) where the tree starts, mm.
        direction: initial direction (normalised here).
        radius: root radius, mm.
        inside: whether a 3D point (x, y, z) lies in the organ.
        segment_mm: length of a root segment; shorter for thinner branches.
        min_radius: branches thinner than this are not grown.
        max_depth: bifurcation levels.

    Returns:
        The branches as :class:`Tube` objects (two points each).
    """
    tubes: list[Tube] = []
    stack = [(np.asarray(root, dtype=np.float64), _unit(np.asarray(direction, dtype=np.float64)), radius, 0)]
    while stack:
        start, heading, thickness, depth = stack.pop()
        length = segment_mm * rng.uniform(0.7, 1.2) * (thickness / radius) ** 0.5
        end = None
        for fraction in (1.0, 0.6, 0.35):
            candidate = start + heading * length * fraction
            if inside(candidate):
                end = candidate
                break
        if end is None:
            continue
        tubes.append(Tube(np.stack([start, end]), np.array([thickness])))
        if depth >= max_depth:
            continue
        for sign in (-1.0, 1.0):
            child_radius = thickness * rng.uniform(0.62, 0.82)
            if child_radius < min_radius:
                continue
            turn = rng.uniform(math.radians(20), math.radians(50))
            child = _turn(heading, turn, rng) if sign > 0 else _unit(2.0 * heading - _turn(heading, turn, rng))
            stack.append((end, child, child_radius, depth + 1))
    return tubes


def _lobulation(rng: np.random.Generator, amplitude: float, orders: tuple[int, ...] = (2, 3, 4)) -> tuple[tuple[int, float, float], ...]:
    return tuple((order, float(rng.uniform(0.0, amplitude) / order), float(rng.uniform(0, 2 * math.pi))) for order in orders)


def draw_patient(rng: np.random.Generator, patient_id: str, *, first_slice_z: float | None = None) -> VirtualPatient:
    """Sample one virtual patient.

    Args:
        rng: the patient's own generator (derive it from (seed, patient index) for determinism).
        patient_id: the id stored with every slice of this patient.
        first_slice_z: z of the first slice of its stack; default drawn in [-5, 105] mm, i.e. from the
            lung bases and hepatic dome down to the renal hila.

    Returns:
        A :class:`VirtualPatient`.
    """
    uniform = rng.uniform
    phase = draw_contrast_phase(rng)
    # The body is built outwards: the cavity inside the muscle wall varies modestly between adults,
    # fat adds to it (and obese patients are wider, not emptier); the outline must fit the 358 mm field.
    cavity_width = uniform(108.0, 128.0)
    cavity_depth = cavity_width * uniform(0.62, 0.78)  # anterior half-depth
    cavity_depth_posterior = uniform(86.0, 100.0)
    centre = (uniform(-6.0, 6.0), uniform(-4.0, 8.0))
    skin_mm = uniform(1.6, 2.4)
    muscle_mm = uniform(8.0, 14.0)
    fat_anterior_factor = uniform(0.1, 0.6)
    fat_lateral_factor = uniform(0.1, 0.4)
    wall = skin_mm + muscle_mm
    widest_fat = (FIELD_OF_VIEW_MM / 2.0 - 8.0 - abs(centre[0]) - cavity_width - wall) / (1.0 + fat_lateral_factor)
    fat_mm = float(np.clip(rng.lognormal(math.log(15.0), 0.45), 5.0, min(35.0, widest_fat)))
    half_width = cavity_width + wall + fat_mm * (1.0 + fat_lateral_factor)
    half_depth_anterior = cavity_depth + wall + fat_mm * (1.0 + fat_anterior_factor)
    half_depth_posterior = cavity_depth_posterior + wall + fat_mm
    paraspinal_radii = (uniform(24.0, 32.0), uniform(22.0, 30.0))
    vertebra_radii = (uniform(19.0, 24.0), uniform(15.0, 18.0))
    canal_radius = uniform(8.0, 10.0)
    # Back to front: skin, fat, a thin muscle layer, the erector spinae, laminae and canal, vertebral body.
    spine_y = (centre[1] + half_depth_posterior - skin_mm - fat_mm - 4.0 - 1.5 * paraspinal_radii[1]
               - 2.0 * canal_radius - vertebra_radii[1])
    aorta_radius = uniform(9.5, 13.5)
    aorta = (uniform(8.0, 20.0), spine_y - vertebra_radii[1] - aorta_radius - uniform(1.0, 6.0), aorta_radius)
    ivc = (uniform(-30.0, -20.0), spine_y - vertebra_radii[1] - uniform(18.0, 28.0), uniform(11.0, 15.0), uniform(7.0, 11.0))

    right_apex_z = 0.0
    left_apex_z = uniform(8.0, 25.0)
    dome_right = (-cavity_width * uniform(0.30, 0.45), uniform(-25.0, 5.0), right_apex_z, uniform(0.0055, 0.0085))
    dome_left = (cavity_width * uniform(0.30, 0.45), uniform(-25.0, 5.0), left_apex_z, uniform(0.0060, 0.0090))
    heart_bottom = left_apex_z + uniform(10.0, 25.0)  # sits on the left dome, which clips it
    heart = Ellipsoid(
        centre=(uniform(15.0, 35.0), -cavity_depth * uniform(0.30, 0.45)),
        drift=(0.0, 0.0),
        radii=(uniform(55.0, 70.0), uniform(38.0, 48.0)),
        angle=math.radians(uniform(15.0, 40.0)),
        z_mid=heart_bottom - 60.0,
        half_height=60.0,
    )

    liver_scale = uniform(0.88, 1.12)
    liver_bottom = uniform(150.0, 200.0)
    liver_right = Ellipsoid(
        centre=(-cavity_width * uniform(0.38, 0.48), -cavity_depth * uniform(0.0, 0.15)),
        drift=(-0.08, -0.05),
        radii=(cavity_width * 0.62 * liver_scale, cavity_depth * 1.05 * liver_scale),
        angle=math.radians(uniform(-15.0, 15.0)),
        z_mid=liver_bottom - 165.0,
        half_height=165.0,
        lobulation=_lobulation(rng, 0.10),
    )
    left_lobe_bottom = uniform(60.0, 100.0)
    liver_left = Ellipsoid(
        centre=(cavity_width * uniform(-0.05, 0.15), -cavity_depth * uniform(0.50, 0.62)),
        drift=(-0.25, 0.0),
        radii=(cavity_width * uniform(0.40, 0.55), cavity_depth * uniform(0.30, 0.42)),
        angle=math.radians(uniform(-20.0, 5.0)),
        z_mid=left_lobe_bottom - 90.0,
        half_height=90.0,
        lobulation=_lobulation(rng, 0.12),
    )
    gallbladder_top = uniform(55.0, 90.0)
    gallbladder = Ellipsoid(
        centre=(-cavity_width * uniform(0.18, 0.32), -cavity_depth * uniform(0.25, 0.45)),
        drift=(0.0, -0.15),
        radii=(uniform(11.0, 17.0), uniform(16.0, 26.0)),
        angle=math.radians(uniform(-40.0, 10.0)),
        z_mid=gallbladder_top + 35.0,
        half_height=uniform(28.0, 42.0),
        lobulation=_lobulation(rng, 0.05),
    )
    spleen_top = left_apex_z + uniform(3.0, 15.0)
    spleen = Ellipsoid(
        centre=(cavity_width * uniform(0.55, 0.68), spine_y + uniform(-12.0, 12.0)),
        drift=(0.0, -0.15),
        # Long axis along the posterolateral wall (from posteromedial to anterolateral).
        radii=(uniform(18.0, 26.0), uniform(44.0, 58.0)),
        angle=math.radians(uniform(40.0, 60.0)),
        z_mid=spleen_top + 55.0,
        half_height=uniform(48.0, 62.0),
        lobulation=_lobulation(rng, 0.12),
    )
    kidney_top_left = uniform(45.0, 75.0)
    kidneys = []
    for side, top in ((-1.0, kidney_top_left + uniform(8.0, 22.0)), (1.0, kidney_top_left)):
        kidneys.append(
            Ellipsoid(
                centre=(side * (vertebra_radii[0] + uniform(42.0, 55.0)), spine_y + uniform(-2.0, 12.0)),
                drift=(side * 0.12, -0.12),
                radii=(uniform(18.0, 23.0), uniform(25.0, 31.0)),
                angle=side * math.radians(uniform(25.0, 45.0)),
                z_mid=top + 55.0,
                half_height=uniform(50.0, 60.0),
                lobulation=_lobulation(rng, 0.05),
            )
        )
    stomach = Ellipsoid(
        centre=(cavity_width * uniform(0.22, 0.42), -cavity_depth * uniform(0.15, 0.40)),
        drift=(-0.2, -0.2),
        radii=(uniform(35.0, 58.0), uniform(28.0, 45.0)),
        angle=math.radians(uniform(-40.0, 20.0)),
        z_mid=left_apex_z + uniform(40.0, 60.0),
        half_height=uniform(45.0, 65.0),
        lobulation=_lobulation(rng, 0.15),
    )

    patient = VirtualPatient(
        patient_id=patient_id,
        phase=phase,
        half_width=half_width,
        half_depth_anterior=half_depth_anterior,
        half_depth_posterior=half_depth_posterior,
        exponent_anterior=uniform(2.0, 2.5),
        exponent_posterior=uniform(2.6, 3.4),
        centre=centre,
        width_slope=uniform(-0.0006, 0.0002),
        skin_mm=skin_mm,
        fat_mm=fat_mm,
        fat_anterior_factor=fat_anterior_factor,
        fat_lateral_factor=fat_lateral_factor,
        muscle_mm=muscle_mm,
        paraspinal_radii=paraspinal_radii,
        spine_y=spine_y,
        vertebra_radii=vertebra_radii,
        canal_radius=canal_radius,
        spinous_length=uniform(16.0, 26.0),
        aorta=aorta,
        ivc=ivc,
        dome_right=dome_right,
        dome_left=dome_left,
        heart=heart,
        liver_right=liver_right,
        liver_left=liver_left,
        gallbladder=gallbladder,
        spleen=spleen,
        kidneys=(kidneys[0], kidneys[1]),
        stomach=stomach,
        stomach_gas_level=uniform(-0.7, 0.5),
        psoas_z_start=kidney_top_left + uniform(20.0, 50.0),
        rib_period=uniform(20.0, 26.0),
        rib_height=uniform(8.0, 11.0),
        rib_slope=uniform(30.0, 45.0),
        rib_phase=uniform(0.0, 26.0),
        costal_margin=(uniform(2.4, 2.8), -uniform(0.009, 0.013)),
        first_slice_z=float(uniform(-5.0, 105.0)) if first_slice_z is None else float(first_slice_z),
    )
    hilum = np.array([ivc[0] - uniform(5.0, 20.0), ivc[1] - uniform(22.0, 35.0), uniform(70.0, 95.0)])
    hepatic = _hepatic_tree(patient, hilum, rng)
    lung = _lung_tree(patient, rng)
    pancreas, vessels = _pancreas_and_vessels(patient, hilum, rng)
    gut = _gut_loops(patient, pancreas, rng)
    return _replace(
        patient, hepatic_vessels=tuple(hepatic), lung_vessels=tuple(lung), gut=tuple(gut), pancreas=pancreas,
        abdominal_vessels=tuple(vessels),
    )


def _replace(patient: VirtualPatient, **changes: object) -> VirtualPatient:
    from dataclasses import replace

    return replace(patient, **changes)  # type: ignore[arg-type]


def _point_inside(region: Callable[..., np.ndarray], patient: VirtualPatient) -> Callable[[np.ndarray], bool]:
    def inside(point: np.ndarray) -> bool:
        return bool(region(patient, np.array([point[0]]), np.array([point[1]]), float(point[2]))[0])

    return inside


def _hepatic_tree(patient: VirtualPatient, hilum: np.ndarray, rng: np.random.Generator) -> list[Tube]:
    """Portal vein branching from the hilum, hepatic veins fanning out from the IVC below the dome."""
    inside = _point_inside(liver, patient)
    tubes: list[Tube] = []
    ivc_x, ivc_y = patient.ivc[0], patient.ivc[1]
    portal_radius = rng.uniform(5.5, 7.5)
    for direction in ((-1.0, 0.1, -0.45), (0.8, -0.6, -0.5), (-0.6, -0.5, 0.2)):
        start = hilum
        # Walk the root into the liver if the hilum point sits just outside it.
        if not inside(start):
            start = start + 8.0 * _unit(np.array(direction))
            if not inside(start):
                continue
        tubes += grow_tree(rng, start, np.array(direction), portal_radius * rng.uniform(0.75, 0.9), inside,
                           segment_mm=26.0, min_radius=0.9, max_depth=5)
    vein_top = np.array([ivc_x, ivc_y - 4.0, rng.uniform(12.0, 25.0)])
    for direction in ((-1.0, 0.15, 0.55), (-0.35, -0.9, 0.6), (0.55, -0.9, 0.45)):
        start = vein_top + 10.0 * _unit(np.array(direction))
        if inside(start):
            tubes += grow_tree(rng, start, np.array(direction), rng.uniform(4.5, 6.5), inside,
                               segment_mm=28.0, min_radius=0.9, max_depth=5)
    return tubes


def _lung_tree(patient: VirtualPatient, rng: np.random.Generator) -> list[Tube]:
    """Lower-lobe pulmonary vessels running down and out from the hila into the lung bases."""
    def in_chest(point: np.ndarray) -> bool:
        x, y, z = np.array([point[0]]), np.array([point[1]]), float(point[2])
        above = z < _diaphragm_z(patient, x, y)[0]
        return bool(cavity(patient, x, y, z)[0] and above)

    tubes: list[Tube] = []
    for side in (-1.0, 1.0):
        root = np.array([side * rng.uniform(40.0, 55.0), patient.spine_y - rng.uniform(25.0, 45.0), -rng.uniform(50.0, 70.0)])
        for _ in range(2):
            direction = np.array([side * rng.uniform(0.3, 0.7), rng.uniform(-0.3, 0.5), 1.0])
            tubes += grow_tree(rng, root, direction, rng.uniform(3.5, 5.0), in_chest,
                               segment_mm=24.0, min_radius=0.7, max_depth=6)
    return tubes


def _pancreas_and_vessels(patient: VirtualPatient, hilum: np.ndarray, rng: np.random.Generator) -> tuple[Tube, list[Tube]]:
    """Pancreas (tail at the splenic hilum, body over the aorta, head by the duodenum) and the named
    vessels around it: portal trunk, splenic vein, SMV, SMA, renal veins and arteries."""
    uniform = rng.uniform
    aorta_x, aorta_y, aorta_radius = patient.aorta
    ivc_x, ivc_y = patient.ivc[0], patient.ivc[1]
    spleen_x, spleen_y = patient.spleen.centre
    confluence = np.array([aorta_x - uniform(12.0, 22.0), aorta_y - aorta_radius - uniform(22.0, 32.0), uniform(95.0, 115.0)])
    pancreas_points = np.array([
        [spleen_x - uniform(20.0, 30.0), spleen_y + uniform(-5.0, 15.0), patient.spleen.z_mid + uniform(-5.0, 15.0)],
        [aorta_x + uniform(25.0, 40.0), aorta_y - aorta_radius - uniform(25.0, 35.0), confluence[2] - uniform(10.0, 20.0)],
        [confluence[0], confluence[1] - uniform(8.0, 14.0), confluence[2]],
        [ivc_x + uniform(-8.0, 4.0), ivc_y - uniform(22.0, 30.0), confluence[2] + uniform(12.0, 22.0)],
        [ivc_x + uniform(4.0, 14.0), ivc_y - uniform(8.0, 16.0), confluence[2] + uniform(30.0, 40.0)],
    ])
    pancreas = Tube(pancreas_points, np.array([uniform(8.0, 10.0), uniform(9.0, 12.0), uniform(11.0, 14.0), uniform(12.0, 16.0)]))
    vessels = [
        Tube(np.stack([confluence, hilum + np.array([0.0, 0.0, 4.0])]), np.array([uniform(6.0, 7.5)])),  # portal vein
        Tube(np.concatenate([pancreas_points[:2] + np.array([0.0, 12.0, 0.0]), confluence[None]]), np.full(2, uniform(4.0, 5.5))),  # splenic vein
        Tube(np.stack([confluence, confluence + np.array([uniform(2.0, 8.0), -uniform(5.0, 15.0), 160.0])]), np.array([uniform(4.5, 6.0)])),  # SMV
        Tube(np.array([[aorta_x, aorta_y - aorta_radius + 2.0, confluence[2] - 12.0],
                       [aorta_x - 2.0, aorta_y - aorta_radius - 18.0, confluence[2] + 2.0],
                       [aorta_x - 6.0, aorta_y - aorta_radius - 25.0, confluence[2] + 160.0]]), np.full(2, uniform(3.0, 4.0))),  # SMA
    ]
    for kidney in patient.kidneys:
        side = -1.0 if kidney.centre[0] < 0 else 1.0
        hilum_kidney = np.array([kidney.centre[0] - side * kidney.radii[0] * 0.8, kidney.centre[1] - kidney.radii[1] * 0.3, kidney.z_mid])
        vein_target = np.array([ivc_x, ivc_y, kidney.z_mid - uniform(0.0, 8.0)])
        vessels.append(Tube(np.stack([hilum_kidney, vein_target]), np.array([uniform(4.0, 5.5)])))  # renal vein
        artery_start = np.array([aorta_x, aorta_y, kidney.z_mid - uniform(5.0, 15.0)])
        vessels.append(Tube(np.stack([artery_start, hilum_kidney + np.array([0.0, 6.0, 0.0])]), np.array([uniform(2.5, 3.2)])))
    return pancreas, vessels


def _gut_loops(patient: VirtualPatient, pancreas: Tube, rng: np.random.Generator) -> list[GutLoop]:
    """Duodenum, colon (ascending, flexures, transverse, descending) and small-bowel loops."""
    wall = patient.skin_mm + patient.muscle_mm
    width = patient.half_width - wall - patient.fat_mm * (1.0 + patient.fat_lateral_factor)
    depth = patient.half_depth_anterior - wall - patient.fat_mm * (1.0 + patient.fat_anterior_factor)
    loops: list[GutLoop] = []
    hepatic_flexure_z = rng.uniform(100.0, 150.0)
    splenic_flexure_z = rng.uniform(45.0, 80.0)
    transverse_z = rng.uniform(110.0, 170.0)
    colon = np.array([
        [-width * 0.62, rng.uniform(-10.0, 15.0), 320.0],
        [-width * 0.60, rng.uniform(-25.0, 0.0), hepatic_flexure_z + 30.0],
        [-width * 0.45, -depth * 0.45, hepatic_flexure_z],
        [0.0, -depth * rng.uniform(0.55, 0.75), transverse_z],
        [width * 0.45, -depth * 0.35, splenic_flexure_z + 20.0],
        [width * 0.62, rng.uniform(-25.0, 5.0), splenic_flexure_z],
        [width * 0.66, rng.uniform(0.0, 20.0), splenic_flexure_z + 40.0],
        [width * 0.66, rng.uniform(0.0, 25.0), 320.0],
    ])
    colon[1:-1, :2] += rng.normal(0.0, 6.0, size=(colon.shape[0] - 2, 2))
    radius = rng.uniform(16.0, 24.0)
    loops.append(GutLoop(Tube(colon, np.full(colon.shape[0] - 1, radius)), rng.uniform(1.5, 3.0), rng.uniform(-0.2, 0.8)))
    head = pancreas.points[3]
    duodenum = np.array([
        [patient.stomach.centre[0] - patient.stomach.radii[0] * 0.8, patient.stomach.centre[1] + 5.0, head[2] - 30.0],
        [head[0] - 20.0, head[1] - 15.0, head[2] - 20.0],
        [head[0] - 24.0, head[1] + 5.0, head[2] + 5.0],
        [head[0] - 18.0, head[1] + 15.0, head[2] + 35.0],
        [patient.aorta[0] + 25.0, patient.aorta[1] - 22.0, head[2] + 50.0],
    ])
    loops.append(GutLoop(Tube(duodenum, np.full(4, rng.uniform(9.0, 12.0))), rng.uniform(1.5, 2.5), rng.uniform(-1.2, 0.0)))
    for _ in range(int(rng.integers(14, 24))):
        # Jejunum high in the left upper quadrant, ileum lower and to the right.
        start_z = rng.uniform(75.0, 260.0)
        lateral = rng.uniform(-0.2, 0.6) if start_z < 150 else rng.uniform(-0.6, 0.4)
        start = np.array([lateral * width, -depth * rng.uniform(0.05, 0.75), start_z])
        points = [start]
        heading = _unit(rng.normal(size=3))
        for _ in range(int(rng.integers(3, 7))):
            heading = _turn(heading, rng.uniform(0.5, 1.4), rng)
            points.append(points[-1] + heading * rng.uniform(20.0, 40.0))
        radius = rng.uniform(8.0, 14.0)
        gas = rng.uniform(-1.2, 0.3) if rng.random() < 0.6 else -1.5
        loops.append(GutLoop(Tube(np.stack(points), np.full(len(points) - 1, radius)), rng.uniform(1.5, 2.5), gas))
    return loops


# --------------------------------------------------------------------------------------------------
# Rendering a slice


def slice_grid(size: int, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in mm of the pixel centres of a ``size`` x ``size`` slice centred on the scanner axis."""
    offsets = (np.arange(size) - (size - 1) / 2.0) * spacing_mm
    y, x = np.meshgrid(offsets, offsets, indexing="ij")
    return x, y


def _tube_distance(tube: Tube, x: np.ndarray, y: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: distance to the tube's axis minus its radius (< 0 inside), the radius, and the axis y."""
    best = np.full(x.shape, np.inf)
    radius_at = np.zeros(x.shape)
    axis_y = np.zeros(x.shape)
    for index in range(tube.points.shape[0] - 1):
        start, end = tube.points[index], tube.points[index + 1]
        radius = float(tube.radii[index])
        if not (min(start[2], end[2]) - radius <= z <= max(start[2], end[2]) + radius):
            continue
        direction = end - start
        length_squared = float(direction @ direction)
        px, py, pz = x - start[0], y - start[1], z - start[2]
        t = np.clip((px * direction[0] + py * direction[1] + pz * direction[2]) / max(length_squared, 1e-9), 0.0, 1.0)
        dx, dy, dz = px - t * direction[0], py - t * direction[1], pz - t * direction[2]
        distance = np.sqrt(dx * dx + dy * dy + dz * dz) - radius
        closer = distance < best
        best = np.where(closer, distance, best)
        radius_at = np.where(closer, radius, radius_at)
        axis_y = np.where(closer, start[1] + t * direction[1], axis_y)
    return best, radius_at, axis_y


def _paint_tubes(labels: np.ndarray, tubes: tuple[Tube, ...], x: np.ndarray, y: np.ndarray, z: float,
                 value: int, allowed: np.ndarray, spacing_mm: float) -> None:
    """Paint the cross-sections of tubes crossing plane z, only where ``allowed``, via their bounding boxes."""
    size = labels.shape[0]
    half = (size - 1) / 2.0
    for tube in tubes:
        low, high = tube.z_range()
        if not low <= z <= high:
            continue
        margin = float(tube.radii.max())
        x_low, x_high = tube.points[:, 0].min() - margin, tube.points[:, 0].max() + margin
        y_low, y_high = tube.points[:, 1].min() - margin, tube.points[:, 1].max() + margin
        columns = slice(max(int(x_low / spacing_mm + half), 0), min(int(x_high / spacing_mm + half) + 2, size))
        rows = slice(max(int(y_low / spacing_mm + half), 0), min(int(y_high / spacing_mm + half) + 2, size))
        if columns.start >= columns.stop or rows.start >= rows.stop:
            continue
        distance, _, _ = _tube_distance(tube, x[rows, columns], y[rows, columns], z)
        inside = (distance < 0) & allowed[rows, columns]
        labels[rows, columns][inside] = value


def _ribs(patient: VirtualPatient, theta: np.ndarray, rho: np.ndarray, fat_inner: np.ndarray, z: float) -> np.ndarray:
    """Oblique rib cross-sections in the chest wall."""
    from_spine = _angle_from(theta, math.pi / 2.0)
    reach = patient.costal_margin[0] + patient.costal_margin[1] * z
    phase = (z - patient.rib_phase - patient.rib_slope * from_spine) % patient.rib_period
    in_rib_band = phase < patient.rib_height
    # The rib lies just inside the fat; elliptical section (thicker in its middle than at its edges).
    centre_of_band = np.abs(phase - patient.rib_height / 2.0) / (patient.rib_height / 2.0)
    thickness = 6.5 * np.sqrt(np.clip(1.0 - centre_of_band**2, 0.0, None))
    depth = fat_inner - 3.0 - rho
    return in_rib_band & (from_spine > 0.32) & (from_spine < reach) & (depth > 4.0 - thickness / 2) & (depth < 4.0 + thickness / 2) & (z < 190.0)


def render_labels(patient: VirtualPatient, z_mm: float, size: int = DEFAULT_SIZE, spacing_mm: float = DEFAULT_SPACING_MM) -> np.ndarray:
    """The label map of one axial slice.

    Args:
        patient: the virtual patient.
        z_mm: slice position (0 = top of the right hemidiaphragm, positive caudally).
        size: pixels per side.
        spacing_mm: pixel spacing; ``size * spacing_mm`` is the field of view.

    Returns:
        (size, size) uint8 labels (values of :class:`~augmentor.simulate.tissues.Tissue`).
    """
    z = float(z_mm)
    x, y = slice_grid(size, spacing_mm)
    labels = np.zeros((size, size), dtype=np.uint8)
    rho, theta, outline = _body_polar(patient, x, y, z)
    fat_inner = _fat_inner_radius(patient, theta, outline)
    inside_wall = rho < _cavity_radius(patient, theta, outline)
    labels[rho < outline] = Tissue.SKIN
    labels[rho < outline - patient.skin_mm] = Tissue.SUBCUTANEOUS_FAT
    labels[rho < fat_inner] = Tissue.MUSCLE
    retrospinal = _retrospinal(patient, x, y) & (rho < fat_inner)
    inside_wall &= ~retrospinal
    labels[inside_wall] = Tissue.VISCERAL_FAT
    labels[retrospinal] = Tissue.MUSCLE

    diaphragm = _diaphragm_z(patient, x, y)
    band = _diaphragm_band(patient, x, y) * 0.5
    chest = thorax(patient, x, y, z)
    belly = inside_wall & (z > diaphragm + band)
    labels[inside_wall & (np.abs(z - diaphragm) <= band)] = Tissue.MUSCLE
    labels[chest] = Tissue.LUNG
    _paint_tubes(labels, patient.lung_vessels, x, y, z, Tissue.LUNG_VESSEL, chest, spacing_mm)
    # The heart stays in the middle mediastinum: never around the descending aorta or behind it.
    heart = patient.heart.contains(x, y, z) & inside_wall & (z < diaphragm) & ~_mediastinum(patient, x, y)
    if z < ivc_hiatus_z(patient) - SUPRADIAPHRAGMATIC_IVC_MM:
        heart |= _caval_region(patient, x, y, z, 0.0) & inside_wall  # the right atrium receiving the IVC
    heart &= ~_aorta_keep_out(patient, x, y)
    labels[heart] = Tissue.HEART

    _paint_gut(labels, patient, x, y, z, belly, spacing_mm)
    stomach_distance = patient.stomach.normalised_radius(x, y, z)
    stomach = (stomach_distance < 1.0) & belly
    if stomach.any():
        scale = float(patient.stomach.profile(z))
        wall = 4.0 / max(min(patient.stomach.radii) * scale, 1e-6)
        labels[stomach] = Tissue.STOMACH
        lumen = stomach & (stomach_distance < 1.0 - wall)
        centre_y = patient.stomach.centre[1] + patient.stomach.drift[1] * (z - patient.stomach.z_mid)
        gas_below = centre_y + patient.stomach_gas_level * patient.stomach.radii[1] * scale
        labels[lumen] = Tissue.GI_FLUID
        labels[lumen & (y < gas_below)] = Tissue.GI_GAS

    liver_region = liver(patient, x, y, z)
    labels[liver_region] = Tissue.LIVER
    _paint_tubes(labels, patient.hepatic_vessels, x, y, z, Tissue.HEPATIC_VESSEL, liver_region, spacing_mm)
    labels[patient.gallbladder.contains(x, y, z) & liver_region] = Tissue.GALLBLADDER
    labels[patient.spleen.contains(x, y, z) & belly] = Tissue.SPLEEN
    if patient.pancreas is not None:
        # The pancreas lies behind the stomach (lesser sac) and beside the liver: those win where shapes overlap.
        behind_organs = belly & ~np.isin(labels, (Tissue.LIVER, Tissue.STOMACH, Tissue.GI_GAS, Tissue.GI_FLUID, Tissue.SPLEEN))
        _paint_tubes(labels, (patient.pancreas,), x, y, z, Tissue.PANCREAS, behind_organs, spacing_mm)
    # Mesenteric, splenic and renal vessels run in fat and along the pancreas, never through organs.
    vessel_bed = belly & ((labels == Tissue.VISCERAL_FAT) | (labels == Tissue.PANCREAS) | (labels == Tissue.VESSEL))
    _paint_tubes(labels, patient.abdominal_vessels, x, y, z, Tissue.VESSEL, vessel_bed, spacing_mm)

    for kidney in patient.kidneys:
        perirenal = kidney.contains(x, y, z, grow=1.06 + 0.008 * patient.fat_mm) & belly
        labels[perirenal] = Tissue.VISCERAL_FAT
        labels[kidney.contains(x, y, z) & belly] = Tissue.KIDNEY
        # Renal sinus fat opening medially (the hilum), in the middle third of the kidney.
        if abs(z - kidney.z_mid) < 0.55 * kidney.half_height:
            side = -1.0 if kidney.centre[0] < 0 else 1.0
            offset = z - kidney.z_mid
            hilum = Ellipsoid(
                centre=(kidney.centre[0] + kidney.drift[0] * offset - side * 0.8 * kidney.radii[0],
                        kidney.centre[1] + kidney.drift[1] * offset - 0.25 * kidney.radii[1]),
                drift=(0.0, 0.0), radii=(kidney.radii[0] * 0.42, kidney.radii[1] * 0.3), angle=kidney.angle,
                z_mid=z, half_height=1.0,
            )
            labels[hilum.contains(x, y, z) & belly & (labels == Tissue.KIDNEY)] = Tissue.VISCERAL_FAT

    spine_x = 0.0
    if z > patient.psoas_z_start:
        psoas_radius = min(22.0, 6.0 + 0.25 * (z - patient.psoas_z_start))
        for side in (-1.0, 1.0):
            centre_x = side * (patient.vertebra_radii[0] + psoas_radius * 0.9)
            psoas = ((x - centre_x) / psoas_radius) ** 2 + ((y - patient.spine_y - 2.0) / (psoas_radius * 0.95)) ** 2 < 1.0
            labels[psoas & inside_wall] = Tissue.MUSCLE

    aorta_x, aorta_y, aorta_radius = patient.aorta
    labels[(x - aorta_x) ** 2 + (y - aorta_y) ** 2 < aorta_radius**2] = Tissue.AORTA
    # The IVC runs up through the liver, crosses the diaphragm and ends in the right atrium a little higher.
    if z >= ivc_hiatus_z(patient) - SUPRADIAPHRAGMATIC_IVC_MM:
        labels[_caval_region(patient, x, y, z, 0.0)] = Tissue.IVC

    _paint_spine(labels, patient, x, y, z, spine_x, spacing_mm)
    ribs = _ribs(patient, theta, rho, fat_inner, z)
    labels[ribs] = Tissue.RIB
    return labels


def _paint_gut(labels: np.ndarray, patient: VirtualPatient, x: np.ndarray, y: np.ndarray, z: float,
               belly: np.ndarray, spacing_mm: float) -> None:
    for loop in patient.gut:
        low, high = loop.tube.z_range()
        if not low <= z <= high:
            continue
        distance, radius, axis_y = _tube_distance(loop.tube, x, y, z)
        inside = (distance < 0) & belly
        if not inside.any():
            continue
        labels[inside] = Tissue.BOWEL
        lumen = inside & (distance < -loop.wall_mm)
        labels[lumen] = Tissue.GI_FLUID
        labels[lumen & (y < axis_y + loop.gas_level * radius)] = Tissue.GI_GAS


def _capsule(x: np.ndarray, y: np.ndarray, start: tuple[float, float], stop: tuple[float, float],
             radius_start: float, radius_stop: float) -> np.ndarray:
    """A tapering rod from ``start`` to ``stop`` (x, y in mm), radius interpolated along it."""
    (x0, y0), (x1, y1) = start, stop
    dx, dy = x1 - x0, y1 - y0
    along = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    distance = np.hypot(x - (x0 + along * dx), y - (y0 + along * dy))
    return distance < radius_start + (radius_stop - radius_start) * along


def _paint_spine(labels: np.ndarray, patient: VirtualPatient, x: np.ndarray, y: np.ndarray, z: float,
                 spine_x: float, spacing_mm: float) -> None:
    """A lumbar/lower thoracic vertebra: body, pedicles, laminae, spinous and (some levels) transverse processes.

    The body is a rounded, slightly kidney-shaped block (its posterior wall is concave where the canal
    sits); two stout pedicles join it to the laminae, which roof the canal and meet in a spinous process
    that is thick at its base and tapers backwards to a club-shaped tip; transverse processes leave the
    pedicle-lamina junction laterally and a little backwards. Bone is cortical shell over cancellous marrow.
    """
    body_rx, body_ry = patient.vertebra_radii
    spine_y = patient.spine_y
    canal_radius = patient.canal_radius
    u, v = x - spine_x, y - spine_y  # the vertebra's own axes (v posterior)
    # Body: a superellipse (flatter sides than an ellipse) with a concave posterior wall.
    body = np.abs(u / body_rx) ** 2.6 + np.abs(v / body_ry) ** 2.6 < 1.0
    canal_v = body_ry + canal_radius * 0.75
    body &= ~((u / (canal_radius * 1.3)) ** 2 + ((v - canal_v) / (canal_radius * 0.9)) ** 2 < 1.0)
    # Canal: a rounded triangle, wider in front (between the pedicles) than behind (under the laminae).
    canal_half_width = canal_radius * (1.2 - 0.45 * np.clip((v - canal_v) / canal_radius, 0.0, 1.0))
    canal = (np.abs(u) < canal_half_width) & (((v - canal_v) / canal_radius) ** 2 < 1.0 - (u / canal_half_width.clip(1e-6)) ** 4 * 0.3)
    pedicle_u = canal_radius * 1.2 + 3.0
    pedicle_back = canal_v + canal_radius * 0.35
    bone = body.copy()
    for side in (-1.0, 1.0):
        # Pedicle: from the posterolateral body back to the laminae, ~7 mm thick.
        bone |= _capsule(u, v, (side * pedicle_u, body_ry * 0.55), (side * pedicle_u, pedicle_back), 3.6, 3.4)
        # Lamina: from the pedicle's back, posteromedially to the spinous base.
        bone |= _capsule(u, v, (side * pedicle_u, pedicle_back), (0.0, canal_v + canal_radius + 3.0), 3.2, 3.0)
    spinous_base = canal_v + canal_radius + 2.0
    spinous_tip = canal_v + canal_radius + patient.spinous_length
    bone |= _capsule(u, v, (0.0, spinous_base), (0.0, spinous_tip), 4.0, 2.6)
    bone |= (u / 3.8) ** 2 + ((v - spinous_tip) / 3.2) ** 2 < 1.0  # the club-shaped tip
    # Transverse processes appear in the upper part of each ~32 mm vertebral level.
    if (z % 32.0) < 9.0:
        reach = body_rx + 20.0
        for side in (-1.0, 1.0):
            bone |= _capsule(u, v, (side * pedicle_u, pedicle_back - 1.0), (side * reach, pedicle_back + 6.0), 4.0, 2.6)
    bone &= ~canal
    cortex_pixels = max(1, round(1.6 / spacing_mm))
    marrow = ndimage.binary_erosion(bone, iterations=cortex_pixels)
    labels[bone] = Tissue.SPINE_CORTICAL
    labels[marrow] = Tissue.SPINE_CANCELLOUS
    labels[canal] = Tissue.SPINAL_CANAL


def slice_positions(patient: VirtualPatient, count: int, spacing_mm: float = SLICE_SPACING_MM) -> np.ndarray:
    """z of the ``count`` neighbouring slices of a patient's stack, mm."""
    return patient.first_slice_z + spacing_mm * np.arange(count)
