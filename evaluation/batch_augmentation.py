"""Classic augmentation on whole batches of tensors: the recipe's ``[augmentation]`` section, on the device.

The same transforms as ``bench/augmentation.py``'s baseline (MONAI dictionary transforms, one sample at a time),
as a few batched tensor operations: random flips, rotation + zoom, a coarse elastic deformation (the
spatial part, applied to image and mask together), then an intensity shift and scaling (image only).

Parameters are drawn first (``sample_parameters``: one ``torch.rand`` call, one row of numbers per sample,
in a fixed order), then applied by a pure function (``augment_batch``), so the maths is testable on chosen
parameters and a sample's augmentation depends only on the generator's state.

The spatial maths. Pixel coordinates are centred, ``c = i - (S - 1) / 2``, and the grid that
``torch.nn.functional.grid_sample`` reads is in normalised units with ``align_corners=False``,
``u = 2 c / S``: pixel centres sit at ``(2 i + 1) / S - 1`` and the image's outer edges at ±1, so a
rotation or zoom turns about the image centre and ``padding_mode="border"`` repeats the edge pixels (the
ROIs sit inside tissue: repeat the edge rather than insert air). As in MONAI's ``RandAffine`` followed by
``Rand2DElastic``, output pixel ``p`` reads the (flipped) input at

    q(p) = A (p + d(p)),        A = z [[cos θ, sin θ], [-sin θ, cos θ]]  in (x = column, y = row),

with ``θ`` uniform in ±``rotate_degrees``, ``z`` uniform in [1 - ``scale``, 1 + ``scale``] (MONAI's sign
convention: the same θ turns the image the same way) and ``d`` the elastic displacement. Square images
make pixel and normalised units differ by one factor, so ``A`` is the same matrix in both and the grid
is ``A (u + 2 d / S)`` (what ``F.affine_grid`` with ``theta = [A | 0]`` gives for ``d = 0``, built here
with a few element-wise operations instead of its batched matmul). The two compose into ONE sampling
grid: one resampling, bilinear for the image and nearest for the mask (nearest reads existing labels, so
labels stay labels).

The elastic displacement is MONAI's ``Rand2DElastic`` with control points ``spacing = image_size // 4``
pixels apart (an 8 × 8 grid for 64 × 64 images: the 4 × 4 cells covering the image plus a margin), each
point displaced by ``magnitude · N(0, 1)`` pixels per axis (``magnitude`` uniform in [0,
``elastic_magnitude``] per sample), upsampled bicubically by ``spacing`` (``align_corners=False``) and
cropped to the image about its centre.

Flips are permutations, not resamplings: they are applied exactly, before the grid (``x_f(A(p + d))`` is
MONAI's flip → affine → elastic order), so a flipped-only sample is an exact copy. A sample drawn neither
affine nor elastic is passed through unresampled (bit for bit), as MONAI passes it.

Differences from ``bench/augmentation.py``'s baseline (the per-sample MONAI Compose): MONAI's ``RandAffine``
given a single ``scale_range`` stretches the rows only (it pads the missing column factor with 1); here the
zoom is isotropic, as the recipe says. MONAI upsamples the control points' positions (plus their
displacements) bicubically, and PyTorch's bicubic kernel (a = -0.75) does not reproduce a linear ramp, so
every MONAI elastic sample also carries a fixed ripple of up to 0.77 pixel (RMS 0.55) at 64 × 64 with
period ``spacing``, whatever its magnitude; here only the random displacements are upsampled (the same
field without the ripple). The random streams differ (MONAI's numpy generator per transform),
so the same seed draws different (otherwise identically distributed) parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evaluation.recipe import AugmentationSection

# Columns of the per-sample uniform draws (one row per sample, always this layout whatever the options):
FLIP_ROWS, FLIP_COLUMNS, AFFINE, ROTATION, ZOOM, ELASTIC, MAGNITUDE, SHIFT, OFFSET, SCALE, FACTOR = range(11)
CONTROL = 11  # then 2 · n · n values, the elastic control points' normal draws (rows, then columns)


def elastic_spacing(image_size: int) -> int:
    """Pixels between the elastic control points (as ``bench/augmentation.py``'s baseline gives MONAI)."""
    return max(image_size // 4, 2)


def control_grid_size(image_size: int, spacing: int) -> int:
    """Control points per axis: MONAI's ``create_control_grid`` (the image plus a margin on each side)."""
    if image_size % 2 == 0:
        return math.ceil((image_size - 1) / (2 * spacing) + 0.5) * 2 + 2
    return math.ceil((image_size - 1) / (2 * spacing)) * 2 + 3


@dataclass(frozen=True)
class BatchParameters:
    """One batch's augmentation parameters, one entry per sample; ``None`` where the recipe turns a transform off.

    Attributes:
        flip_rows: (B,) bool, flip up-down (MONAI's ``spatial_axis=0``).
        flip_columns: (B,) bool, flip left-right.
        rotation: (B,) radians (0 where the affine was not drawn).
        zoom: (B,) sampling-grid scale ``z`` (1 where the affine was not drawn).
        control_offsets: (B, 2, n, n) elastic control-point displacements in pixels, (row, column)
            components (0 where the elastic deformation was not drawn).
        resampled: (B,) bool, the affine or the elastic deformation was drawn (the others pass unresampled).
        shift: (B,) added to the image (0 where not drawn).
        factor: (B,) the image is multiplied by ``1 + factor`` after the shift (0 where not drawn).
    """

    flip_rows: torch.Tensor | None = None
    flip_columns: torch.Tensor | None = None
    rotation: torch.Tensor | None = None
    zoom: torch.Tensor | None = None
    control_offsets: torch.Tensor | None = None
    resampled: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    factor: torch.Tensor | None = None


def sample_parameters(
    options: AugmentationSection, batch_size: int, image_size: int, generator: torch.Generator, device: torch.device | str | None = None
) -> BatchParameters:
    """Draw a batch's parameters: one ``torch.rand`` of (B, 11 + 2 n²) on the generator's device, row b for sample b.

    On a CPU generator the draws run in order, so sample b's parameters are the same whatever the batch
    size (the first k rows of a batch of B equal a batch of k); a CUDA generator gives the same bytes for
    the same seed and batch size.

    Args:
        options: the recipe's ``[augmentation]`` section.
        batch_size: B.
        image_size: height = width of the samples (sets the elastic control grid).
        generator: the source of every random number.
        device: where the parameters go (the images' device); a CPU draw is copied to CUDA without a sync.

    Returns:
        The parameters, on ``device``.
    """
    spacing = elastic_spacing(image_size)
    points = control_grid_size(image_size, spacing)
    draws = torch.rand((batch_size, CONTROL + 2 * points * points), generator=generator, device=generator.device, dtype=torch.float64)
    target = torch.device(device) if device is not None else draws.device
    if target != draws.device:
        if draws.device.type == "cpu" and target.type == "cuda":
            draws = draws.pin_memory()  # a pinned, non-blocking copy: no host sync
        draws = draws.to(target, non_blocking=True)

    def drawn(column: int, probability: float) -> torch.Tensor:
        return draws[:, column] < probability

    def symmetric(column: int, bound: float) -> torch.Tensor:
        return (2.0 * draws[:, column] - 1.0) * bound

    parameters: dict[str, torch.Tensor] = {}
    if options.flip:
        parameters["flip_rows"] = drawn(FLIP_ROWS, 0.5)
        parameters["flip_columns"] = drawn(FLIP_COLUMNS, 0.5)
    resampled = torch.zeros(batch_size, dtype=torch.bool, device=target)
    if options.affine_probability > 0 and (options.rotate_degrees > 0 or options.scale > 0):
        affine = drawn(AFFINE, options.affine_probability)
        parameters["rotation"] = torch.where(affine, symmetric(ROTATION, math.radians(options.rotate_degrees)), 0.0)
        parameters["zoom"] = torch.where(affine, 1.0 + symmetric(ZOOM, options.scale), 1.0)
        resampled = resampled | affine
    if options.elastic_probability > 0 and options.elastic_magnitude > 0:
        elastic = drawn(ELASTIC, options.elastic_probability)
        magnitude = torch.where(elastic, draws[:, MAGNITUDE] * options.elastic_magnitude, 0.0)
        # N(0, 1) by the inverse normal CDF of the row's own uniforms (kept off 0, where it is -inf)
        normal = torch.special.ndtri(draws[:, CONTROL:].clamp_min(2.0**-53)).view(batch_size, 2, points, points)
        parameters["control_offsets"] = magnitude.view(-1, 1, 1, 1) * normal
        resampled = resampled | elastic
    if "rotation" in parameters or "control_offsets" in parameters:
        parameters["resampled"] = resampled
    if options.intensity_shift > 0:
        parameters["shift"] = torch.where(drawn(SHIFT, 0.5), symmetric(OFFSET, options.intensity_shift), 0.0)
    if options.intensity_scale > 0:
        parameters["factor"] = torch.where(drawn(SCALE, 0.5), symmetric(FACTOR, options.intensity_scale), 0.0)
    return BatchParameters(**parameters)


def _flip(tensor: torch.Tensor, chosen: torch.Tensor | None, dim: int) -> torch.Tensor:
    if chosen is None:
        return tensor
    return torch.where(chosen.view(-1, *([1] * (tensor.ndim - 1))), tensor.flip(dim), tensor)


def elastic_displacement(control_offsets: torch.Tensor, image_size: int) -> torch.Tensor:
    """The dense displacement (B, 2, S, S) in pixels, (row, column): MONAI's bicubic upsampling of the control grid, centre-cropped.

    Bicubic upsampling is separable and linear, so it is ``W @ offsets @ Wᵀ`` with ``W`` (S, n) the
    cropped 1-D weights, found by upsampling the unit vectors with ``F.interpolate`` itself (the same
    kernel, a = -0.75, and edge clamping), at a fraction of the cost of upsampling the whole field.
    """
    spacing = elastic_spacing(image_size)
    points = control_offsets.shape[-1]
    upsampled_size = points * spacing
    unit_vectors = torch.eye(points, dtype=control_offsets.dtype, device=control_offsets.device).view(points, 1, points, 1)
    weights = F.interpolate(unit_vectors, size=(upsampled_size, 1), mode="bicubic", align_corners=False)[:, 0, :, 0]
    start = upsampled_size // 2 - image_size // 2  # MONAI's CenterSpatialCrop
    weights = weights[:, start : start + image_size].T  # (S, n)
    return weights @ control_offsets @ weights.T


def sampling_grid(parameters: BatchParameters, batch_size: int, image_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The (B, S, S, 2) grid ``A (u + 2 d / S)`` in normalised (x, y) units for ``grid_sample(align_corners=False)``."""
    centres = (2 * torch.arange(image_size, dtype=dtype, device=device) + 1) / image_size - 1  # pixel centres, as F.affine_grid
    x, y = centres.view(1, 1, -1), centres.view(1, -1, 1)
    if parameters.control_offsets is not None:
        # (row, column) pixels -> (x, y) normalised units (scaled on the coarse grid: upsampling is linear)
        displacement = elastic_displacement(parameters.control_offsets.to(dtype) * (2.0 / image_size), image_size)
        x, y = x + displacement[:, 1], y + displacement[:, 0]
    if parameters.rotation is not None and parameters.zoom is not None:
        rotation, zoom = parameters.rotation.to(dtype).view(-1, 1, 1), parameters.zoom.to(dtype).view(-1, 1, 1)
        cos, sin = torch.cos(rotation) * zoom, torch.sin(rotation) * zoom
        # A = z [[cos, sin], [-sin, cos]]: x' = cos x + sin y, y' = cos y - sin x
        x, y = torch.addcmul(cos * x, sin, y), torch.addcmul(cos * y, -sin, x)
    return torch.stack(torch.broadcast_tensors(x, y), dim=-1).expand(batch_size, image_size, image_size, 2)


def augment_batch(images: torch.Tensor, masks: torch.Tensor, parameters: BatchParameters) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply drawn parameters to a batch (a pure function: the same parameters give the same bytes).

    Args:
        images: (B, C, S, S) floating point, normalised units.
        masks: (B, S, S) integer labels.
        parameters: from ``sample_parameters``, on the images' device.

    Returns:
        The augmented images (same dtype) and masks (same dtype, only labels present in the input).
    """
    batch_size, size = images.shape[0], images.shape[-1]
    images = _flip(_flip(images, parameters.flip_rows, -2), parameters.flip_columns, -1)
    masks = _flip(_flip(masks, parameters.flip_rows, -2), parameters.flip_columns, -1)
    # grid_sample wants float32/float64 on every device (and the same dtype for input and grid)
    work = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    if parameters.resampled is not None:
        grid = sampling_grid(parameters, batch_size, size, work, images.device)
        warped = F.grid_sample(images.to(work), grid, mode="bilinear", padding_mode="border", align_corners=False)
        warped_masks = F.grid_sample(masks[:, None].to(work), grid, mode="nearest", padding_mode="border", align_corners=False)
        chosen = parameters.resampled
        images = torch.where(chosen.view(-1, 1, 1, 1), warped.to(images.dtype), images)
        masks = torch.where(chosen.view(-1, 1, 1), warped_masks[:, 0].to(masks.dtype), masks)
    if parameters.shift is not None or parameters.factor is not None:
        intensity = images.to(work)
        if parameters.shift is not None:
            intensity = intensity + parameters.shift.to(work).view(-1, 1, 1, 1)
        if parameters.factor is not None:
            intensity = intensity * (1.0 + parameters.factor.to(work).view(-1, 1, 1, 1))
        images = intensity.to(images.dtype)
    return images, masks


class BatchAugmentation:
    """The recipe's classic augmentation as a callable on whole batches (CPU or CUDA, no host syncs).

    Args:
        options: the recipe's ``[augmentation]`` section.
        image_size: height = width of the samples.
    """

    def __init__(self, options: AugmentationSection, image_size: int) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.options = options
        self.image_size = image_size

    def sample(self, batch_size: int, generator: torch.Generator, device: torch.device | str | None = None) -> BatchParameters:
        """Draw parameters for ``batch_size`` samples (see ``sample_parameters``)."""
        return sample_parameters(self.options, batch_size, self.image_size, generator, device)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch, image and mask together.

        Args:
            images: (B, C, H, W) floating point in normalised units ([-1, 1] window), H = W = ``image_size``.
            masks: (B, H, W) integer labels (uint8, int64, ...), on the images' device.
            generator: every random draw comes from it, one row per sample in a fixed order (a CPU
                generator gives sample b the same augmentation whatever the batch size and device).

        Returns:
            The augmented images (same dtype and device) and masks (same dtype, labels stay labels).
        """
        expected = (self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[-2:]) != expected:
            raise ValueError(f"images must be (B, C, {self.image_size}, {self.image_size}), got {tuple(images.shape)}")
        if masks.shape != (images.shape[0], *expected):
            raise ValueError(f"masks must be (B, H, W) = {(images.shape[0], *expected)}, got {tuple(masks.shape)}")
        if not images.is_floating_point() or masks.is_floating_point():
            raise ValueError(f"images must be floating point and masks integer, got {images.dtype} and {masks.dtype}")
        parameters = self.sample(images.shape[0], generator, images.device)
        return augment_batch(images, masks, parameters)
