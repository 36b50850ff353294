"""``augment inspect``: what an augmentor file holds, and an image grid to look at it.

:func:`inspect_file` validates the file against the schema and summarises it (counts per class and
source, HU statistics overall, per class and inside the masks, provenance, patients);
:func:`write_grid` draws a PNG with one row per class, images in the file's HU window and mask
contours on top; :func:`print_summary` renders the summary as rich tables. Statistics stream over
the file in blocks with exact integer histograms (images are int16 HU), so memory stays flat in N and
percentiles are exact.

Evaluation reports (``augment inspect report.json``) are shown by the evaluation package:
:func:`inspect_report` hands them to ``evaluation.report.inspect_report(path)`` when it exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.atomic import temporary_path
from augmentor.data.reader import H5File
from augmentor.errors import AugmentorError, SchemaError
from augmentor.progress import progress_bar

PERCENTILES = (1, 5, 50, 95, 99)
HISTOGRAM_OFFSET = 32768  # int16 HU -> bin index 0..65535
HISTOGRAM_BINS = 65536
BLOCK = 512
CONTOUR_COLOURS = ("#ff3b30", "#34c759", "#0a84ff", "#ffd60a", "#bf5af2", "#ff9f0a")


@dataclass(frozen=True)
class HUStats:
    """Statistics of a set of HU values (exact: computed from an integer histogram)."""

    pixels: int
    minimum: float
    maximum: float
    mean: float
    std: float
    percentiles: dict[int, float]

    @classmethod
    def from_histogram(cls, histogram: np.ndarray) -> HUStats | None:
        """Statistics of the values counted in a 65 536-bin int16 histogram; None when empty."""
        total = int(histogram.sum())
        if total == 0:
            return None
        values = np.arange(HISTOGRAM_BINS, dtype=np.float64) - HISTOGRAM_OFFSET
        counts = histogram.astype(np.float64)
        mean = float((values * counts).sum() / total)
        variance = float((((values - mean) ** 2) * counts).sum() / total)
        nonzero = np.flatnonzero(histogram)
        cumulative = np.cumsum(histogram)
        # Inverted-CDF percentile: the smallest value with at least q% of the pixels at or below it.
        percentiles = {
            q: float(np.searchsorted(cumulative, q / 100.0 * total, side="left") - HISTOGRAM_OFFSET) for q in PERCENTILES
        }
        return cls(
            pixels=total,
            minimum=float(nonzero[0] - HISTOGRAM_OFFSET),
            maximum=float(nonzero[-1] - HISTOGRAM_OFFSET),
            mean=mean,
            std=variance**0.5,
            percentiles=percentiles,
        )


@dataclass(frozen=True)
class InspectSummary:
    """What :func:`inspect_file` found.

    Attributes:
        path: the file.
        valid: whether it follows the schema; ``problem`` says what is wrong when not (then the
            other fields are empty).
        counts_per_class: samples per class name, in class order.
        counts_per_source: samples per source (one source per file).
        hu: HU statistics of every pixel; ``hu_per_class`` per class; ``hu_in_mask_per_class`` of the
            pixels inside the masks (the lesions), per class.
        lesion_diameter_mm_per_class: per class, the 25th, 50th and 75th percentiles over samples of the
            lesion's equivalent diameter (of a disc with the mask's area, at the file's pixel spacing), for
            files with binary masks (background, one structure); empty for multi-label masks. A synthetic
            set whose lesions are larger or smaller than the real ones it should match shows here.
        provenance: a short summary of the provenance record.
        patients: number of distinct patient ids (None when the file has none).
        grid: the grid PNG written, if any.
    """

    path: Path
    valid: bool
    problem: str | None = None
    num_samples: int = 0
    image_shape: tuple[int, int, int] = (0, 0, 0)
    modality: str = ""
    source: str = ""
    class_names: tuple[str, ...] = ()
    mask_label_names: tuple[str, ...] = ()
    pixel_spacing_mm: tuple[float, float] = (0.0, 0.0)
    hu_window: tuple[float, float] = (0.0, 0.0)
    counts_per_class: dict[str, int] = field(default_factory=dict)
    counts_per_source: dict[str, int] = field(default_factory=dict)
    hu: HUStats | None = None
    hu_per_class: dict[str, HUStats | None] = field(default_factory=dict)
    hu_in_mask_per_class: dict[str, HUStats | None] = field(default_factory=dict)
    lesion_diameter_mm_per_class: dict[str, tuple[float, float, float] | None] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    patients: int | None = None
    grid: Path | None = None


def _diameter_quartiles(pixels: np.ndarray, spacing_mm: tuple[float, float]) -> tuple[float, float, float] | None:
    """Quartiles of the equivalent diameters (mm) of masks of ``pixels`` pixels each; None for no samples."""
    if pixels.size == 0:
        return None
    diameters = 2.0 * np.sqrt(pixels * spacing_mm[0] * spacing_mm[1] / np.pi)
    low, median, high = np.percentile(diameters, [25, 50, 75])
    return float(low), float(median), float(high)


def default_grid_path(path: str | Path) -> Path:
    """``FILE.h5`` -> ``FILE.png`` next to it."""
    return Path(path).with_suffix(".png")


def _provenance_summary(provenance: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        key: provenance[key] for key in ("tool_version", "created", "command", "seed") if provenance.get(key) is not None
    }
    model = provenance.get("model")
    if isinstance(model, dict):
        summary["model"] = model.get("name")
        for key in ("weights_sha256", "trained_on_sha256"):
            if model.get(key):
                summary[key] = str(model[key])[:12]
    inputs = provenance.get("inputs")
    if isinstance(inputs, dict) and inputs:
        summary["inputs"] = {name: str(digest)[:12] for name, digest in inputs.items()}
    return summary


def inspect_file(
    path: str | Path,
    grid: Path | None = None,
    per_class: int = 8,
    *,
    make_grid: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> InspectSummary:
    """Validate and summarise an augmentor file, and draw its image grid.

    Args:
        path: the ``.h5`` file.
        grid: where to write the grid PNG; default ``FILE.png`` next to the file.
        per_class: images per class in the grid.
        make_grid: False skips the grid.
        seed: which samples the grid shows.
        progress: draw a progress bar over the statistics pass.

    Returns:
        An :class:`InspectSummary`; ``valid`` is False (with ``problem``) for a file that breaks the
        schema or has samples that cannot be read. A missing file raises :class:`~augmentor.errors.AugmentorError`.
    """
    file_path = Path(path)
    try:
        file = H5File(file_path)
    except SchemaError as error:
        return InspectSummary(path=file_path, valid=False, problem=str(error))
    info = file.info
    try:
        labels = file.labels()
        num_classes = len(info.class_names)
        all_pixels = np.zeros((num_classes, HISTOGRAM_BINS), dtype=np.int64)
        mask_pixels = np.zeros((num_classes, HISTOGRAM_BINS), dtype=np.int64)
        lesion_pixels = np.zeros(len(file), dtype=np.int64)  # per sample
        with progress_bar("inspect", total=len(file), enabled=progress) as advance:
            for start in range(0, len(file), BLOCK):
                stop = min(start + BLOCK, len(file))
                block_images, block_masks, _ = file.read(np.arange(start, stop))
                images = block_images.astype(np.int32) + HISTOGRAM_OFFSET  # (B, C, H, W)
                inside = block_masks > 0  # (B, H, W)
                lesion_pixels[start:stop] = inside.reshape(len(inside), -1).sum(axis=1)
                block_labels = labels[start:stop]
                for label in np.unique(block_labels):
                    chosen = block_labels == label
                    selected = images[chosen]
                    in_lesion = np.broadcast_to(inside[chosen][:, np.newaxis], selected.shape)
                    all_pixels[label] += np.bincount(selected.ravel(), minlength=HISTOGRAM_BINS)
                    mask_pixels[label] += np.bincount(selected[in_lesion], minlength=HISTOGRAM_BINS)
                advance(stop - start)
        patients = len(set(file.patient_ids().tolist())) if info.has_patient_ids else None
    except SchemaError as error:  # damaged samples: the file is not valid either
        return InspectSummary(path=file_path, valid=False, problem=str(error))
    finally:
        file.close()
    counts = np.bincount(labels, minlength=len(info.class_names))
    grid_path = None
    if make_grid:
        grid_path = write_grid(file_path, grid, per_class=per_class, seed=seed)
    return InspectSummary(
        path=file_path,
        valid=True,
        num_samples=info.num_samples,
        image_shape=info.image_shape,
        modality=info.modality,
        source=info.source.value,
        class_names=info.class_names,
        mask_label_names=info.mask_label_names,
        pixel_spacing_mm=info.pixel_spacing_mm,
        hu_window=info.hu_window,
        counts_per_class={name: int(counts[i]) for i, name in enumerate(info.class_names)},
        counts_per_source={info.source.value: info.num_samples},
        hu=HUStats.from_histogram(all_pixels.sum(axis=0)),
        hu_per_class={name: HUStats.from_histogram(all_pixels[i]) for i, name in enumerate(info.class_names)},
        hu_in_mask_per_class={name: HUStats.from_histogram(mask_pixels[i]) for i, name in enumerate(info.class_names)},
        lesion_diameter_mm_per_class=(
            {name: _diameter_quartiles(lesion_pixels[labels == i], info.pixel_spacing_mm) for i, name in enumerate(info.class_names)}
            if len(info.mask_label_names) == 2 else {}
        ),
        provenance=_provenance_summary(info.provenance),
        patients=patients,
        grid=grid_path,
    )


def write_grid(path: str | Path, out_png: Path | None = None, per_class: int = 8, seed: int = 0) -> Path:
    """Draw an image grid: one row per class, ``per_class`` random samples, mask contours on top.

    Images are shown in the file's HU window (values below it black, above it white), as a
    radiologist would read them; each mask label value gets its own contour colour.

    Args:
        path: the augmentor file.
        out_png: where to write; default ``FILE.png`` next to the file (replaced if it exists).
        per_class: columns.
        seed: which samples are drawn.

    Returns:
        The PNG's path.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

    if per_class < 1:
        raise AugmentorError(f"--per-class must be at least 1, got {per_class}")
    file = H5File(path)
    info = file.info
    target = Path(out_png) if out_png is not None else default_grid_path(file.path)
    if not target.parent.exists():
        raise AugmentorError(f"output directory {target.parent} does not exist")
    generator = np.random.default_rng(seed)
    try:
        labels = file.labels()
        rows = len(info.class_names)
        figure = Figure(figsize=(1.3 * per_class + 1.6, 1.3 * rows + 0.6), dpi=100)
        axes = figure.subplots(rows, per_class, squeeze=False)
        low, high = info.hu_window
        for row, class_name in enumerate(info.class_names):
            members = np.flatnonzero(labels == row)
            chosen = np.sort(generator.choice(members, size=min(per_class, members.size), replace=False)) if members.size else members
            images, masks, _ = file.read(chosen) if chosen.size else (None, None, None)
            for column in range(per_class):
                axis = axes[row, column]
                axis.set_axis_off()
                if images is None or masks is None or column >= chosen.size:
                    continue
                axis.imshow(images[column, 0], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
                for value_index, value in enumerate(v for v in np.unique(masks[column]) if v != 0):
                    axis.contour(masks[column] == value, levels=[0.5], colors=[CONTOUR_COLOURS[value_index % len(CONTOUR_COLOURS)]], linewidths=0.8)
            axes[row, 0].text(
                -0.08, 0.5, f"{class_name}\n(n={members.size})", transform=axes[row, 0].transAxes,
                ha="right", va="center", fontsize=9,
            )
        figure.suptitle(f"{file.path.name}: {info.source.value}, HU window [{low:g}, {high:g}]", fontsize=10)
        figure.subplots_adjust(left=1.4 / (1.3 * per_class + 1.6), right=0.99, top=1 - 0.45 / (1.3 * rows + 0.6), bottom=0.02, wspace=0.05, hspace=0.08)
        temporary = temporary_path(target)
        try:
            figure.savefig(temporary, format="png")
            os.replace(temporary, target)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise AugmentorError(f"{target}: cannot write the grid ({error.strerror or error})") from None
    finally:
        file.close()
    return target


def print_summary(summary: InspectSummary, console: Any = None) -> None:
    """Print a summary as rich tables (file, classes with HU statistics, provenance)."""
    from rich.console import Console
    from rich.table import Table

    out = console or Console()
    if not summary.valid:
        out.print(f"[red]invalid[/red] {summary.path}: {summary.problem}")
        return
    overview = Table(title=str(summary.path), show_header=False, title_justify="left")
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("schema", "[green]valid[/green]")
    overview.add_row("samples", f"{summary.num_samples} x {summary.image_shape} ({summary.modality})")
    overview.add_row("source", ", ".join(f"{name}: {count}" for name, count in summary.counts_per_source.items()))
    overview.add_row("patients", "-" if summary.patients is None else str(summary.patients))
    overview.add_row("pixel spacing", f"{summary.pixel_spacing_mm[0]:g} x {summary.pixel_spacing_mm[1]:g} mm")
    overview.add_row("HU window", f"[{summary.hu_window[0]:g}, {summary.hu_window[1]:g}]")
    overview.add_row("mask labels", ", ".join(summary.mask_label_names))
    if summary.hu is not None:
        overview.add_row("HU (all)", _describe(summary.hu))
    if summary.grid is not None:
        overview.add_row("grid", str(summary.grid))
    out.print(overview)

    classes = Table(title="classes", title_justify="left")
    for heading in ("class", "samples", "HU mean ± std", "min", "p1", "p50", "p99", "max", "lesion HU mean ± std"):
        classes.add_column(heading, justify="left" if heading == "class" else "right")
    for name in summary.class_names:
        stats, lesion = summary.hu_per_class.get(name), summary.hu_in_mask_per_class.get(name)
        cells = [name, str(summary.counts_per_class.get(name, 0))]
        if stats is None:
            cells += ["-"] * 6
        else:
            cells += [f"{stats.mean:.1f} ± {stats.std:.1f}", f"{stats.minimum:g}", f"{stats.percentiles[1]:g}",
                      f"{stats.percentiles[50]:g}", f"{stats.percentiles[99]:g}", f"{stats.maximum:g}"]
        cells.append("-" if lesion is None else f"{lesion.mean:.1f} ± {lesion.std:.1f}")
        classes.add_row(*cells)
    out.print(classes)

    if summary.lesion_diameter_mm_per_class:
        sizes = Table(title="lesion diameter, mm (disc of equal area)", title_justify="left")
        for heading in ("class", "p25", "median", "p75"):
            sizes.add_column(heading, justify="left" if heading == "class" else "right")
        for name in summary.class_names:
            quartiles = summary.lesion_diameter_mm_per_class.get(name)
            sizes.add_row(name, *(["-"] * 3 if quartiles is None else [f"{value:.1f}" for value in quartiles]))
        out.print(sizes)

    provenance = Table(title="provenance", show_header=False, title_justify="left")
    provenance.add_column(style="bold")
    provenance.add_column()
    for key, value in summary.provenance.items():
        provenance.add_row(key, ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else str(value))
    out.print(provenance)


def _describe(stats: HUStats) -> str:
    return (
        f"mean {stats.mean:.1f} ± {stats.std:.1f}, min {stats.minimum:g}, p1 {stats.percentiles[1]:g}, "
        f"median {stats.percentiles[50]:g}, p99 {stats.percentiles[99]:g}, max {stats.maximum:g}"
    )


def inspect_report(path: str | Path) -> Any:
    """Show an evaluation report (``report.json``): the evaluation package owns that format.

    Dispatches to ``evaluation.report.inspect_report(path)`` when that function exists; until then a
    one-line error.
    """
    report_path = Path(path)
    if not report_path.is_file():
        raise AugmentorError(f"{report_path}: file not found")
    try:
        from evaluation.report import inspect_report as show_report  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise AugmentorError(
            f"{report_path}: evaluation reports cannot be inspected yet (evaluation.report.inspect_report is missing)"
        ) from None
    return show_report(report_path)
