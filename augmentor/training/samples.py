"""Sample grids: a PNG per checkpoint of what the generator makes for each class (image + mask contour).

Rows are classes, columns are fixed latent vectors (the same throughout a run, so successive grids show
how the same samples evolve). Each cell is the image channel in grey with the mask's outline in red.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from augmentor.atomic import temporary_path
from augmentor.training.ema import recalibrate_batch_norm

MIN_CELL_PIXELS = 128
LABEL_MARGIN = 96
CONTOUR_RGB = (255, 48, 48)


def latent_batches(
    latent_dim: int, num_classes: int, batch_size: int, num_batches: int, seed: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Seeded (latents, labels) batches with the classes in turn (for BatchNorm statistics)."""
    random = torch.Generator().manual_seed(seed)
    for index in range(num_batches):
        latents = torch.randn(batch_size, latent_dim, generator=random)
        labels = (torch.arange(batch_size) + index * batch_size) % num_classes
        yield latents.to(device), labels.to(device)


def with_standing_statistics(generator: nn.Module, batch_size: int, num_batches: int, seed: int) -> nn.Module:
    """A copy of ``generator`` in eval mode whose BatchNorm statistics are averaged over seeded latents.

    Runs of the copy never touch the original (so sampling cannot change a training run).
    """
    device = next(generator.parameters()).device
    copied = copy.deepcopy(generator)
    latent_dim, num_classes = getattr(copied, "latent_dim"), getattr(copied, "num_classes")  # noqa: B009
    batches = latent_batches(int(latent_dim), int(num_classes), batch_size, num_batches, seed, device)
    return recalibrate_batch_norm(copied, batches)


def outline(masks: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool masks -> their inner boundary pixels (mask minus its 3x3 erosion)."""
    solid = masks.float()
    eroded = -F.max_pool2d(-F.pad(solid, (1, 1, 1, 1), value=1.0), 3, stride=1)
    return masks & (eroded < 0.5)


@torch.no_grad()
def render_grid(pairs: torch.Tensor, class_names: Sequence[str], image_channels: int = 1) -> Image.Image:
    """(K * M, C + 1, H, W) generator outputs, K classes of M samples in order -> an RGB grid image."""
    rows = len(class_names)
    columns = pairs.shape[0] // rows
    height, width = pairs.shape[-2:]
    scale = max(1, -(-MIN_CELL_PIXELS // max(height, width)))
    image = ((pairs[:, :1].float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    masks = pairs[:, image_channels : image_channels + 1] > 0
    # Enlarge first, then outline: a one-pixel contour at display size leaves the lesion itself visible.
    image, masks = (t.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3) for t in (image, masks))
    rgb = image.repeat(1, 3, 1, 1)
    contour = torch.tensor(CONTOUR_RGB, dtype=torch.uint8, device=rgb.device).view(1, 3, 1, 1)
    rgb = torch.where(outline(masks), contour, rgb).cpu()
    cell_h, cell_w, gap = height * scale, width * scale, 2
    canvas = np.full((rows * (cell_h + gap) + gap, LABEL_MARGIN + columns * (cell_w + gap) + gap, 3), 32, dtype=np.uint8)
    for index in range(rows * columns):
        row, column = divmod(index, columns)
        top, left = gap + row * (cell_h + gap), LABEL_MARGIN + gap + column * (cell_w + gap)
        canvas[top : top + cell_h, left : left + cell_w] = rgb[index].permute(1, 2, 0).numpy()
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for row, name in enumerate(class_names):
        draw.text((4, gap + row * (cell_h + gap) + cell_h // 2 - 5), name[:14], fill=(230, 230, 230))
    return picture


class SampleGrid:
    """Writes ``samples/step-XXXXXXXX.png`` from a generator, with fixed latents per class.

    Args:
        directory: where the PNGs go.
        class_names: one row per class.
        latent_dim: the generator's latent size.
        per_class: samples (columns) per class.
        seed: seed of the fixed latents and of the BatchNorm statistics batches.
        statistics_batches: batches of ``statistics_batch_size`` latents for standing BatchNorm statistics.
    """

    def __init__(
        self,
        directory: Path,
        class_names: Sequence[str],
        latent_dim: int,
        *,
        per_class: int = 8,
        seed: int = 0,
        statistics_batches: int = 8,
        statistics_batch_size: int = 64,
        image_channels: int = 1,
    ) -> None:
        self.directory = directory
        self.class_names = tuple(class_names)
        self.seed = seed
        self.statistics_batches = statistics_batches
        self.statistics_batch_size = statistics_batch_size
        self.image_channels = image_channels
        random = torch.Generator().manual_seed(seed)
        self.latents = torch.randn(per_class, latent_dim, generator=random).repeat(len(self.class_names), 1)
        self.labels = torch.arange(len(self.class_names)).repeat_interleave(per_class)

    @torch.no_grad()
    def __call__(self, generator: nn.Module, step: int) -> Path:
        device = next(generator.parameters()).device
        network = with_standing_statistics(generator, self.statistics_batch_size, self.statistics_batches, self.seed + 1)
        pairs = network(self.latents.to(device), self.labels.to(device))
        picture = render_grid(pairs, self.class_names, self.image_channels)
        return save_step_png(picture, self.directory, step)


def save_step_png(picture: Image.Image, directory: Path, step: int) -> Path:
    """Write a rendered grid as ``directory/step-XXXXXXXX.png`` atomically (aside, then renamed)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:08d}.png"
    temporary = temporary_path(path)
    try:
        picture.save(temporary, format="PNG")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


class CycleSampleGrid:
    """Writes ``samples/step-XXXXXXXX.png`` of a CycleGAN: rows A, A->B, A->B->A, B, B->A, B->A->B.

    Columns are fixed whole slices of each domain (the same throughout a run). The generators are fully
    convolutional and have no running statistics (instance norm), so sampling them in place under
    ``no_grad`` draws nothing and changes nothing in the run.

    Args:
        directory: where the PNGs go.
        generator_ab, generator_ba: the two generators (read at each call: they are the training ones).
        images_a, images_b: (K, C, H, W) fixed slices of each domain in [-1, 1].
    """

    ROWS = ("A", "A>B", "A>B>A", "B", "B>A", "B>A>B")

    def __init__(self, directory: Path, generator_ab: nn.Module, generator_ba: nn.Module, images_a: torch.Tensor, images_b: torch.Tensor) -> None:
        self.directory = directory
        self.generator_ab = generator_ab
        self.generator_ba = generator_ba
        self.images_a = images_a
        self.images_b = images_b

    @torch.no_grad()
    def __call__(self, network: nn.Module, step: int) -> Path:
        device = next(self.generator_ab.parameters()).device
        a, b = self.images_a.to(device), self.images_b.to(device)
        a_to_b, b_to_a = self.generator_ab(a).float(), self.generator_ba(b).float()
        rows = [a, a_to_b, self.generator_ba(a_to_b).float(), b, b_to_a, self.generator_ab(b_to_a).float()]
        images = torch.cat([row[:, :1].float().cpu() for row in rows])
        no_mask = torch.full_like(images, -1.0)  # nothing to outline
        picture = render_grid(torch.cat([images, no_mask], dim=1), self.ROWS)
        return save_step_png(picture, self.directory, step)
