"""The DCGAN family: a class-conditional generator of (image, mask) pairs and a projection discriminator.

Generator (Radford et al. 2016, conditioned as in Frid-Adar et al. 2018): the latent vector and a
learned class embedding are concatenated and projected to a 4x4 map, then doubled in size by strided
transposed convolutions (BatchNorm + ReLU) up to ``image_size``. It emits ``image_channels + 1``
channels:

- channels ``0 .. image_channels-1``: the image in [-1, 1] through ``tanh`` (the HU window mapped
  linearly, see :mod:`augmentor.data.intensity`);
- the last channel: the lesion mask. ``mask > 0`` is the lesion either way. With ``mask_output="tanh"``
  (the default, what the shipped models use) it is a tanh output in [-1, 1]; ``(mask + 1) / 2`` is a soft
  probability, on the same scale as the real masks the discriminator sees (0 -> -1, lesion -> +1). With
  ``"logits"`` it is an unbounded logit (lesion probability ``sigmoid(mask)``); the training algorithm
  shows the discriminator ``2 sigmoid(mask) - 1`` (see :mod:`augmentor.training.algorithm`), so a mask
  near a real one no longer needs the generator to saturate a tanh.

Options the mode-collapse study of issue #13 tries (defaults: the original architecture):
``upsample="resize"`` doubles the size by a nearest-neighbour resize and a 3x3 convolution instead of a
transposed convolution (Odena et al. 2016, "Deconvolution and checkerboard artifacts"; the 1x1 -> 4x4
projection becomes a linear layer); ``upsample="bilinear"`` resizes bilinearly instead, so no map is copied
into blocks of equal values (tried against the square frames around the lesion in the shipped models' samples,
whose edges do not sit on the 4x4 start map's grid: a 1 000-step lung run kept frames along the image borders,
results/ablations/gan-lung-bilinear-trial.json). ``embedding_init="unit"`` draws the class embedding from N(0, 1)
instead of DCGAN's N(0, 0.02), so the class is not a whisper next to an N(0, 1) latent at the start.
``noise_inputs=True`` adds StyleGAN's per-pixel noise inputs (Karras et al. 2019, sec. 3.2): after every x2
step's convolution and on the image channels of the output, one map of N(0, 1) noise per sample and
resolution, times a learned per-channel scale that starts at 0 (so the network starts as without them). A
DCGAN must otherwise make CT's fine-grained noise texture out of a 128-number latent through a 4x4 map, and
the shipped models' lesions came out without it (issue #13). The noise is a function of the latent: a
counter-based integer hash of the latent's bits (:func:`latent_noise`), exact on every device, so the
statement below still holds and nothing that draws latents changes.

For sampling, :func:`fold_resize_upsampling` rewrites each resize + 3x3 convolution as the one strided
transposed convolution it equals (same outputs up to float rounding, 2.25x fewer multiply-adds, no
upsampled intermediate): the network trains in the form above and generates in the folded one.

The forward pass draws no random numbers: in ``eval()`` mode, sample i depends only on the latent vector
and class you pass, so generation can draw latents per sample index.

Discriminator (Miyato & Koyama 2018, "cGANs with projection discriminator"): strided convolutions down
to 4x4, global sum pooling to a feature vector h, and the logit ``linear(h) + <embed(y), h>``. It returns
raw logits; the loss owns the activation. ``minibatch_std=True`` adds Karras et al.'s (2018) minibatch
standard-deviation channel before the last strided convolution (see :class:`MinibatchStandardDeviation`),
so the discriminator can see how alike the samples of a batch are.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from augmentor.errors import did_you_mean
from augmentor.models.normalization import (
    Normalization,
    feature_normalization,
    parse_normalization,
    weight_normalization,
)

MAX_WIDTH_MULTIPLIER = 8  # widest layer is 8 x base_channels (DCGAN's 512 for base 64)
MINIBATCH_STD_GROUP = 4  # Karras et al. 2018's group size
_MASK32 = 0xFFFFFFFF
_GOLDEN32 = 0x9E3779B9


class Upsample(StrEnum):
    TRANSPOSED = "transposed"  # ConvTranspose2d(4, stride 2), as in DCGAN
    RESIZE = "resize"  # nearest x2 then a 3x3 convolution (Odena et al. 2016)
    BILINEAR = "bilinear"  # bilinear x2 then a 3x3 convolution: no map copied into blocks


class MaskOutput(StrEnum):
    TANH = "tanh"  # mask channel through tanh, in [-1, 1]
    LOGITS = "logits"  # mask channel as a raw logit


class EmbeddingInit(StrEnum):
    DCGAN = "dcgan"  # N(0, 0.02), like every other weight
    UNIT = "unit"  # N(0, 1), the scale of the latent


def _parse_option(enum: type[StrEnum], name: str, what: str) -> Any:
    """The member of ``enum`` called ``name``; ValueError listing the valid ones otherwise."""
    valid = [member.value for member in enum]
    if name not in valid:
        raise ValueError(f"unknown {what} {name!r}{did_you_mean(name, valid)}; valid: {', '.join(valid)}")
    return enum(name)


def _num_doublings(image_size: int) -> int:
    """Number of x2 resolution steps between 4x4 and ``image_size`` (a power of two, >= 8)."""
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return int(math.log2(image_size)) - 2


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, 0.0, 0.02)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            nn.init.zeros_(bias)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm | nn.InstanceNorm2d) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        if isinstance(module.bias, torch.Tensor):
            nn.init.zeros_(module.bias)


# Nearest x2 then a 3x3 convolution (zero padding 1), one axis: output row 2m reads input rows m-1 (tap 0)
# and m (taps 1 and 2); row 2m+1 reads m (taps 0 and 1) and m+1 (tap 2). A transposed convolution with a
# 4-tap kernel, stride 2 and padding 1 puts input row i on output rows 2i-1+k, k = 0..3, so its taps are
# k=0: tap 2, k=1: taps 1+2, k=2: taps 0+1, k=3: tap 0; the zero padding at the borders agrees too.
_RESIZE_TO_TRANSPOSED = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _folded(convolution: nn.Conv2d) -> nn.ConvTranspose2d:
    """The transposed convolution (4x4, stride 2, padding 1) equal to nearest x2 followed by ``convolution``."""
    taps = _RESIZE_TO_TRANSPOSED.to(convolution.weight)
    folded = nn.ConvTranspose2d(convolution.in_channels, convolution.out_channels, 4, 2, 1, bias=convolution.bias is not None)
    folded = folded.to(device=convolution.weight.device, dtype=convolution.weight.dtype)
    with torch.no_grad():
        # Conv2d weight (out, in, 3, 3) -> ConvTranspose2d weight (in, out, 4, 4)
        folded.weight.copy_(torch.einsum("ka,lb,oiab->iokl", taps, taps, convolution.weight))
        if convolution.bias is not None and folded.bias is not None:
            folded.bias.copy_(convolution.bias)
    return folded.requires_grad_(convolution.weight.requires_grad)


def _is_resize_convolution(upsample: nn.Module, convolution: nn.Conv2d) -> bool:
    return (
        isinstance(upsample, nn.Upsample) and upsample.mode == "nearest" and upsample.scale_factor in (2, 2.0, (2.0, 2.0))
        and convolution.kernel_size == (3, 3) and convolution.stride == (1, 1)
        and convolution.padding == (1, 1) and convolution.dilation == (1, 1) and convolution.groups == 1
        and convolution.padding_mode == "zeros"
    )


def fold_resize_upsampling(network: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.Upsample(x2, nearest)`` + 3x3 ``nn.Conv2d`` pair of a ``nn.Sequential``
    by the equal transposed convolution (the upsample becomes ``nn.Identity``); returns ``network``.

    For inference: the state dict changes form, so a folded network is not saved or trained. A network
    without such pairs is returned unchanged."""
    for module in list(network.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(len(module) - 1):
            convolution = module[index + 1]
            if isinstance(convolution, nn.Conv2d) and _is_resize_convolution(module[index], convolution):
                module[index + 1] = _folded(convolution)
                module[index] = nn.Identity()
    return network


def _mix32(values: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply, constants from Wellons' hash prospector) of int64 tensors
    holding values in [0, 2^32). Both constants are below 2^31, so no product leaves int64: the same bits on
    every device."""
    values = values ^ (values >> 16)
    values = (values * 0x21F0AAAD) & _MASK32
    values = values ^ (values >> 15)
    values = (values * 0x735A2D97) & _MASK32
    return values ^ (values >> 15)


def _mix32_numpy(values: np.ndarray) -> np.ndarray:
    """:func:`_mix32` on uint32 arrays (products wrap modulo 2^32 in the dtype itself): the same bits, ~7x
    faster on a CPU than torch's int64 arithmetic. Works in place on ``values``."""
    values ^= values >> 16
    values *= np.uint32(0x21F0AAAD)
    values ^= values >> 15
    values *= np.uint32(0x735A2D97)
    values ^= values >> 15
    return values


def _pixel_uniforms(seeds: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Uniforms in (0, 1) from ``hash(hash(seed ^ hash(k)))`` for pixel counters k in [start, start + count):
    (B, count) float64. On a CPU through numpy's uint32 (the hash dominates generation time otherwise),
    elsewhere in torch's int64; the bits are the same (``tests/models/test_gan_switch_networks.py``)."""
    if seeds.device.type != "cpu":
        pixels = torch.arange(start, start + count, device=seeds.device, dtype=torch.int64)
        return (_mix32(_mix32(seeds[:, None] ^ _mix32(pixels)[None, :])).double() + 0.5) / 2.0**32
    counters = _mix32_numpy(np.arange(start, start + count, dtype=np.uint32))
    hashed = _mix32_numpy(_mix32_numpy(seeds.numpy().astype(np.uint32)[:, None] ^ counters[None, :]))
    uniform = hashed.astype(np.float64)
    uniform += 0.5
    uniform *= 2.0**-32  # a power of two: the same float64 as dividing by 2^32
    return torch.from_numpy(uniform)


def latent_noise(latent: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Per-sample N(0, 1) noise maps, one (B, 1, s, s) map per size, as a deterministic function of the latent.

    Each sample's latent bits are hashed to a 32-bit seed; pixel k of the maps gets ``hash(seed ^ hash(k))``
    hashed once more, a uniform in (0, 1), and the normal quantile of it. Integer arithmetic only up to the
    quantile (in float64), so a latent gives the same maps on any device and batch composition; fresh
    latents (training) give fresh noise. Not differentiable (the noise is an input, not a function to learn).
    """
    latent = latent.detach().float().contiguous()
    device = latent.device
    bits = latent.view(torch.int32).long() & _MASK32  # (B, D)
    salts = _mix32((torch.arange(bits.shape[1], device=device, dtype=torch.int64) + _GOLDEN32) & _MASK32)
    seeds = _mix32(_mix32(bits ^ salts).sum(dim=1) & _MASK32)  # (B,)
    maps, offset = [], 0
    for size in sizes:
        uniform = _pixel_uniforms(seeds, offset, size * size)
        offset += size * size
        maps.append((torch.erfinv(2.0 * uniform - 1.0) * math.sqrt(2.0)).float().view(-1, 1, size, size))
    return maps


class NoiseInjection(nn.Module):
    """``x[:, :channels] += scale * noise`` with a learned per-channel scale starting at 0 (Karras et al. 2019).

    ``channels`` may be fewer than the input's (the output layer adds noise to the image, not the mask)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, features: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        noisy = features[:, : self.channels] + self.scale.to(features.dtype) * noise.to(features.dtype)
        if self.channels == features.shape[1]:
            return noisy
        return torch.cat([noisy, features[:, self.channels :]], dim=1)


class TanhOnImageChannels(nn.Module):
    """tanh on the first ``image_channels`` channels; the rest (the mask logits) pass unchanged."""

    def __init__(self, image_channels: int) -> None:
        super().__init__()
        self.image_channels = image_channels

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.tanh(outputs[:, : self.image_channels]), outputs[:, self.image_channels :]], dim=1)


class MinibatchStandardDeviation(nn.Module):
    """Appends one channel: the standard deviation across a group of samples (Karras et al. 2018, sec. 3).

    The batch is split into groups of ``G`` samples, G the largest divisor of the batch size not above
    ``group_size`` (4, as in the paper: 64 -> 4, 6 -> 3, 1 -> 1). Sample i belongs to group ``i mod (B / G)``
    (the strided grouping of StyleGAN's code). For each group, the population standard deviation of
    every feature at every position is taken over the group's samples, and averaged over features and
    positions into one number, broadcast as an extra (B, 1, H, W) channel to the group's samples. A
    generator that makes alike samples gives a small value a discriminator can learn to reject.

    Under data-parallel training the groups are formed within each process's rows of the global batch
    (the statistics are per rank, not gathered), so K processes compute what one process would only when
    each group is one rank's: the layer is not part of the "K processes = 1 process" guarantee.
    """

    def __init__(self, group_size: int = MINIBATCH_STD_GROUP) -> None:
        super().__init__()
        _check_positive(group_size=group_size)
        self.group_size = group_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C + 1, H, W)."""
        batch, channels, height, width = features.shape
        group = max(g for g in range(1, min(self.group_size, batch) + 1) if batch % g == 0)
        grouped = features.float().reshape(group, batch // group, channels, height, width)
        deviation = torch.sqrt(grouped.var(dim=0, unbiased=False) + 1e-8)  # (B/G, C, H, W)
        statistic = deviation.mean(dim=(1, 2, 3))  # (B/G,)
        channel = statistic.repeat(group).view(batch, 1, 1, 1).expand(batch, 1, height, width)
        return torch.cat([features, channel.to(features.dtype)], dim=1)


class ConditionalDCGANGenerator(nn.Module):
    """Latent vector + class -> (image, mask) with ``image_channels + 1`` channels (see the module docstring).

    Args:
        num_classes: number of classes (labels are 0 .. num_classes-1).
        latent_dim: size of the latent vector.
        image_size: output height and width (a power of two >= 8; 64 and 128 are the usual sizes).
        base_channels: width of the last hidden layer; earlier layers are 2x, 4x, ... up to 8x wider.
        embedding_dim: size of the learned class embedding concatenated to the latent vector.
        image_channels: image channels (1 for CT); one mask channel is added.
        upsample: "transposed" (default, DCGAN) or "resize" (nearest x2 + 3x3 convolution).
        mask_output: "tanh" (default) or "logits" for the mask channel.
        embedding_init: "dcgan" (default, N(0, 0.02)) or "unit" (N(0, 1)) for the class embedding.
        noise_inputs: per-pixel noise inputs after every x2 step and on the output's image channels.

    Cards written before these options existed lack them in their config; the defaults rebuild exactly
    the network those cards describe.
    """

    family: ClassVar[str] = "dcgan-generator"

    def __init__(
        self,
        num_classes: int,
        latent_dim: int = 128,
        image_size: int = 64,
        base_channels: int = 32,
        embedding_dim: int = 32,
        image_channels: int = 1,
        upsample: str = Upsample.TRANSPOSED.value,
        mask_output: str = MaskOutput.TANH.value,
        embedding_init: str = EmbeddingInit.DCGAN.value,
        noise_inputs: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, latent_dim=latent_dim, base_channels=base_channels,
                        embedding_dim=embedding_dim, image_channels=image_channels)
        doublings = _num_doublings(image_size)
        upsampling: Upsample = _parse_option(Upsample, upsample, "upsample")
        self.mask_output: MaskOutput = _parse_option(MaskOutput, mask_output, "mask_output")
        initialisation: EmbeddingInit = _parse_option(EmbeddingInit, embedding_init, "embedding_init")
        self.config: dict[str, Any] = {
            "num_classes": num_classes, "latent_dim": latent_dim, "image_size": image_size,
            "base_channels": base_channels, "embedding_dim": embedding_dim, "image_channels": image_channels,
            "upsample": upsampling.value, "mask_output": self.mask_output.value, "embedding_init": initialisation.value,
        }
        if noise_inputs:  # recorded only when on: cards written before the option rebuild unchanged
            self.config["noise_inputs"] = True
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.image_channels = image_channels
        self.out_channels = image_channels + 1
        # widths[i] is the width at resolution 4 * 2**i, e.g. 64x64 with base 32: 256, 128, 64, 32
        widths = [base_channels * min(MAX_WIDTH_MULTIPLIER, 2 ** (doublings - 1 - i)) for i in range(doublings)]
        self.class_embedding = nn.Embedding(num_classes, embedding_dim)
        code_width = latent_dim + embedding_dim
        if upsampling is Upsample.TRANSPOSED:
            # (B, latent + embedding, 1, 1) -> (B, widths[0], 4, 4)
            layers: list[nn.Module] = [nn.ConvTranspose2d(code_width, widths[0], 4, 1, 0, bias=False)]
        else:
            # (B, latent + embedding, 1, 1) -> (B, latent + embedding) -> (B, widths[0] * 16) -> (B, widths[0], 4, 4)
            layers = [nn.Flatten(1), nn.Linear(code_width, widths[0] * 16, bias=False), nn.Unflatten(1, (widths[0], 4, 4))]
        layers += [nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        # the sizes of the noise maps, in the order the NoiseInjection layers use them
        self.noise_sizes: list[int] = [4 * 2 ** (i + 1) for i in range(doublings)] if noise_inputs else []
        noise = (lambda channels: [NoiseInjection(channels)]) if noise_inputs else (lambda channels: [])
        for width_in, width_out in itertools.pairwise(widths):
            layers += [  # (B, width_in, s, s) -> (B, width_out, 2s, 2s)
                *self._doubling(upsampling, width_in, width_out, bias=False),
                *noise(width_out),
                nn.BatchNorm2d(width_out),
                nn.ReLU(inplace=True),
            ]
        # (B, widths[-1], size/2, size/2) -> (B, image_channels + 1, size, size)
        layers += [*self._doubling(upsampling, widths[-1], self.out_channels, bias=True), *noise(image_channels)]
        layers.append(nn.Tanh() if self.mask_output is MaskOutput.TANH else TanhOnImageChannels(image_channels))
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)
        if initialisation is EmbeddingInit.UNIT:
            nn.init.normal_(self.class_embedding.weight, 0.0, 1.0)

    @staticmethod
    def _doubling(upsampling: Upsample, width_in: int, width_out: int, *, bias: bool) -> list[nn.Module]:
        """The layers that double the resolution: (B, width_in, s, s) -> (B, width_out, 2s, 2s)."""
        if upsampling is Upsample.TRANSPOSED:
            return [nn.ConvTranspose2d(width_in, width_out, 4, 2, 1, bias=bias)]
        mode = "nearest" if upsampling is Upsample.RESIZE else "bilinear"
        return [nn.Upsample(scale_factor=2, mode=mode), nn.Conv2d(width_in, width_out, 3, 1, 1, bias=bias)]

    def forward(self, latent: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) latents and (B,) class indices -> (B, image_channels + 1, size, size)."""
        code = torch.cat([latent, self.class_embedding(labels).to(latent.dtype)], dim=1)
        if not self.noise_sizes:
            return self.main(code[:, :, None, None])
        maps = iter(latent_noise(latent, self.noise_sizes))
        features = code[:, :, None, None]
        for layer in self.main:
            features = layer(features, next(maps)) if isinstance(layer, NoiseInjection) else layer(features)
        return features


class ProjectionDiscriminator(nn.Module):
    """(image, mask) pair + class -> one raw logit per sample (projection conditioning).

    Args:
        num_classes: number of classes.
        image_size: input height and width (a power of two >= 8).
        base_channels: width of the first layer; later layers are 2x, 4x, ... up to 8x wider.
        in_channels: image channels + mask channel (2 for CT).
        normalization: "spectral" (default), "batch", "layer", "instance" or "none".
        minibatch_std: add the minibatch standard-deviation channel before the last strided convolution.
    """

    family: ClassVar[str] = "projection-discriminator"
    default_normalization: ClassVar[str] = Normalization.SPECTRAL.value

    def __init__(
        self,
        num_classes: int,
        image_size: int = 64,
        base_channels: int = 32,
        in_channels: int = 2,
        normalization: str | None = None,
        minibatch_std: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, base_channels=base_channels, in_channels=in_channels)
        doublings = _num_doublings(image_size)
        norm = parse_normalization(normalization or self.default_normalization)
        self._check_normalization(norm)
        self.config: dict[str, Any] = {
            "num_classes": num_classes, "image_size": image_size, "base_channels": base_channels,
            "in_channels": in_channels, "normalization": norm.value, "minibatch_std": minibatch_std,
        }
        self.num_classes = num_classes
        # widths[i] is the width at resolution size / 2**(i+1), e.g. 64x64 with base 32: 32, 64, 128, 256
        widths = [base_channels * min(MAX_WIDTH_MULTIPLIER, 2**i) for i in range(doublings)]
        # The minibatch-std channel joins the input of the last strided convolution (+1 channel there).
        statistic: list[nn.Module] = [MinibatchStandardDeviation()] if minibatch_std else []
        extra = int(minibatch_std)
        first_is_last = doublings == 1
        layers: list[nn.Module] = [  # (B, in, size, size) -> (B, widths[0], size/2, size/2); no norm on the input layer
            *(statistic if first_is_last else []),
            nn.Conv2d(in_channels + (extra if first_is_last else 0), widths[0], 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths), start=2):
            last = index == doublings
            # (B, width_in, s, s) -> (B, width_out, s/2, s/2)
            layers += statistic if last else []
            layers.append(nn.Conv2d(width_in + (extra if last else 0), width_out, 4, 2, 1, bias=norm is not Normalization.BATCH))
            if norm in (Normalization.BATCH, Normalization.LAYER, Normalization.INSTANCE):
                layers.append(feature_normalization(norm, width_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.features = nn.Sequential(*layers)  # ends at (B, widths[-1], 4, 4)
        self.linear = nn.Linear(widths[-1], 1)
        self.class_embedding = nn.Embedding(num_classes, widths[-1])
        self.apply(dcgan_init)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear | nn.Embedding):
                weight_normalization(norm, module)  # in place: registers the parametrisation on module

    def _check_normalization(self, norm: Normalization) -> None:
        """Subclasses refuse normalisations that break their algorithm."""

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, size, size) pairs and (B,) class indices -> (B,) raw logits."""
        features = self.features(images).sum(dim=(2, 3))  # global sum pooling: (B, C)
        projection = (self.class_embedding(labels).to(features.dtype) * features).sum(dim=1)
        return self.linear(features).squeeze(1) + projection
