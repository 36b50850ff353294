"""The report: ``report.json`` (every number), ``report.html`` (one self-contained page, figures inline as
base64 PNG), ``predictions.npz`` (per-seed test outputs, from which every statistic can be recomputed),
and :func:`print_headline` for ``augment inspect report.json``.

JSON layout (``format`` = "augmentor-evaluation-report", ``format_version`` = 1): ``name``, ``created``,
``runtime_s``, ``recipe`` (resolved), ``versions``, ``inputs`` (files with SHA-256, cohort, model),
``leakage``, ``split``, ``seeds``, ``statistics`` (method), ``classification`` / ``segmentation`` (``arms``,
``metric_names``, ``headline_metrics``, ``metrics`` {arm: {metric: {estimate, low, high, per_seed}}},
``paired_differences`` {baseline, arm: {metric: {estimate, low, high, p_value}}} (against real;
``paired_differences_vs_classic`` the same against classic augmentation), ``paired_differences_between``
[{arm, baseline, differences: {metric: {estimate, low, high, p_value, seeds_higher}}}] (the recipe's
``statistics.pairs``, when it names any), ``roc``,
``confusion_matrices``, ``training``), ``fidelity``, ``memorisation``, ``files``. Undefined numbers are null.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.atomic import write_bytes_atomic
from augmentor.errors import AugmentorError

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
PREDICTIONS = "predictions.npz"
FORMAT = "augmentor-evaluation-report"
FORMAT_VERSION = 1
SECTIONS = (
    ("summary", "Summary"),
    ("headline", "Headline: classification"),
    ("efficiency", "Augmentation efficiency"),
    ("paired", "Paired differences"),
    ("sweep", "Amount of synthetic data"),
    ("roc", "ROC curves"),
    ("confusion", "Confusion matrices"),
    ("per-class", "Per-class sensitivity, specificity, AUC"),
    ("segmentation", "Segmentation"),
    ("images", "Real vs synthetic samples"),
    ("fidelity", "Fidelity"),
    ("memorisation", "Memorisation audit"),
    ("training", "Training"),
    ("provenance", "Provenance"),
    ("methods", "Methods"),
)


def json_ready(value: Any, significant: int | None = None) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN and infinities to null, tuples to lists, paths to text;
    floats rounded to ``significant`` digits when given."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v, significant) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v, significant) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist(), significant)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return None
        return float(f"{float(value):.{significant}g}") if significant else float(value)
    if isinstance(value, np.generic):  # numpy bools and the like
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


# ------------------------------------------------------------------------------------------- html ----


def format_interval(value: Mapping[str, Any] | None, *, signed: bool = False, digits: int = 3, empty: str = "–") -> str:
    """An estimate with its interval as text: ``0.717 [0.680, 0.755]`` (``signed``: ``+0.012 [-0.030, +0.054]``),
    with the p-value when the entry has one; ``empty`` when there is no estimate."""
    if not value or value.get("estimate") is None:
        return empty
    form = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = form.format(value["estimate"])
    if value.get("low") is not None and value.get("high") is not None:
        text += f" [{form.format(value['low'])}, {form.format(value['high'])}]"
    if value.get("p_value") is not None:
        text += f", p = {value['p_value']:.3g}"
    return text


def format_pair(value: Mapping[str, Any] | None, seeds: int, *, empty: str = "–") -> str:
    """A ``statistics.pairs`` difference as text: ``+0.042 [-0.007, +0.091], 5 of 5 seeds higher``."""
    text = format_interval({key: item for key, item in (value or {}).items() if key != "p_value"}, signed=True, empty=empty)
    if value and value.get("estimate") is not None and value.get("seeds_higher") is not None:
        text += f", {value['seeds_higher']} of {seeds} seeds higher"
    return text


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(png: bytes | None, alt: str) -> str:
    if png is None:
        return f"<p class='note'>({html.escape(alt)}: nothing to plot)</p>"
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'/>"


def _metric_table(section: Mapping[str, Any], names: Sequence[str]) -> str:
    rows = [[arm["name"], *(format_interval(section["metrics"][arm["name"]][m]) for m in names)] for arm in section["arms"]]
    return _table(["arm", *names], rows)


def _paired_table(section: Mapping[str, Any], names: Sequence[str]) -> str:
    """Differences against classic augmentation first (the question a user asks), then against real only."""
    text = ""
    versus_classic = section.get("paired_differences_vs_classic", {})
    if versus_classic:
        rows = [[arm, *(format_interval(versus_classic[arm][m], signed=True) for m in names)] for arm in versus_classic if arm != "baseline"]
        text += "<p>What synthetic (and oracle) data add on top of classic augmentation:</p>"
        text += _table(["arm − classic", *(f"Δ {m}" for m in names)], rows)
    between = section.get("paired_differences_between") or []
    if between:
        seeds = _seed_count(section)
        rows = [[f"{entry['arm']} − {entry['baseline']}", *(format_pair(entry["differences"].get(m), seeds) for m in names)] for entry in between]
        text += "<p>Arms against each other (the recipe's <code>statistics.pairs</code>; paired by seed and test sample):</p>"
        text += _table(["arm − baseline", *(f"Δ {m}" for m in names)], rows)
    paired = section.get("paired_differences", {})
    if not paired:
        return text + "<p class='note'>No 'real' arm: no paired differences against real only.</p>"
    rows = [[arm, *(format_interval(paired[arm][m], signed=True) for m in names)] for arm in paired if arm != "baseline"]
    text += "<p>Against real only:</p>" + _table(["arm − real", *(f"Δ {m}" for m in names)], rows)
    return text


def _seed_count(section: Mapping[str, Any]) -> int:
    """Training seeds behind a section's estimates (the length of any arm's per-seed values)."""
    for values in section.get("metrics", {}).values():
        for estimate in values.values():
            return len(estimate.get("per_seed") or [])
    return 0


def format_efficiency(value: Mapping[str, Any] | None) -> str:
    """An efficiency entry as text: ``0.42 [0.10, 0.80]``, or why it is undefined."""
    if not value:
        return "–"
    if not value.get("defined"):
        return "undefined (oracle gain not significant)"
    return f"{value['estimate']:.2f} [{value['low']:.2f}, {value['high']:.2f}]"


def _efficiency_rows(section: Mapping[str, Any], names: Sequence[str]) -> list[list[str]]:
    rows = []
    for ratio, entry in section.get("efficiency", {}).items():
        for name in names:
            if name in entry:
                value = entry[name]
                rows.append([ratio, name, f"{value['synthetic_delta']:+.3f}" if value["synthetic_delta"] is not None else "–",
                             f"{value['oracle_delta']:+.3f}" if value["oracle_delta"] is not None else "–", format_efficiency(value)])
    return rows


def _efficiency_html(section: Mapping[str, Any]) -> str:
    names = [m for m in section["headline_metrics"] if m not in section.get("lower_is_better", [])]
    rows = _efficiency_rows(section, names)
    if not rows:
        return "<p class='note'>No oracle arms (they need a simulated cohort and the classic+oracle arm at the synthetic sweep's ratios).</p>"
    return (
        "<p>How much of the gain that <i>real</i> lesions of new patients give (the oracle: perfect synthetic data) the "
        "generator's lesions capture, at the same count: efficiency = Δ(classic+synthetic) / Δ(classic+oracle), both "
        "against classic augmentation, with a Fieller interval.</p>"
        + _table(["ratio", "metric", "Δ synthetic", "Δ oracle", "efficiency [CI]"], rows)
    )


def _stage_text(stage: Mapping[str, Any]) -> str:
    text = f"{stage['name']}: {stage['steps']} of {stage.get('budget_steps', '?')} steps (best {stage['best_step']}, val loss {stage['best_validation_loss']:.3f})"
    return text + (" BUDGET-BOUND" if stage.get("budget_bound") else "")


def _warnings(report: Mapping[str, Any]) -> list[str]:
    """What a reader must know before trusting a delta (shown in red at the top)."""
    warnings = []
    for task in ("classification", "segmentation"):
        section = report.get(task) or {}
        for arm, seeds in (section.get("budget_bound") or {}).items():
            warnings.append(f"{task}: arm '{arm}' was budget-bound for seed(s) {seeds}: its validation loss was still improving when its budget ended, so its numbers understate it")
    warnings += list(report.get("floor_bound") or [])
    seen = report.get("generator_saw_validation") or {}
    if seen.get("status") == "seen (allowed)":
        warnings.append(f"{seen['detail']}: the synthetic arms select their checkpoints on patients the generator was trained on (synthetic.allow_generator_saw_validation = true)")
    for check in (report.get("leakage") or {}).get("synthetic", []):
        if check.get("status") == "unverified":
            warnings.append(f"synthetic data {check['source']}: leakage could not be ruled out ({check['reason']})")
    return warnings


def _fidelity_html(fidelity: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    if "classes" not in fidelity:
        return f"<p class='note'>Skipped: {html.escape(str(fidelity.get('skipped', '')))}</p>"
    header = ["class", "set vs real train", "n", "KID (×10³)", "Fréchet distance (PCA dims)", "precision", "recall", "density", "coverage"]
    rows = []
    for name, pair in fidelity["classes"].items():
        for key, label in (("synthetic", "synthetic"), ("real_test_floor", "real test (floor)")):
            v = pair[key]
            kid = f"{v['kid_mean'] * 1e3:.2f} ± {v['kid_std'] * 1e3:.2f}" if v.get("kid_mean") is not None else "–"
            frechet = _number(v.get("frechet_distance")) + (f" ({v['fd_dimensions']})" if v.get("fd_dimensions") is not None else "")
            rows.append([name, label, f"{v['n_real']} / {v['n_other']}", kid, frechet,
                         _number(v.get("precision")), _number(v.get("recall")), _number(v.get("density")), _number(v.get("coverage"))])
    text = _table(header, rows)
    tstr = report.get("classification", {}).get("metrics", {}).get("synthetic-only")
    if tstr:
        text += f"<p>Train on synthetic, test on real (arm <code>synthetic-only</code>): accuracy {format_interval(tstr['accuracy'])}, macro AUC {format_interval(tstr['auc_macro'])}"
        real = report["classification"]["metrics"].get("real")
        if real:
            text += f" (real only: accuracy {format_interval(real['accuracy'])}, macro AUC {format_interval(real['auc_macro'])})"
        text += ".</p>"
    method = fidelity.get("method", "Compare each synthetic row with the real-test floor of the same size.")
    text += f"<p class='note'>{html.escape(method)} {html.escape(fidelity['feature_extractor'])} Reference: {html.escape(fidelity['reference'])}.</p>"
    return text


def _ordinal(value: float) -> str:
    number = f"{value:g}"
    suffix = "th" if number.endswith(("11", "12", "13")) else {"1": "st", "2": "nd", "3": "rd"}.get(number[-1], "th")
    return number + suffix


def _memorisation_html(memorisation: Mapping[str, Any], figures_html: str) -> str:
    if "skipped" in memorisation:
        return f"<p class='note'>Skipped: {html.escape(str(memorisation['skipped']))}</p>"
    m = memorisation
    per_space = m.get("percentile_per_space", m["percentile"])
    chance = m.get("expected_by_chance", m["percentile"] / 100.0)
    on_test = m.get("real_test_flagged_fraction")
    verdict = (
        f"<p><b>{m['near_copies']} of {m['synthetic_audited']} synthetic samples flagged as near-copies</b> "
        f"(closer to the GAN's training set than the {_ordinal(per_space)} percentile of real-test distances in pixel or in "
        f"feature space; a flip, rotation or small shift of a training image counts as a copy; {m['exact_copies']} exact copies). "
        f"Below the pixel threshold: {m['below_pixel']}; below the feature threshold: {m['below_feature']}. Without memorisation "
        f"at most about {chance:.1%} would be flagged by chance"
        + (f" (the rule flags {on_test:.1%} of the real test samples themselves)" if on_test is not None else "")
        + f".</p><p class='note'>Reference set: {html.escape(m['reference'])} ({m['reference_samples']} samples); "
        f"pixel space: {html.escape(m.get('pixel_space', 'pixel RMS'))}; "
        f"thresholds: pixel RMS {m['threshold_pixel_rms']:.4f}, feature {m['threshold_feature']:.4f}.</p>"
    )
    rows = [[p["synthetic_index"], p["training_index"], html.escape(p.get("transform", "identity")), ", ".join(str(v) for v in p.get("shift", (0, 0))),
             f"{p['pixel_rms']:.4f}", f"{p['feature_distance']:.4f}", "yes" if p["flagged"] else "no"] for p in m["closest_pairs"]]
    return verdict + figures_html + _table(["synthetic #", "training #", "training transform", "shift (px)", "pixel RMS", "feature distance", "flagged"], rows)


def _provenance_html(report: Mapping[str, Any]) -> str:
    rows = [[f["role"], f["path"], f["sha256"][:16] + "…", f["samples"], f["patients"] if f["patients"] is not None else "–",
             ", ".join(f"{k} {v}" for k, v in f["class_counts"].items())] for f in report["inputs"]["files"]]
    text = _table(["role", "file", "SHA-256", "samples", "patients", "classes"], rows)
    model = report["inputs"].get("model")
    if model:
        training = model.get("training_data") or {}
        text += (f"<p>Model <code>{html.escape(model['name'])}</code> ({html.escape(model['origin'])}, {html.escape(model['family'])}, "
                 f"{html.escape(model['algorithm'])}), weights SHA-256 <code>{model['weights_sha256'][:16]}…</code>, trained on "
                 f"<code>{html.escape(str(training.get('path')))}</code> (SHA-256 <code>{str(training.get('sha256'))[:16]}…</code>); "
                 f"generation seed {report['inputs']['synthetic_seed']}.</p>")
    cohort = report["inputs"].get("cohort")
    if cohort:
        text += f"<p>Cohort <code>{html.escape(cohort['name'])}</code>, seed {cohort['seed']}, {'built in this run' if cohort['built'] else 'reused'} in <code>{html.escape(cohort['dir'])}</code>.</p>"
    leakage = report["leakage"]
    text += f"<p>Leakage checks: real split — {html.escape(leakage['real_split'])}.</p>"
    if leakage["synthetic"]:
        text += _table(["synthetic source", "model", "status", "reason"], [[c["source"], c["model"], c["status"], c["reason"]] for c in leakage["synthetic"]])
    split = report["split"]
    text += (f"<p>Validation split: {split['validation_patients']} of {split['train_patients'] + split['validation_patients']} train patients "
             f"(fraction {split['validation_fraction']}, seed {split['seed']}); test: {split['test_patients']} patients. Seeds: {report['seeds']}.</p>")
    text += _table(["", *split["train_samples"]], [[label, *split[key].values()] for key, label in (("train_samples", "train samples"), ("validation_samples", "validation samples"), ("test_samples", "test samples"))])
    text += _table(["package", "version"], [[k, v] for k, v in report["versions"].items()])
    text += f"<details><summary>Resolved recipe</summary><pre>{html.escape(json.dumps(report['recipe'], indent=2))}</pre></details>"
    text += f"<p class='note'>Command: <code>{html.escape(report['command'])}</code>; created {report['created']}; run time {report['runtime_s']} s.</p>"
    return text


METHODS = """
<p><b>Protocol.</b> Patient-level split: the validation patients (early stopping, model selection) are carved from the
train patients; the test set is touched once per trained network. Every arm trains with the same validation split and
the same seeds (a seed fixes the initial weights, dropout, batch order and augmentation), to convergence: a budget in
epochs of the arm's own training set (with a floor of steps), a learning rate that drops on plateaus, and early
stopping on the smoothed validation loss, counted only after the recipe's warm-up (<code>train.warmup_steps</code>:
earlier checks are logged, never chosen); an arm whose budget ended it while it still improved is flagged
budget-bound. Arms: (a) real only; (b) real + classic augmentation (flips, rotation/scaling, elastic, intensity, on
whole batches); (c) (b) + R synthetic samples per real sample of each class (nested sweep); (o) (b) + R real lesions of
new virtual patients per real sample (simulated cohorts: the oracle, what perfect synthetic data would add); (d)
synthetic pretraining, then fine-tuning on the real data with classic augmentation (Onishi et al. 2019); (e) synthetic
only, tested on real (TSTR). Reference row: logistic regression on hand-made lesion features.</p>
<p><b>Uncertainty.</b> The point estimate is the mean over seeds on the full test set. Its interval combines the
seed-to-seed variance (a t component with S − 1 degrees of freedom) with the test-patient variance from a cluster
bootstrap over test <i>patients</i>. Paired differences are taken per seed and per test sample (the same resamples for
both arms). The intervals are conditional on one training set, one validation split, one test set and one generator:
they do not cover what another cohort of training patients or a retrained generator would give. p-values are not
corrected for the number of arms and metrics compared. Augmentation efficiency Δ(synthetic)/Δ(oracle) has a Fieller
interval and is undefined when the oracle's own gain is not significant.</p>
<p><b>Metrics.</b> Sensitivity and specificity per class one-vs-rest (prediction = arg-max), macro averages, accuracy,
ROC AUC one-vs-rest (scikit-learn); Dice and HD95 (MONAI; HD95 in mm; an empty prediction of a present
structure, or a prediction of an absent one, scores the image diagonal, so a network cannot improve its HD95 by
predicting nothing; missed_rate: the share of present structures predicted empty).</p>
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f2f2f2; }
img { max-width: 100%; margin: 0.4em 0; }
.note { color: #555; font-size: 0.85em; }
.warning { color: #b00; font-weight: bold; }
nav a { margin-right: 0.8em; font-size: 0.85em; }
h2 { border-bottom: 1px solid #ddd; padding-top: 0.6em; }
"""


def _verdict(difference: Mapping[str, Any], lower_is_better: bool = False) -> str:
    low, high = difference.get("low"), difference.get("high")
    better, worse = ("better", "worse") if not lower_is_better else ("worse", "better")
    if low is not None and low > 0:
        return better + " than"
    if high is not None and high < 0:
        return worse + " than"
    return "not distinguishable from"


def _summary(report: Mapping[str, Any]) -> str:
    """Warnings in red, then each synthetic arm against classic augmentation with its efficiency, then vs real only."""
    text = "".join(f"<p class='warning'>⚠ {html.escape(w)}</p>" for w in _warnings(report))
    lines = []
    for task, metric in (("classification", "sensitivity_macro"), ("classification", "specificity_macro"), ("segmentation", "dice_mean")):
        section = report.get(task)
        if not section:
            continue
        efficiency = {entry["synthetic_arm"]: entry.get(metric) for entry in section.get("efficiency", {}).values()}
        for arm, values in (section.get("paired_differences_vs_classic") or {}).items():
            if arm == "baseline" or metric not in values or values[metric]["estimate"] is None:
                continue
            d = values[metric]
            line = f"<li>{html.escape(task)} — <b>{html.escape(arm)}</b>: Δ {html.escape(metric)} {format_interval(d, signed=True)}: {_verdict(d)} classic augmentation"
            if arm in efficiency:
                line += f"; efficiency {format_efficiency(efficiency[arm])}"
            lines.append(line + ".</li>")
    for task, metric in (("classification", "sensitivity_macro"), ("segmentation", "dice_mean")):
        section = report.get(task)
        for arm, values in ((section or {}).get("paired_differences") or {}).items():
            if arm == "baseline" or metric not in values or values[metric]["estimate"] is None:
                continue
            lines.append(f"<li class='note'>{html.escape(task)} — {html.escape(arm)} vs real only: Δ {html.escape(metric)} {format_interval(values[metric], signed=True)}.</li>")
    return text + ("<ul>" + "".join(lines) + "</ul>" if lines else "<p class='note'>No paired comparison.</p>")


def render_html(report: Mapping[str, Any], figures: Mapping[str, np.ndarray]) -> str:
    """The self-contained HTML page of a report (figures drawn here, embedded as base64 PNG)."""
    from evaluation import plots

    parts: dict[str, str] = {key: "" for key, _ in SECTIONS}
    parts["summary"] = _summary(report)
    confidence = float(report["statistics"]["confidence"])
    classification = report.get("classification")
    if classification:
        headline = classification["headline_metrics"]
        parts["headline"] = _metric_table(classification, headline) + f"<p class='note'>Mean over seeds [{confidence:.0%} CI].</p>"
        reference = classification.get("reference")
        if reference:
            parts["headline"] += f"<p>Reference: {html.escape(reference['name'])} ({html.escape(reference['note'])}).</p>" + _table(
                ["reference", *headline], [[reference["name"], *(format_interval(reference["metrics"][m]) for m in headline)]]
            )
        parts["efficiency"] = _efficiency_html(classification)
        parts["paired"] = _paired_table(classification, headline) + _image(plots.forest_plot(classification, headline, confidence), "forest plot")
        parts["sweep"] = _image(plots.sweep_curve(classification, headline), "sweep curve")
        parts["roc"] = _image(plots.roc_curves(classification), "ROC curves") + "<p class='note'>Test predictions of all seeds pooled; legend: mean AUC over seeds.</p>"
        parts["confusion"] = _image(plots.confusion_matrices(classification), "confusion matrices") + "<p class='note'>Row-normalised; test predictions of all seeds summed.</p>"
        per_class = [m for m in classification["metric_names"] if ":" in m]
        parts["per-class"] = _metric_table(classification, per_class) + _paired_table(classification, per_class)
    else:
        parts["headline"] = "<p class='note'>No classification arms.</p>"
    segmentation = report.get("segmentation")
    if segmentation:
        names = segmentation["metric_names"]
        parts["segmentation"] = (
            _metric_table(segmentation, names) + _paired_table(segmentation, names)
            + _image(plots.forest_plot(segmentation, segmentation["headline_metrics"], confidence), "segmentation forest plot")
            + _image(plots.sweep_curve(segmentation, segmentation["headline_metrics"]), "segmentation sweep")
            + "<p class='note'>Missed structures (present, nothing predicted; their HD95 scores the image diagonal), summed over "
            + f"test samples and seeds: {', '.join(f'{arm} {count}' for arm, count in segmentation.get('missed', {}).items())}.</p>"
        )
    else:
        parts["segmentation"] = "<p class='note'>No segmentation arms.</p>"
    class_names = report.get("classification", {}).get("class_names") or list(report["split"]["train_samples"])
    rows = []
    for name in class_names:
        rows += [(f"{name}\nreal", figures.get(f"real/{name}", np.zeros(0))), (f"{name}\nsynthetic", figures.get(f"synthetic/{name}", np.zeros(0)))]
    rows += [(key.split("/", 1)[1], value) for key, value in figures.items() if key.startswith("pool/")]  # phantoms, as they are and translated
    parts["images"] = _image(plots.image_grid(rows), "real vs synthetic grid")
    parts["fidelity"] = _fidelity_html(report.get("fidelity", {}), report)
    memorisation = report.get("memorisation", {})
    memorisation_figures = ""
    if "skipped" not in memorisation:
        distances = {key.split("/", 1)[1]: value for key, value in figures.items() if key.startswith("histogram/")}
        memorisation_figures = _image(
            plots.memorisation_histogram(distances, {"pixel": memorisation["threshold_pixel_rms"], "feature": memorisation["threshold_feature"]}),
            "memorisation histogram",
        )
        if "pairs/synthetic" in figures:
            memorisation_figures += "<p>Closest pairs (top: synthetic, bottom: its nearest training sample):</p>" + _image(
                plots.image_grid([("synthetic", figures["pairs/synthetic"]), ("nearest\ntraining", figures["pairs/training"])]), "closest pairs"
            )
    parts["memorisation"] = _memorisation_html(memorisation, memorisation_figures)
    training_html = ""
    for task in ("classification", "segmentation"):
        section = report.get(task)
        if section:
            rows_t = [
                [arm, run["seed"], " → ".join(_stage_text(stage) for stage in run["stages"]), f"{run['seconds']:.1f}"]
                for arm, runs in section["training"].items() for run in runs
            ]
            training_html += f"<h3>{task}</h3>" + _image(plots.training_curves(section), f"{task} validation curves") + _table(["arm", "seed", "stages", "seconds"], rows_t)
    parts["training"] = training_html
    parts["provenance"] = _provenance_html(report)
    parts["methods"] = METHODS
    nav = "".join(f"<a href='#{key}'>{html.escape(title)}</a>" for key, title in SECTIONS)
    body = "".join(f"<section id='{key}'><h2>{html.escape(title)}</h2>{parts[key]}</section>" for key, title in SECTIONS)
    title = html.escape(f"augmentor evaluation: {report['name']}")
    description = f"<p>{html.escape(report.get('description') or '')}</p>"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head><body><h1>{title}</h1>{description}<nav>{nav}</nav>{body}</body></html>\n"


def write_report(folder: Path, report: dict[str, Any], predictions: Mapping[str, np.ndarray], figures: Mapping[str, np.ndarray]) -> Path:
    """Write ``report.json``, ``predictions.npz`` and ``report.html`` into ``folder``.

    Args:
        folder: the (staging) report folder.
        report: every number (see the module docstring).
        predictions: per-seed test outputs, ``{"task/arm/what": array}``.
        figures: image arrays and distances the HTML draws.

    Returns:
        The JSON path.
    """
    report["files"] = {"html": REPORT_HTML, "json": REPORT_JSON, "predictions": PREDICTIONS}
    plain = json_ready(report)
    buffer_path = folder / PREDICTIONS
    arrays = {key: np.asarray(value) for key, value in predictions.items()}
    np.savez_compressed(buffer_path, **arrays)  # type: ignore[arg-type]
    write_bytes_atomic(folder / REPORT_JSON, (json.dumps(plain, indent=1, allow_nan=False) + "\n").encode())
    write_bytes_atomic(folder / REPORT_HTML, render_html(plain, figures).encode())
    return folder / REPORT_JSON


# ---------------------------------------------------------------------------------------- inspect ----


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and check a ``report.json`` (a report folder is accepted too)."""
    report_path = Path(path)
    if report_path.is_dir():
        report_path = report_path / REPORT_JSON
    if not report_path.is_file():
        raise AugmentorError(f"{report_path}: file not found")
    try:
        report = json.loads(report_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AugmentorError(f"{report_path}: not a readable JSON file ({error})") from None
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise AugmentorError(f"{report_path}: not an augmentor evaluation report (no format {FORMAT!r})")
    return report


def headline_rows(section: Mapping[str, Any]) -> list[list[str]]:
    """Rows of the terminal headline table: arm, then per headline metric "estimate [CI]", its Δ vs real
    and, for arms with synthetic data, its Δ vs classic augmentation."""
    paired = section.get("paired_differences", {})
    versus_classic = section.get("paired_differences_vs_classic", {})
    rows = []
    for arm in section["arms"]:
        name = arm["name"]
        cells = [name]
        for metric in section["headline_metrics"]:
            text = format_interval(section["metrics"][name][metric])
            if name in paired:
                text += f"\nΔ {format_interval(paired[name][metric], signed=True)}"
            if name in versus_classic:
                text += f"\nΔc {format_interval(versus_classic[name][metric], signed=True)}"
            cells.append(text)
        rows.append(cells)
    return rows


def print_headline(report_json_path: Path) -> None:
    """Print a report's headline tables (arm x metric, 95 % CI, Δ vs real only with p) in the terminal.

    Args:
        report_json_path: a ``report.json`` (or the report folder).
    """
    from rich.console import Console
    from rich.table import Table

    report = load_report(report_json_path)
    console = Console(width=200)
    console.print(f"[bold]{report['name']}[/bold] — {report.get('description') or ''} ({report['created']}, {report['runtime_s']} s)")
    for task in ("classification", "segmentation"):
        section = report.get(task)
        if not section:
            continue
        title = f"{task}: mean over seeds {report['seeds']} [95 % CI]; Δ vs real only [95 % CI], p"
        if section.get("paired_differences_vs_classic"):
            title += "; Δc vs classic augmentation"
        table = Table(title=title, show_lines=True)
        table.add_column("arm")
        for metric in section["headline_metrics"]:
            table.add_column(metric, justify="right")
        for row in headline_rows(section):
            table.add_row(*row)
        console.print(table)
        reference = section.get("reference")
        if reference:
            console.print(f"reference ({reference['name']}): " + ", ".join(f"{m} {format_interval(reference['metrics'][m])}" for m in section["headline_metrics"]))
        for entry in section.get("paired_differences_between") or []:
            console.print(
                f"{entry['arm']} − {entry['baseline']}: "
                + "; ".join(f"Δ {m} {format_pair(entry['differences'].get(m), len(report['seeds']))}" for m in section["headline_metrics"])
            )
        names = [m for m in section["headline_metrics"] if m not in section.get("lower_is_better", [])]
        for row in _efficiency_rows(section, names):
            console.print(f"efficiency {row[0]} {row[1]}: Δ synthetic {row[2]}, Δ oracle {row[3]} -> {row[4]}")
    for warning in _warnings(report):
        console.print(f"[bold red]warning:[/bold red] {warning}")
    memorisation = report.get("memorisation", {})
    if "near_copies" in memorisation:
        console.print(f"memorisation: {memorisation['near_copies']} of {memorisation['synthetic_audited']} synthetic samples flagged as near-copies")


def inspect_report(path: str | Path) -> None:
    """``augment inspect report.json`` (dispatched from :mod:`augmentor.inspect`): the headline tables."""
    print_headline(Path(path))
