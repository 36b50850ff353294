"""The report's figures (matplotlib, object-oriented API: no pyplot state), each returned as PNG bytes.

Every function takes plain numbers from the report JSON (or image arrays) so a figure can be redrawn from
``report.json`` alone.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ARM_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def _label(metric: str) -> str:
    return metric.replace("_macro", " (macro)").replace("_mean", " (mean)").replace("_", " ").replace(":", ": ")


def forest_plot(section: Mapping[str, Any], metric_names: Sequence[str], confidence: float = 0.95) -> bytes | None:
    """Paired differences vs the baseline arm with their intervals, one panel per metric."""
    paired = {arm: values for arm, values in section.get("paired_differences", {}).items() if arm != "baseline"}
    if not paired:
        return None
    arms = list(paired)
    figure = Figure(figsize=(3.2 * len(metric_names), 0.45 * len(arms) + 1.4))
    axes = figure.subplots(1, len(metric_names), sharey=True, squeeze=False)[0]
    positions = np.arange(len(arms))[::-1]
    for axis, metric in zip(axes, metric_names, strict=True):
        for y, arm in zip(positions, arms, strict=True):
            value = paired[arm][metric]
            if value["estimate"] is None:
                continue
            low = value["low"] if value["low"] is not None else value["estimate"]
            high = value["high"] if value["high"] is not None else value["estimate"]
            significant = value["p_value"] is not None and value["p_value"] < 1.0 - confidence
            axis.errorbar(value["estimate"], y, xerr=[[value["estimate"] - low], [high - value["estimate"]]], fmt="o",
                          color="#d62728" if significant else "#1f77b4", capsize=3)
        axis.axvline(0.0, color="grey", linewidth=1, linestyle="--")
        axis.set_title(f"Δ {_label(metric)}", fontsize=9)
        axis.set_yticks(positions, arms, fontsize=8)
        axis.tick_params(axis="x", labelsize=8)
    figure.suptitle(f"Paired difference vs '{section['paired_differences']['baseline']}' ({confidence:.0%} CI; red: p < {1.0 - confidence:.2g})", fontsize=10)
    return _png(figure)


def sweep_curve(section: Mapping[str, Any], metric_names: Sequence[str]) -> bytes | None:
    """Metric vs amount of added data (the classic arm is x0): synthetic and, where run, oracle (real lesions of
    new patients, the ceiling), with the real-only arm as a band."""
    curves = [
        (kind, label, colour, sorted([arm for arm in section["arms"] if arm["kind"] == kind], key=lambda a: a["ratio"]))
        for kind, label, colour in (("classic+synthetic", "classic + synthetic", "#2ca02c"), ("classic+oracle", "classic + oracle (new patients)", "#9467bd"))
    ]
    curves = [curve for curve in curves if curve[3]]
    if not curves:
        return None
    by_name = section["metrics"]
    figure = Figure(figsize=(3.2 * len(metric_names), 3.0))
    axes = figure.subplots(1, len(metric_names), squeeze=False)[0]
    for axis, metric in zip(axes, metric_names, strict=True):
        ticks: set[float] = set()
        for _, label, colour, sweep in curves:
            points = [(0.0, "classic")] if "classic" in by_name else []
            points += [(arm["ratio"], arm["name"]) for arm in sweep]
            xs = [x for x, name in points if by_name[name][metric]["estimate"] is not None]
            values = [by_name[name][metric] for _, name in points if by_name[name][metric]["estimate"] is not None]
            if not values:
                continue
            ticks |= set(xs)
            estimates = np.array([v["estimate"] for v in values])
            lows = np.array([v["low"] if v["low"] is not None else v["estimate"] for v in values])
            highs = np.array([v["high"] if v["high"] is not None else v["estimate"] for v in values])
            axis.errorbar(xs, estimates, yerr=[estimates - lows, highs - estimates], fmt="o-", capsize=3, color=colour, label=label)
        if "real" in by_name and by_name["real"][metric]["estimate"] is not None:
            real = by_name["real"][metric]
            axis.axhline(real["estimate"], color="#1f77b4", linewidth=1, label="real only")
            if real["low"] is not None:
                axis.axhspan(real["low"], real["high"], color="#1f77b4", alpha=0.12)
        axis.set_xscale("symlog", linthresh=1.0)
        axis.set_xticks(sorted(ticks), [f"×{x:g}" for x in sorted(ticks)], fontsize=8)
        axis.set_xlabel("added per real sample (per class)", fontsize=8)
        axis.set_title(_label(metric), fontsize=9)
        axis.tick_params(axis="y", labelsize=8)
    axes[0].legend(fontsize=7)
    return _png(figure)


def roc_curves(section: Mapping[str, Any]) -> bytes | None:
    """One-vs-rest ROC curves per class, one line per arm (test predictions of all seeds pooled)."""
    roc = section.get("roc", {})
    if not roc:
        return None
    classes = section["class_names"]
    figure = Figure(figsize=(3.2 * len(classes), 3.2))
    axes = figure.subplots(1, len(classes), squeeze=False)[0]
    for axis, name in zip(axes, classes, strict=True):
        for k, (arm, curves) in enumerate(roc.items()):
            curve = curves.get(name, {})
            if curve.get("fpr"):
                auc = section["metrics"][arm].get(f"auc:{name}", {}).get("estimate")
                axis.plot(curve["fpr"], curve["tpr"], color=ARM_COLOURS[k % len(ARM_COLOURS)], linewidth=1.2,
                          label=f"{arm} ({auc:.3f})" if auc is not None else arm)
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
        axis.set_title(f"{name} vs rest", fontsize=9)
        axis.set_xlabel("1 - specificity", fontsize=8)
        axis.set_ylabel("sensitivity", fontsize=8)
        axis.legend(fontsize=6, loc="lower right")
    return _png(figure)


def confusion_matrices(section: Mapping[str, Any]) -> bytes | None:
    """Row-normalised confusion matrices per arm (test predictions of all seeds summed)."""
    matrices = section.get("confusion_matrices", {})
    if not matrices:
        return None
    classes = section["class_names"]
    columns = min(4, len(matrices))
    rows = -(-len(matrices) // columns)
    figure = Figure(figsize=(2.8 * columns, 2.7 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis, (arm, matrix) in zip(axes, matrices.items(), strict=False):
        counts = np.asarray(matrix, dtype=np.float64)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axis.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                axis.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if share[i, j] > 0.6 else "black")
        axis.set_xticks(range(len(classes)), classes, fontsize=6, rotation=30)
        axis.set_yticks(range(len(classes)), classes, fontsize=6)
        axis.set_title(arm, fontsize=8)
    for axis in axes[len(matrices) :]:
        axis.axis("off")
    figure.supxlabel("predicted", fontsize=8)
    figure.supylabel("true", fontsize=8)
    return _png(figure)


def image_grid(rows: Sequence[tuple[str, np.ndarray]]) -> bytes | None:
    """Rows of images in [-1, 1] (first channel), each row labelled."""
    rows = [(label, images) for label, images in rows if len(images)]
    if not rows:
        return None
    columns = max(len(images) for _, images in rows)
    figure = Figure(figsize=(1.1 * columns + 1.2, 1.15 * len(rows)))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            axis = axes[r, c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c < len(images):
                axis.imshow(images[c][0], cmap="gray", vmin=-1, vmax=1)
            else:
                axis.axis("off")
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    return _png(figure)


def memorisation_histogram(distances: Mapping[str, np.ndarray], thresholds: Mapping[str, float]) -> bytes:
    """Nearest-training-neighbour distances of synthetic vs real test samples, pixel and feature space."""
    figure = Figure(figsize=(9, 3))
    axes = figure.subplots(1, 2)
    for axis, space, title in ((axes[0], "pixel", "pixel space (RMS, [-1, 1] units)"), (axes[1], "feature", "feature space (CNN embedding)")):
        test, synthetic = distances[f"test_{space}"], distances[f"synthetic_{space}"]
        values = np.concatenate([test, synthetic])
        bins = np.linspace(float(values.min()), float(values.max()) + 1e-9, 40) if values.size else 10
        axis.hist(test, bins=bins, density=True, alpha=0.55, color="#1f77b4", label="real test → GAN training set")
        axis.hist(synthetic, bins=bins, density=True, alpha=0.55, color="#ff7f0e", label="synthetic → GAN training set")
        axis.axvline(thresholds[space], color="#d62728", linestyle="--", linewidth=1, label="flag threshold")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("distance to nearest training sample", fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    return _png(figure)


def training_curves(section: Mapping[str, Any]) -> bytes | None:
    """Validation loss over steps for every (arm, seed): what early stopping saw."""
    training = section.get("training", {})
    if not training:
        return None
    figure = Figure(figsize=(7, 3.2))
    axis = figure.subplots()
    for k, (arm, runs) in enumerate(training.items()):
        for run_index, run in enumerate(runs):
            offset = 0
            for stage in run["stages"]:
                history = np.asarray(stage["history"], dtype=np.float64)
                if history.size:
                    axis.plot(history[:, 0] + offset, history[:, 1], color=ARM_COLOURS[k % len(ARM_COLOURS)], alpha=0.6, linewidth=0.9,
                              label=arm if run_index == 0 and stage is run["stages"][0] else None)
                offset += stage["steps"]
    axis.set_xlabel("step", fontsize=8)
    axis.set_ylabel("validation loss", fontsize=8)
    axis.legend(fontsize=6)
    axis.tick_params(labelsize=7)
    return _png(figure)
