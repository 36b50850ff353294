"""Correlated tissue texture: the structure of parenchyma that the scanner's noise sits on top of.

Real liver, spleen or muscle is not flat at CT resolution: lobules, small vessels and fibres give a few HU
of spatially correlated variation (a few mm correlation length), which is part of what makes simulated
lesions hard to tell from their background. The texture is a stationary Gaussian random field: white
noise filtered in the Fourier domain by a Gaussian of the requested correlation length, scaled to the
requested standard deviation. Add it per tissue before :func:`~augmentor.simulate.acquisition.simulate_scan`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from augmentor.errors import AugmentorError


def correlated_texture(
    shape: tuple[int, ...],
    spacing_mm: float,
    *,
    correlation_mm: float,
    sigma: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A zero-mean Gaussian random field with a Gaussian autocorrelation.

    Args:
        shape: (H, W) or (B, H, W); every image gets its own field.
        spacing_mm: pixel spacing, mm.
        correlation_mm: the Gaussian kernel's standard deviation, mm (grain size ~ 2-3x this).
        sigma: the field's standard deviation (HU).
        rng: source of the white noise.

    Returns:
        float64 array of ``shape``.
    """
    if correlation_mm <= 0 or spacing_mm <= 0:
        raise AugmentorError(f"correlation ({correlation_mm}) and spacing ({spacing_mm}) must be positive")
    white = rng.standard_normal(shape)
    height, width = shape[-2], shape[-1]
    frequency_rows = np.fft.fftfreq(height, d=spacing_mm)[:, None]
    frequency_columns = np.fft.rfftfreq(width, d=spacing_mm)[None, :]
    # Fourier transform of a Gaussian blur of standard deviation correlation_mm.
    transfer = np.exp(-2.0 * (np.pi * correlation_mm) ** 2 * (frequency_rows**2 + frequency_columns**2))
    field = np.fft.irfft2(np.fft.rfft2(white, axes=(-2, -1)) * transfer, s=(height, width), axes=(-2, -1))
    spread = field.std(axis=(-2, -1), keepdims=True)
    return field * (sigma / np.maximum(spread, 1e-12))


def textured_tissue_image(
    labels: np.ndarray,
    tissue_hu: Mapping[int, float],
    tissue_texture: Mapping[int, tuple[float, float]],
    spacing_mm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """HU image of a label map: each tissue's mean HU plus its own correlated texture.

    Args:
        labels: (H, W) or (B, H, W) integer label map.
        tissue_hu: label -> mean HU (labels missing here are air, -1000 HU).
        tissue_texture: label -> (correlation_mm, sigma_hu); tissues missing here are flat.
        spacing_mm: pixel spacing, mm.
        rng: source of the texture.

    Returns:
        float64 HU image(s) of the labels' shape.
    """
    image = np.full(labels.shape, -1000.0)
    for label, hu in tissue_hu.items():
        image[labels == label] = hu
    # One field per distinct texture so that tissues sharing a texture still vary independently.
    for label, (correlation_mm, sigma) in sorted(tissue_texture.items()):
        where = labels == label
        if sigma <= 0 or not where.any():
            continue
        field = correlated_texture(labels.shape, spacing_mm, correlation_mm=correlation_mm, sigma=sigma, rng=rng)
        image[where] += field[where]
    return image
