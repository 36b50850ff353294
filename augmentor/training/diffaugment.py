"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

With a few hundred training images a discriminator memorises them and the generator collapses. DiffAugment
augments *both* the real and the generated batches with the same policy, through differentiable
operations, every time the discriminator sees them (in the discriminator's and in the generator's
update), so the discriminator cannot tell real from fake by the augmentation and the generator still
learns the un-augmented distribution. Each sample gets its own random parameters, as in the paper.

Inputs are (image, mask) pairs: (B, image_channels + 1, H, W) in [-1, 1]. The geometric operations
(translation, cutout) move the image and mask channels together; the intensity operation (colour:
brightness and contrast) changes only the image channels, since a mask is a label, not an intensity.
Pixels that translation uncovers and cutout erases become 0 in every channel (as published, and what the
shipped models were trained with); with ``mask_background_fill=True`` the mask channels get -1 instead,
background, since 0 is halfway between background (-1) and lesion (+1), a value no real mask has
(issue #13).

``translation-reflect`` shifts like ``translation`` but fills what it uncovers with the mirror image of the
sample (reflection at the border without repeating the edge pixel, as StyleGAN2-ADA's integer translation
pads), so it draws no straight edge. Zero fill and cutout put a straight-edged block in every image the
discriminator sees, real or fake, which may teach it to ignore straight edges, and the shipped generators'
samples carry square frames. Tried in results/ablations/gan-lung-round3.json (one seed, 1 000 steps): without
cutout and zero fill the square halo around the nodule stayed; without the colour operation (brightness up to
±350 HU in the lung window, so the discriminator cannot see absolute HU) the concentric frames went.

As elsewhere (TorchIO's habit), :meth:`DiffAugment.sample` draws the parameters from an explicit
``torch.Generator`` and hands them to :func:`augment`, a pure function of the batch and the parameters.

Adaptive probability (Karras et al. 2020, "Training generative adversarial networks with limited data",
ADA): given ``probability`` p (a 0-d device tensor), each operation of the policy is applied to each sample
independently with probability p, and otherwise left out for that sample (:meth:`AugmentParameters.gated`);
the algorithm moves p with its overfitting heuristic (:class:`augmentor.training.cgan.ConditionalGAN`). The
gates are drawn after the parameters, so a run without them draws exactly what it did before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch

from augmentor.errors import did_you_mean


class Augmentation(StrEnum):
    COLOR = "color"  # brightness + contrast of the image channels
    TRANSLATION = "translation"  # shift by up to 1/8 of the size, padded with the fill (0, or -1 for masks)
    TRANSLATION_REFLECT = "translation-reflect"  # the same shifts, the uncovered pixels mirrored from the sample
    CUTOUT = "cutout"  # fill a square of half the size (0, or -1 for masks)


DEFAULT_POLICY = (Augmentation.COLOR, Augmentation.TRANSLATION, Augmentation.CUTOUT)
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


@dataclass(frozen=True)
class AugmentParameters:
    """Per-sample parameters of one DiffAugment draw; any field may be None (operation off)."""

    brightness: torch.Tensor | None = None  # (B,) added, U[-0.5, 0.5] (in [-1, 1] units: a quarter of the range)
    contrast: torch.Tensor | None = None  # (B,) factor, U[0.5, 1.5]
    shift: torch.Tensor | None = None  # (B, 2) integer (rows, columns)
    cutout_corner: torch.Tensor | None = None  # (B, 2) integer top-left corner (may lie outside the image)
    cutout_size: tuple[int, int] = (0, 0)
    reflect: bool = False  # the shift mirrors the sample into what it uncovers (translation-reflect)

    def gated(self, apply: torch.Tensor) -> AugmentParameters:
        """These parameters with operation k left out of the samples where ``apply[:, k]`` is False.

        ``apply`` is (B, 3) bool: colour, shift, cutout. A left-out operation gets its identity parameters
        (brightness 0, contrast 1, shift 0, a cutout box placed wholly above and left of the image)."""

        def where(column: int, value: torch.Tensor | None, identity: torch.Tensor) -> torch.Tensor | None:
            if value is None:
                return None
            keep = apply[:, column].view(-1, *([1] * (value.dim() - 1)))
            return torch.where(keep, value, identity.to(value.dtype))

        outside = torch.tensor([-self.cutout_size[0], -self.cutout_size[1]], device=apply.device)
        return AugmentParameters(
            where(0, self.brightness, torch.zeros((), device=apply.device)),
            where(0, self.contrast, torch.ones((), device=apply.device)),
            where(1, self.shift, torch.zeros((), device=apply.device)),
            where(2, self.cutout_corner, outside),
            self.cutout_size,
            self.reflect,
        )

    def rows(self, select: Callable[[torch.Tensor], torch.Tensor]) -> AugmentParameters:
        """The parameters of some rows of the batch (``select`` picks rows of a tensor)."""

        def pick(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else select(value)

        return AugmentParameters(
            pick(self.brightness), pick(self.contrast), pick(self.shift), pick(self.cutout_corner), self.cutout_size, self.reflect
        )


def adjust_brightness_contrast(
    pairs: torch.Tensor, image_channels: int, brightness: torch.Tensor, contrast: torch.Tensor
) -> torch.Tensor:
    """Brightness shift then contrast scale about each sample's mean, on the image channels only."""
    image, mask = pairs[:, :image_channels], pairs[:, image_channels:]
    image = image + brightness.view(-1, 1, 1, 1).to(image.dtype)
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * contrast.view(-1, 1, 1, 1).to(image.dtype) + mean
    return torch.cat([image, mask], dim=1)


def _filled(pairs: torch.Tensor, keep: torch.Tensor, fill: Sequence[float] | None) -> torch.Tensor:
    """``pairs`` where ``keep`` (B, H, W) holds, elsewhere 0 (``fill`` None) or ``fill[c]`` in channel c."""
    if fill is None:
        return pairs * keep.unsqueeze(1).to(pairs.dtype)
    values = torch.tensor(fill, dtype=pairs.dtype, device=pairs.device).view(1, -1, 1, 1)
    return torch.where(keep.unsqueeze(1), pairs, values)


def translate(pairs: torch.Tensor, shift: torch.Tensor, fill: Sequence[float] | None = None) -> torch.Tensor:
    """Shift each sample by ``shift[b] = (rows, columns)`` pixels; uncovered pixels become 0 (or ``fill[c]``)."""
    batch, channels, height, width = pairs.shape
    rows = torch.arange(height, device=pairs.device).view(1, -1, 1) - shift[:, 0].view(-1, 1, 1)
    columns = torch.arange(width, device=pairs.device).view(1, 1, -1) - shift[:, 1].view(-1, 1, 1)
    inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width)  # (B, H, W)
    source = (rows.clamp(0, height - 1) * width + columns.clamp(0, width - 1)).view(batch, 1, height * width)
    moved = pairs.flatten(2).gather(2, source.expand(batch, channels, height * width))
    return _filled(moved.view(batch, channels, height, width), inside, fill)


def _reflected(index: torch.Tensor, extent: int) -> torch.Tensor:
    """Indices mirrored into [0, extent) at both borders without repeating the edge (-1 -> 1, extent -> extent - 2)."""
    last = extent - 1
    return last - (last - index.abs()).abs()


def translate_reflect(pairs: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each sample by ``shift[b] = (rows, columns)`` pixels (|shift| < size); uncovered pixels mirror the sample."""
    batch, channels, height, width = pairs.shape
    rows = _reflected(torch.arange(height, device=pairs.device).view(1, -1, 1) - shift[:, 0].view(-1, 1, 1), height)
    columns = _reflected(torch.arange(width, device=pairs.device).view(1, 1, -1) - shift[:, 1].view(-1, 1, 1), width)
    source = (rows * width + columns).view(batch, 1, height * width)
    return pairs.flatten(2).gather(2, source.expand(batch, channels, height * width)).view(batch, channels, height, width)


def cutout(pairs: torch.Tensor, corner: torch.Tensor, size: tuple[int, int], fill: Sequence[float] | None = None) -> torch.Tensor:
    """Zero (or set to ``fill[c]``) a ``size`` box with top-left ``corner[b]`` in every channel of each sample."""
    _, _, height, width = pairs.shape
    rows = torch.arange(height, device=pairs.device).view(1, -1, 1) - corner[:, 0].view(-1, 1, 1)
    columns = torch.arange(width, device=pairs.device).view(1, 1, -1) - corner[:, 1].view(-1, 1, 1)
    inside = (rows >= 0) & (rows < size[0]) & (columns >= 0) & (columns < size[1])
    return _filled(pairs, ~inside, fill)


def augment(
    pairs: torch.Tensor, image_channels: int, parameters: AugmentParameters, mask_background_fill: bool = False
) -> torch.Tensor:
    """Apply drawn parameters: colour, then translation, then cutout (the paper's order).

    ``mask_background_fill``: uncovered and cut-out pixels of the mask channels become -1 (background), not 0.
    """
    fill = None
    if mask_background_fill:
        fill = [0.0] * image_channels + [-1.0] * (pairs.shape[1] - image_channels)
    if parameters.brightness is not None and parameters.contrast is not None:
        pairs = adjust_brightness_contrast(pairs, image_channels, parameters.brightness, parameters.contrast)
    if parameters.shift is not None:
        pairs = translate_reflect(pairs, parameters.shift) if parameters.reflect else translate(pairs, parameters.shift, fill)
    if parameters.cutout_corner is not None:
        pairs = cutout(pairs, parameters.cutout_corner, parameters.cutout_size, fill)
    return pairs


def parse_policy(policy: Sequence[str]) -> tuple[Augmentation, ...]:
    """Validate a policy such as ``("color", "translation", "cutout")``."""
    valid = [a.value for a in Augmentation]
    parsed = []
    for name in policy:
        if name not in valid:
            raise ValueError(f"unknown DiffAugment operation {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}")
        parsed.append(Augmentation(name))
    if {Augmentation.TRANSLATION, Augmentation.TRANSLATION_REFLECT} <= set(parsed):
        raise ValueError("translation and translation-reflect are one shift, filled two ways; choose one")
    return tuple(parsed)


def _uniform_integers(
    batch: int, ranges: Sequence[tuple[int, int]], device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """(batch, len(ranges)) integers, column j uniform in [low_j, high_j). Python bounds: no host-device copy."""
    unit = torch.rand(batch, len(ranges), device=device, generator=generator)
    columns = [torch.floor(unit[:, j] * (high - low)).long() + low for j, (low, high) in enumerate(ranges)]
    return torch.stack(columns, dim=1)


class DiffAugment:
    """Random differentiable augmentation of (image, mask) batches.

    Args:
        policy: operations to apply (empty: identity).
        image_channels: leading channels that are image; the rest are mask channels.
        mask_background_fill: fill what translation uncovers and cutout erases with -1 (background) in the
            mask channels instead of 0.
    """

    def __init__(self, policy: Sequence[str] = DEFAULT_POLICY, image_channels: int = 1, mask_background_fill: bool = False) -> None:
        self.policy = parse_policy(policy)
        self.image_channels = image_channels
        self.mask_background_fill = mask_background_fill

    def __bool__(self) -> bool:
        return bool(self.policy)

    def sample(
        self, pairs: torch.Tensor, generator: torch.Generator | None = None, batch: int | None = None,
        probability: torch.Tensor | None = None,
    ) -> AugmentParameters:
        """Draw per-sample parameters for a batch shaped like ``pairs`` (or of ``batch`` samples) on its device;
        with ``probability`` p, each operation then applies to each sample with probability p (ADA)."""
        _, _, height, width = pairs.shape
        batch = pairs.shape[0] if batch is None else batch
        device = pairs.device
        brightness = contrast = shift = corner = None
        cutout_size = (0, 0)
        if Augmentation.COLOR in self.policy:
            brightness = torch.rand(batch, device=device, generator=generator) - 0.5
            contrast = torch.rand(batch, device=device, generator=generator) + 0.5
        reflect = Augmentation.TRANSLATION_REFLECT in self.policy
        if Augmentation.TRANSLATION in self.policy or reflect:
            limits = (int(height * TRANSLATION_RATIO + 0.5), int(width * TRANSLATION_RATIO + 0.5))
            shift = _uniform_integers(batch, [(-limit, limit + 1) for limit in limits], device, generator)
        if Augmentation.CUTOUT in self.policy:
            cutout_size = (int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5))
            # the box's centre is uniform over the image, so its corner is centre - size // 2
            ranges = [(-half, extent - half) for extent, half in ((height, cutout_size[0] // 2), (width, cutout_size[1] // 2))]
            corner = _uniform_integers(batch, ranges, device, generator)
        parameters = AugmentParameters(brightness, contrast, shift, corner, cutout_size, reflect)
        if probability is None:
            return parameters
        apply = torch.rand(batch, 3, device=device, generator=generator) < probability
        return parameters.gated(apply)

    def __call__(
        self,
        pairs: torch.Tensor,
        generator: torch.Generator | None = None,
        global_batch: int | None = None,
        rows: Callable[[torch.Tensor], torch.Tensor] | None = None,
        probability: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Augment a batch with freshly drawn parameters (identity for an empty policy).

        Data-parallel training passes ``global_batch`` and ``rows``: parameters are drawn for the whole
        global batch and ``rows`` picks this process's part, so a sample's augmentation does not depend on
        how many processes share the batch. ``probability``: see :meth:`sample`.
        """
        if not self.policy:
            return pairs
        if rows is None:
            parameters = self.sample(pairs, generator, probability=probability)
        else:
            parameters = self.sample(pairs, generator, global_batch, probability).rows(rows)
        return augment(pairs, self.image_channels, parameters, self.mask_background_fill)
