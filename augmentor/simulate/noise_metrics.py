"""Noise measurements of CT images: sigma and the noise power spectrum (NPS).

The NPS follows the standard method (ICRU Report 87; Boedeker et al., Med Phys 2007): square ROIs of a
uniform region, each detrended by its own mean plane, ``NPS(fx, fy) = dx dy / (Nx Ny) |DFT(roi)|^2``
averaged over ROIs, then averaged over rings of radial frequency. Its integral is the noise variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augmentor.errors import AugmentorError


@dataclass(frozen=True)
class NoiseMeasurement:
    """What :func:`measure_noise` found.

    Attributes:
        sigma_hu: mean over ROIs of the detrended pixel standard deviation, HU.
        frequencies_per_mm: centres of the radial frequency bins, cycles/mm.
        nps: radially averaged NPS, HU^2 mm^2.
        peak_per_mm: frequency of the maximum of the NPS smoothed over 3 rings, cycles/mm.
        mean_frequency_per_mm: NPS-weighted mean frequency, cycles/mm (a steadier texture summary).
    """

    sigma_hu: float
    frequencies_per_mm: np.ndarray
    nps: np.ndarray
    peak_per_mm: float
    mean_frequency_per_mm: float


def _detrend_plane(roi: np.ndarray) -> np.ndarray:
    """Subtract the least-squares plane a + b*row + c*column (removes slow shading, as ICRU 87 advises)."""
    rows, columns = np.mgrid[: roi.shape[0], : roi.shape[1]]
    design = np.stack([np.ones(roi.size), rows.ravel(), columns.ravel()], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, roi.ravel(), rcond=None)
    return roi - (design @ coefficients).reshape(roi.shape)


def measure_noise(rois: np.ndarray, spacing_mm: float, num_rings: int | None = None) -> NoiseMeasurement:
    """Noise sigma and radial NPS of uniform-region ROIs.

    Args:
        rois: (K, M, M) HU values of K square ROIs of a uniform region (noise + constant).
        spacing_mm: pixel spacing, mm.
        num_rings: radial frequency bins between 0 and Nyquist; default M // 2.

    Returns:
        A :class:`NoiseMeasurement`.
    """
    rois = np.asarray(rois, dtype=np.float64)
    if rois.ndim == 2:
        rois = rois[None]
    if rois.ndim != 3 or rois.shape[1] != rois.shape[2] or rois.shape[1] < 8:
        raise AugmentorError(f"measure_noise needs (K, M, M) square ROIs of at least 8 pixels, got {rois.shape}")
    size = rois.shape[1]
    detrended = np.stack([_detrend_plane(roi) for roi in rois])
    power = np.abs(np.fft.fft2(detrended)) ** 2 * (spacing_mm * spacing_mm / (size * size))
    nps_2d = power.mean(axis=0)
    frequency = np.fft.fftfreq(size, d=spacing_mm)
    radius = np.hypot(frequency[:, None], frequency[None, :])
    nyquist = 0.5 / spacing_mm
    rings = num_rings or size // 2
    edges = np.linspace(0.0, nyquist, rings + 1)
    which = np.digitize(radius.ravel(), edges) - 1
    valid = (which >= 0) & (which < rings)
    totals = np.bincount(which[valid], weights=nps_2d.ravel()[valid], minlength=rings)
    counts = np.bincount(which[valid], minlength=rings)
    nps = totals / np.maximum(counts, 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    weights = nps * centres  # ring area grows with radius: weight by 2 pi f df
    return NoiseMeasurement(
        sigma_hu=float(detrended.std(axis=(1, 2)).mean()),
        frequencies_per_mm=centres,
        nps=nps,
        # A 3-ring moving average steadies the argmax on CT's flat-topped NPS.
        peak_per_mm=float(centres[int(np.argmax(np.convolve(nps, np.ones(3) / 3.0, mode="same")))]),
        mean_frequency_per_mm=float((weights * centres).sum() / weights.sum()),
    )
