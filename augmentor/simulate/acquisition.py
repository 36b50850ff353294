"""CT acquisition: forward projection, photon noise, filtered back-projection.

This is what gives simulated images the look of CT: edges get the scanner's blur and the noise gets CT's
correlated, ramp-shaped noise power spectrum (near zero at DC, peak at mid frequencies) — because the
noise is *made* the way a scanner makes it, not painted on.

Model (parallel-beam, monochromatic, 2D):

1. HU -> linear attenuation ``mu = mu_water * (1 + HU / 1000)`` at an effective energy of about 70 keV
   (120 kVp abdominal protocol), negative values (below air) clipped to 0.
2. Forward projection ``p(theta, t) = integral of mu along the ray``: ray-driven (Joseph-like) sampling
   with bilinear interpolation, two samples per pixel along each ray, precomputed once per grid as a
   sparse system matrix (cached per process) and applied to a whole batch in one sparse product.
3. Photon counts ``N ~ Poisson(I0 * m(theta) * exp(-(p + p_surround)))`` (``m``: angular tube-current
   modulation, mean 1) and the log transform
   ``p_hat = -log(N / I0) - p_surround``. ``p_surround`` is the water path outside the field of view (a
   local patch sits inside a whole abdomen; see :func:`simulate_scan`). I0 is set per detector bin and
   view so that the photon *fluence* (photons per mm of detector per radian) is fixed by ``dose``; noise
   therefore does not change when the grid or number of views changes, only when the dose does
   (sigma ~ 1/sqrt(dose)).
4. Filtering with the band-limited ramp (Kak & Slaney 1988, eq. 61, spatial-domain Ram-Lak kernel, so
   the DC term is right) times an apodisation window defined in cycles/mm: the reconstruction *kernel*.
   Because the window is in physical units the noise texture is the same at 0.7 mm and 1.4 mm pixels.
   Optionally (``apodisation``) the kernel is also rolled off to zero at the detector's Nyquist
   frequency, as every clinical FBP does (Hann or Shepp-Logan windowed ramp; Kak & Slaney sec. 3.3):
   whole slices need it, since a ramp still high at Nyquist turns the 1 000 HU edges of a body into
   streaks and moire across flat organs (lesion ROIs, scanned without it, keep their bytes).
5. Back-projection with the projector's transpose, ``* pi / n_views``.

Why a sparse matrix and not ``skimage.transform.radon/iradon`` or torch ``grid_sample``:
``bench/acquisition.py`` measures it. skimage warps the image once per view with no batching (~150 ms
per 128x128 image); a batched ``grid_sample`` projector took ~30 ms; the sparse product takes ~7 ms
(128x128, 192 views, one core), so the ~1 700 lesion ROIs of a cohort cost ~12 s of one core.

Determinism: all randomness is the Poisson draw from the ``rng`` argument; pass one generator per image
(a sequence) to make each image independent of how images are batched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse

from augmentor.errors import AugmentorError, look_up_option

# Linear attenuation of water at ~70 keV (effective energy of a 120 kVp beam), per mm (NIST XCOM:
# 0.1929 cm^2/g at 70 keV, density 1 g/cm^3).
MU_WATER_PER_MM = 0.01929

# Photons per mm of detector per radian of gantry rotation reaching the detector unattenuated at
# dose 1.0. Calibrated (tests/simulate/test_acquisition.py, bench/acquisition.py) so that liver noise
# behind a typical abdomen (REFERENCE_WATER_PATH_MM) with the "standard" kernel is ~17 HU on a 0.7 mm
# grid and ~10.5 HU on a 1.4 mm grid: routine portal-venous abdominal CT (published: 10-20 HU). Whole
# slices, scanned at 0.7 mm with the Hann roll-off and resampled to 1.4 mm, measure ~11 HU in the liver.
FLUENCE_PER_MM_RADIAN = 1.5e8

# Mean water-equivalent path of a ray through an average adult abdomen (about 32 x 24 cm with fat,
# which attenuates less than water). A local patch is reconstructed as if it sat inside such a body.
REFERENCE_WATER_PATH_MM = 250.0

# Reconstruction kernels: the ramp apodised by exp(-(f / f0)^3), f0 in cycles/mm. The noise power
# spectrum of FBP is ~ |f| * window(f)^2, which peaks at 0.55 f0 and is down to ~10% of its peak at
# 1.2 f0. "standard" gives an NPS peak near 0.28 cycles/mm and a signal MTF50 of ~0.49 cycles/mm, as
# published for routine abdominal kernels (GE Standard, Siemens B30f: NPS peak 0.2-0.35 cycles/mm).
KERNEL_CUTOFF_PER_MM: dict[str, float] = {
    "smooth": 0.38,
    "standard": 0.55,
    "sharp": 0.90,
}

# Roll-off of the kernel towards the detector's Nyquist frequency f_N (on top of the physical window):
# "none" (lesion ROIs, unchanged), "hann" 0.5 (1 + cos(pi f / f_N)) (zero at f_N), "shepp-logan"
# sinc(f / (2 f_N)) (0.64 at f_N).
APODISATIONS = ("none", "hann", "shepp-logan")

RAY_SAMPLES_PER_PIXEL = 2

# Lower bound of the back-projector's interpolation response divided out of the kernel (sinc at the
# Nyquist frequency is 0.64, so this only caps the boost beyond it).
INTERPOLATION_FLOOR = 0.6


@dataclass(frozen=True)
class ScanGeometry:
    """Parallel-beam geometry for an ``size`` x ``size`` grid of ``spacing_mm`` pixels.

    Args:
        size: reconstruction grid side, pixels.
        spacing_mm: pixel side (= detector bin width = ray sample step), mm.
        num_views: projection angles over [0, pi).
    """

    size: int
    spacing_mm: float
    num_views: int

    @property
    def num_bins(self) -> int:
        """Detector bins: the grid's diagonal, so the whole square (not just its inscribed disc) is seen."""
        return math.ceil(self.size * math.sqrt(2.0)) + 2

    @property
    def angles(self) -> np.ndarray:
        return np.arange(self.num_views) * (math.pi / self.num_views)


def default_num_views(size: int) -> int:
    """Projection angles for a ``size`` grid: 1.5 x ``size`` (rounded up to a multiple of 4).

    ``size * pi / 2`` would meet angular Nyquist at the edge of the field; 1.5 x keeps view-aliasing
    streaks of a noise-free disc below 3 HU rms in its interior, where ``size`` views leave ~4.5 HU
    rings (measured). Real scanners use ~1 000 views for a 512 grid.
    """
    return max(64, _multiple_of_four(math.ceil(1.5 * size)))


def _multiple_of_four(count: int) -> int:
    return count + (-count) % 4


def _system_block(size: int, num_views: int) -> sparse.csr_matrix:
    """Ray-driven projector for views 0..V/4 (angles 0..pi/4) as a sparse ((V/4 + 1) * D, N*N) matrix.

    Each ray is sampled every 1/RAY_SAMPLES_PER_PIXEL pixel with bilinear interpolation (Joseph-like), so
    row ``k * D + d`` holds the weights (in pixel lengths) of the pixels that ray (view k, bin d) crosses.
    The other views follow from symmetries of the square grid (see :func:`forward_project`), which cuts
    memory fourfold: about 60 MB for a 256 grid with 384 views, 15 MB for 128 with 192.
    """
    geometry = ScanGeometry(size, 1.0, num_views)
    bins = geometry.num_bins
    centred = np.arange(bins) - (bins - 1) / 2.0
    count = bins * RAY_SAMPLES_PER_PIXEL
    steps = (np.arange(count) - (count - 1) / 2.0) / RAY_SAMPLES_PER_PIXEL
    blocks = []
    for angle in geometry.angles[: num_views // 4 + 1]:
        cos, sin = math.cos(angle), math.sin(angle)
        # Sample point = t * (cos, sin) + s * (-sin, cos) around the grid centre; x = column, y = row.
        column = centred[:, None] * cos - steps[None, :] * sin + (size - 1) / 2.0
        row = centred[:, None] * sin + steps[None, :] * cos + (size - 1) / 2.0
        column0, row0 = np.floor(column), np.floor(row)
        column_fraction, row_fraction = column - column0, row - row0
        ray = np.broadcast_to(np.arange(bins)[:, None], column.shape)
        rays, pixels, weights = [], [], []
        for d_row, d_column, weight in (
            (0, 0, (1 - row_fraction) * (1 - column_fraction)),
            (0, 1, (1 - row_fraction) * column_fraction),
            (1, 0, row_fraction * (1 - column_fraction)),
            (1, 1, row_fraction * column_fraction),
        ):
            pixel_row, pixel_column = row0 + d_row, column0 + d_column
            inside = (pixel_row >= 0) & (pixel_row < size) & (pixel_column >= 0) & (pixel_column < size) & (weight > 0)
            rays.append(ray[inside])
            pixels.append((pixel_row[inside] * size + pixel_column[inside]).astype(np.int64))
            weights.append(weight[inside] / RAY_SAMPLES_PER_PIXEL)
        block = sparse.coo_matrix(
            (np.concatenate(weights), (np.concatenate(rays), np.concatenate(pixels))), shape=(bins, size * size)
        ).tocsr()  # sums the samples of a ray that fall on the same pixel
        # Narrow each block now (the values are the same as narrowing the whole matrix at the end): the
        # blocks held until they are stacked take half the memory (512-pixel projector: ~1 GB of them).
        block.data = block.data.astype(np.float32)
        block.indices = block.indices.astype(np.int32)
        block.indptr = block.indptr.astype(np.int32)
        blocks.append(block)
    matrix = sparse.vstack(blocks, format="csr")
    matrix.data = matrix.data.astype(np.float32)
    matrix.indices = matrix.indices.astype(np.int32)
    matrix.indptr = matrix.indptr.astype(np.int32)
    return matrix


@lru_cache(maxsize=4)
def _projector(size: int, num_views: int) -> sparse.csr_matrix:
    """The cached projector of views 0..V/4 (its transpose, a CSC view, back-projects as fast)."""
    return _system_block(size, num_views)


def _transpose(images: np.ndarray) -> np.ndarray:
    """f(y, x): view theta of the transposed image is view pi/2 - theta of the original."""
    return np.ascontiguousarray(np.swapaxes(images, -1, -2))


def _rotate_quarter(images: np.ndarray) -> np.ndarray:
    """g(x, y) = f(-y, x): view theta of g is view theta + pi/2 of f."""
    return np.ascontiguousarray(np.swapaxes(images, -1, -2)[..., ::-1, :])


def _unrotate_quarter(images: np.ndarray) -> np.ndarray:
    """Inverse (= adjoint, it is a permutation) of :func:`_rotate_quarter`."""
    return np.ascontiguousarray(np.swapaxes(images[..., ::-1, :], -1, -2))


@lru_cache(maxsize=16)
def _filter_response(num_bins: int, spacing_mm: float, kernel: str, apodisation: str = "none") -> np.ndarray:
    """Frequency response (rfft of length P) of the apodised ramp (the kernel), for bins of ``spacing_mm``."""
    padded = 1 << math.ceil(math.log2(2 * num_bins))
    # Band-limited ramp in the spatial domain (Kak & Slaney eq. 61): h(0) = 1/(4 tau^2),
    # h(n odd) = -1/(n pi tau)^2, h(n even) = 0. Sampling it (not |f| directly) gets the DC term right.
    offsets = np.concatenate([np.arange(0, padded // 2 + 1), np.arange(-padded // 2 + 1, 0)])
    taps = np.zeros(padded)
    taps[0] = 0.25
    odd = offsets % 2 == 1
    taps[odd] = -1.0 / (math.pi * offsets[odd]) ** 2
    ramp = np.real(np.fft.rfft(taps)) / spacing_mm  # tau * h for the discrete convolution, tau = spacing
    frequency = np.fft.rfftfreq(padded, d=spacing_mm)  # cycles/mm
    window = np.exp(-((frequency / KERNEL_CUTOFF_PER_MM[kernel]) ** 3))
    # The back-projector spreads each bin over ~one pixel (bilinear weights), a ~sinc low-pass of the
    # detector signal. Dividing it out (bounded) makes the kernel window alone set the MTF and the
    # noise texture, so 1.4 mm and 0.7 mm grids share the same NPS shape, as a vendor tunes a kernel
    # for its reconstruction grid.
    interpolation = np.abs(np.sinc(frequency * spacing_mm))
    response = ramp * window / np.maximum(interpolation, INTERPOLATION_FLOOR)
    if apodisation == "none":
        return response
    nyquist = 0.5 / spacing_mm
    if apodisation == "hann":
        roll_off = 0.5 * (1.0 + np.cos(np.pi * np.minimum(frequency / nyquist, 1.0)))
    else:  # shepp-logan
        roll_off = np.sinc(frequency / (2.0 * nyquist))
    return response * roll_off


def _project_half(matrix: sparse.csr_matrix, images: np.ndarray, num_views: int, num_bins: int) -> np.ndarray:
    """Views 0..V/2-1 of (B, N, N) images: 0..V/4 directly, V/4+1..V/2-1 as views V/2-k of the transpose."""
    batch, size = images.shape[0], images.shape[1]
    quarter = num_views // 4
    direct = (matrix @ images.reshape(batch, size * size).T).T.reshape(batch, quarter + 1, num_bins)
    mirrored = (matrix @ _transpose(images).reshape(batch, size * size).T).T.reshape(batch, quarter + 1, num_bins)
    # View V/2 - k of f is view k of f^T, for k = V/4 - 1 down to 1.
    return np.concatenate([direct, mirrored[:, quarter - 1 : 0 : -1]], axis=1)


def _back_project_half(matrix: sparse.csr_matrix, sinogram: np.ndarray, size: int) -> np.ndarray:
    """Adjoint of :func:`_project_half`: (B, V/2, D) -> (B, N, N)."""
    batch, half, _bins = sinogram.shape
    quarter = half // 2
    direct = sinogram[:, : quarter + 1]
    mirrored = np.zeros_like(direct)
    mirrored[:, quarter - 1 : 0 : -1] = sinogram[:, quarter + 1 :]
    image = (matrix.T @ direct.reshape(batch, -1).T).T.reshape(batch, size, size)
    image_of_transpose = (matrix.T @ mirrored.reshape(batch, -1).T).T.reshape(batch, size, size)
    return image + _transpose(image_of_transpose)


def forward_project(mu: np.ndarray, geometry: ScanGeometry) -> np.ndarray:
    """Line integrals of ``mu`` (B, N, N) per mm -> sinogram (B, V, D), dimensionless.

    Views theta + pi/2 are views theta of the image rotated by 90 degrees, and views pi/2 - theta are
    views theta of the transposed image, so one matrix for angles [0, pi/4] serves all of [0, pi).
    """
    if geometry.num_views % 4:
        raise AugmentorError(f"num_views must be a multiple of 4, got {geometry.num_views}")
    matrix = _projector(geometry.size, geometry.num_views)
    images = np.ascontiguousarray(mu, dtype=np.float32)
    first = _project_half(matrix, images, geometry.num_views, geometry.num_bins)
    second = _project_half(matrix, _rotate_quarter(images), geometry.num_views, geometry.num_bins)
    return np.concatenate([first, second], axis=1) * geometry.spacing_mm


def filtered_back_project(sinogram: np.ndarray, geometry: ScanGeometry, kernel: str, apodisation: str = "none") -> np.ndarray:
    """FBP of a (B, V, D) sinogram of line integrals -> (B, N, N) attenuation per mm.

    The back-projector is the forward projector's transpose: each filtered ray is spread back over the
    pixels it sampled with the same bilinear weights (about one pixel length per pixel per view).
    ``apodisation`` (see ``APODISATIONS``) rolls the kernel off before the detector's Nyquist frequency.
    """
    _batch, views, bins = sinogram.shape
    response = _filter_response(bins, float(geometry.spacing_mm), kernel, apodisation)
    padded = 2 * (response.shape[0] - 1)
    filtered = np.fft.irfft(np.fft.rfft(sinogram, n=padded, axis=-1) * response, n=padded, axis=-1)[..., :bins]
    filtered = filtered.astype(np.float32)
    matrix = _projector(geometry.size, geometry.num_views)
    half = views // 2
    first = _back_project_half(matrix, filtered[:, :half], geometry.size)
    second = _back_project_half(matrix, filtered[:, half:], geometry.size)
    return (first + _unrotate_quarter(second)) * (math.pi / views)


@lru_cache(maxsize=8)
def _chord_lengths_cached(size: int, spacing_mm: float, num_views: int) -> np.ndarray:
    geometry = ScanGeometry(size, spacing_mm, num_views)
    chords = forward_project(np.ones((1, size, size), dtype=np.float32), geometry)[0].astype(np.float64)
    chords.flags.writeable = False
    return chords


def _chord_lengths(geometry: ScanGeometry) -> np.ndarray:
    """(V, D) length in mm of each ray inside the image square (the projection of an image of ones)."""
    return _chord_lengths_cached(geometry.size, geometry.spacing_mm, geometry.num_views)


def _water_path_mm(sinogram: np.ndarray) -> np.ndarray:
    """Per image: the mean over views of the longest ray's water-equivalent path, mm."""
    return sinogram.max(axis=-1).mean(axis=-1) / MU_WATER_PER_MM


def _area_downsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks: the detector and pixel integrate the finer truth (partial volume)."""
    batch, height, width = images.shape
    if height % factor or width % factor:
        raise AugmentorError(f"image size {height}x{width} is not a multiple of supersample {factor}")
    return images.reshape(batch, height // factor, factor, width // factor, factor).mean(axis=(2, 4))


def simulate_scan(
    hu: np.ndarray,
    spacing_mm: float,
    *,
    dose: float = 1.0,
    rng: np.random.Generator | Sequence[np.random.Generator],
    kernel: str = "standard",
    apodisation: str = "none",
    supersample: int = 1,
    num_views: int | None = None,
    surround_water_mm: float | None = None,
) -> np.ndarray:
    """Scan a tissue HU image: projection, Poisson photon noise, filtered back-projection.

    Args:
        hu: (H, W) or (B, H, W) float HU "truth", square, on a grid ``supersample`` times finer than the
            output (partial volume: the finer truth is area-averaged onto the output grid).
        spacing_mm: pixel spacing of the *output* (reconstructed) image, mm.
        dose: relative dose; 1.0 = routine abdominal CT (liver noise 10-20 HU behind an average
            abdomen), noise sigma scales as 1/sqrt(dose).
        rng: the generator of the photon noise; or one generator per image, which makes every image
            independent of how images are batched.
        kernel: reconstruction kernel, "standard" (soft tissue), "smooth" or "sharp".
        apodisation: roll-off of the kernel to the detector's Nyquist frequency, "none", "hann" or
            "shepp-logan". Whole slices use "hann": without it the ramp is still high at Nyquist and a
            body's air/skin and bone edges streak across flat organs (lesion ROIs keep "none").
        supersample: ratio of the input grid to the output grid (1, 2, 3, ...).
        num_views: projection angles; default :func:`default_num_views`.
        surround_water_mm: water path outside the image that every ray also crosses (attenuates the
            beam, so adds noise, but is not reconstructed). ``None``: each image is topped up to
            ``REFERENCE_WATER_PATH_MM`` — 0 for a whole abdominal slice, ~180 mm for a 7 cm liver
            patch — so a local patch gets the noise it would have inside an average patient.

    Returns:
        float32 HU image(s) of shape (H/supersample, W/supersample), or (B, ...) for a batch.
    """
    look_up_option(kernel, KERNEL_CUTOFF_PER_MM, "reconstruction kernel")
    look_up_option(apodisation, APODISATIONS, "apodisation")
    if dose <= 0:
        raise AugmentorError(f"dose must be positive, got {dose}")
    if supersample < 1:
        raise AugmentorError(f"supersample must be >= 1, got {supersample}")
    images = np.asarray(hu, dtype=np.float64)
    single = images.ndim == 2
    if single:
        images = images[None]
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise AugmentorError(f"simulate_scan needs square (H, W) or (B, H, W) images, got shape {np.shape(hu)}")
    if supersample > 1:
        images = _area_downsample(images, supersample)
    batch, size = images.shape[0], images.shape[1]
    generators = [rng] * batch if isinstance(rng, np.random.Generator) else list(rng)
    if len(generators) != batch:
        raise AugmentorError(f"got {len(generators)} random generators for {batch} images")
    views = num_views or default_num_views(size)
    geometry = ScanGeometry(size, float(spacing_mm), _multiple_of_four(views))  # see forward_project

    mu = np.clip(MU_WATER_PER_MM * (1.0 + images / 1000.0), 0.0, None)
    # Each image is reconstructed as if it continued beyond its border with its border's (median)
    # attenuation: a local tissue patch then has no 1 000 HU step at its edge to ring and bias the
    # interior by a few HU, while a whole slice (air at the border, mu = 0) is scanned unchanged. FBP is
    # linear, so only the difference from that background is projected and reconstructed; the photon
    # counts still see the full attenuation.
    border = np.concatenate([mu[:, 0, :], mu[:, -1, :], mu[:, 1:-1, 0], mu[:, 1:-1, -1]], axis=1)
    background = np.median(border, axis=1)[:, None, None]
    chords = _chord_lengths(geometry)  # (V, D) path length through the square, mm
    difference = forward_project(mu - background, geometry).astype(np.float64)
    sinogram = difference + background * chords

    # Unattenuated photons per bin per view, from a fixed fluence per mm per radian.
    photons = dose * FLUENCE_PER_MM_RADIAN * geometry.spacing_mm * (math.pi / geometry.num_views)
    if surround_water_mm is None:
        surround = np.maximum(REFERENCE_WATER_PATH_MM - _water_path_mm(sinogram), 0.0)
    else:
        surround = np.full(batch, float(surround_water_mm))
    surround_attenuation = (surround * MU_WATER_PER_MM)[:, None, None]
    # Angular tube-current modulation, as every modern scanner does (Gies et al., Med Phys 1999): the
    # current of each view goes as the square root of its worst attenuation, normalised to the same
    # total dose. Without it a wide patient's lateral views dominate the noise (strong horizontal
    # streaks); with it the noise is nearly isotropic, as in clinical images.
    view_attenuation = sinogram.max(axis=-1, keepdims=True)
    modulation = np.exp(0.5 * (view_attenuation - view_attenuation.max(axis=1, keepdims=True)))
    modulation /= modulation.mean(axis=1, keepdims=True)
    incident = photons * modulation
    expected = incident * np.exp(-(sinogram + surround_attenuation))
    if isinstance(rng, np.random.Generator):
        counts = rng.poisson(expected)
    else:
        counts = np.stack([generator.poisson(one) for generator, one in zip(generators, expected, strict=True)])
    # A ray with no photons (photon starvation behind bone/metal) is logged as half a photon, as
    # scanners clamp the log's argument; that gives the familiar streaks instead of infinities.
    noisy = -np.log(np.maximum(counts, 0.5) / incident) - surround_attenuation - background * chords

    mu_reconstructed = filtered_back_project(noisy, geometry, kernel, apodisation) + background[:, :, :]
    result = ((mu_reconstructed / MU_WATER_PER_MM - 1.0) * 1000.0).astype(np.float32)
    return result[0] if single else result
