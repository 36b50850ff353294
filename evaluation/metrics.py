"""Downstream metrics: classification (one-vs-rest) and segmentation, point estimates and replicates.

Point estimates come from scikit-learn (classification) and MONAI (Dice, HD95). The bootstrap needs
each metric on ~1 000 reweighted test sets per (arm, seed); :func:`classification_replicates` computes
them at once from a (B, N) matrix of sample weights (a patient resampled k times gives its samples
weight k). These weighted forms are the same quantities scikit-learn computes with ``sample_weight``
(``tests/evaluation/test_metrics.py`` checks them against it), vectorised over replicates.

Names: ``accuracy``, ``sensitivity_macro``, ``specificity_macro``, ``auc_macro`` and per class
``sensitivity:NAME``, ``specificity:NAME``, ``auc:NAME`` (one class against the rest); segmentation
``dice_mean``, ``hd95_mean``, ``missed_rate`` and per structure ``dice:NAME``, ``hd95:NAME`` (HD95 in mm),
``missed:NAME`` (1 when the structure is present but nothing of it is predicted).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

CLASSIFICATION_HEADLINE = ("accuracy", "sensitivity_macro", "specificity_macro", "auc_macro")
SEGMENTATION_HEADLINE = ("dice_mean", "hd95_mean", "missed_rate")
# Metrics where lower is better (the forest plot and the sweep read them the other way round).
LOWER_IS_BETTER = frozenset({"hd95_mean", "missed_rate"})


def classification_metric_names(class_names: Sequence[str]) -> list[str]:
    """Every classification metric, headline first."""
    per_class = [f"{metric}:{name}" for metric in ("sensitivity", "specificity", "auc") for name in class_names]
    return [*CLASSIFICATION_HEADLINE, *per_class]


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Point estimates with scikit-learn.

    Args:
        labels: (N,) true classes.
        probabilities: (N, K) predicted class probabilities; the prediction is the arg-max.
        class_names: the K class names.

    Returns:
        ``{metric name: value}`` (NaN where undefined, e.g. AUC of a class absent from ``labels``).
    """
    from sklearn.metrics import accuracy_score, multilabel_confusion_matrix, recall_score, roc_auc_score

    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    classes = list(range(num_classes))
    sensitivity = recall_score(labels, predicted, labels=classes, average=None, zero_division=np.nan)
    confusion = multilabel_confusion_matrix(labels, predicted, labels=classes)  # (K, 2, 2): [[tn, fp], [fn, tp]]
    negatives = confusion[:, 0, 0] + confusion[:, 0, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        specificity = np.where(negatives > 0, confusion[:, 0, 0] / np.maximum(negatives, 1), np.nan)
    auc = np.full(num_classes, np.nan)
    for k in classes:
        positive = labels == k
        if positive.any() and (~positive).any():
            auc[k] = roc_auc_score(positive, probabilities[:, k])
    values = {
        "accuracy": float(accuracy_score(labels, predicted)),
        "sensitivity_macro": _nanmean(sensitivity),
        "specificity_macro": _nanmean(specificity),
        "auc_macro": _nanmean(auc),
    }
    for k, name in enumerate(class_names):
        values[f"sensitivity:{name}"] = float(sensitivity[k])
        values[f"specificity:{name}"] = float(specificity[k])
        values[f"auc:{name}"] = float(auc[k])
    return values


def _nanmean(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    return float(finite.mean()) if finite.size else float("nan")


def _weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` for each row of sample weights (Mann-Whitney form, ties count one half).

    AUC = sum_i w_i [i positive] (W_neg(score < s_i) + W_neg(score = s_i) / 2) / (W_pos W_neg).
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # tie groups
    sorted_weights = weights[:, order]
    is_positive = positive[order].astype(np.float64)
    positive_groups = np.add.reduceat(sorted_weights * is_positive, starts, axis=1)  # (B, U)
    negative_groups = np.add.reduceat(sorted_weights * (1.0 - is_positive), starts, axis=1)
    negatives_below = np.cumsum(negative_groups, axis=1) - negative_groups
    numerator = (positive_groups * (negatives_below + 0.5 * negative_groups)).sum(axis=1)
    denominator = positive_groups.sum(axis=1) * negative_groups.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def classification_replicates(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every classification metric under each row of sample weights.

    Args:
        labels: (N,) true classes.
        probabilities: (N, K) class probabilities.
        class_names: the K class names.
        weights: (B, N) non-negative sample weights (bootstrap multiplicities).

    Returns:
        ``{metric name: (B,) values}``; with all weights 1 they equal :func:`classification_metrics`.
    """
    num_classes = len(class_names)
    weights = np.asarray(weights, dtype=np.float64)
    predicted = probabilities.argmax(axis=1)
    cell = labels.astype(np.int64) * num_classes + predicted
    one_hot = np.zeros((labels.size, num_classes * num_classes))
    one_hot[np.arange(labels.size), cell] = 1.0
    confusion = (weights @ one_hot).reshape(-1, num_classes, num_classes)  # (B, true, predicted)
    total = confusion.sum(axis=(1, 2))
    true_positive = np.diagonal(confusion, axis1=1, axis2=2)  # (B, K)
    actual = confusion.sum(axis=2)
    called = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(actual > 0, true_positive / actual, np.nan)
        negatives = total[:, None] - actual
        true_negative = negatives - (called - true_positive)
        specificity = np.where(negatives > 0, true_negative / negatives, np.nan)
        accuracy = np.where(total > 0, true_positive.sum(axis=1) / total, np.nan)
    auc = np.stack([_weighted_auc(probabilities[:, k], labels == k, weights) for k in range(num_classes)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (a replicate without a class)
        values = {
            "accuracy": accuracy,
            "sensitivity_macro": np.nanmean(sensitivity, axis=1),
            "specificity_macro": np.nanmean(specificity, axis=1),
            "auc_macro": np.nanmean(auc, axis=1),
        }
    for k, name in enumerate(class_names):
        values[f"sensitivity:{name}"] = sensitivity[:, k]
        values[f"specificity:{name}"] = specificity[:, k]
        values[f"auc:{name}"] = auc[:, k]
    return values


def confusion_matrix(labels: np.ndarray, probabilities: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted (scikit-learn)."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    return sk_confusion_matrix(labels, probabilities.argmax(axis=1), labels=list(range(num_classes)))


def roc_curve_points(labels: np.ndarray, scores: np.ndarray, max_points: int = 200) -> tuple[list[float], list[float]]:
    """One-vs-rest ROC curve (scikit-learn), thinned to at most ``max_points`` points for the report."""
    from sklearn.metrics import roc_curve

    if labels.all() or not labels.any():
        return [], []
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=True)
    if fpr.size > max_points:
        keep = np.unique(np.r_[np.linspace(0, fpr.size - 1, max_points).round().astype(int), fpr.size - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    return [round(float(v), 5) for v in fpr], [round(float(v), 5) for v in tpr]


# ----------------------------------------------------------------------------------- segmentation ----


def segmentation_metric_names(structure_names: Sequence[str]) -> list[str]:
    """Every segmentation metric, headline first."""
    return [*SEGMENTATION_HEADLINE, *(f"{metric}:{name}" for metric in ("dice", "hd95", "missed") for name in structure_names)]


def roi_diagonal_mm(shape: tuple[int, int], spacing_mm: tuple[float, float]) -> float:
    """The diagonal of an (H, W) image in mm: the largest distance two of its points can be apart."""
    return float(np.hypot(shape[0] * spacing_mm[0], shape[1] * spacing_mm[1]))


def segmentation_per_sample(
    predicted: np.ndarray, truth: np.ndarray, num_labels: int, spacing_mm: tuple[float, float], structure_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Dice, 95th-percentile Hausdorff distance and misses per test sample and structure (MONAI).

    HD95 is undefined when one of the two masks is empty. Leaving those samples out would reward a network
    for predicting nothing where it is unsure (its hardest cases would drop out of its mean), so an empty
    prediction of a present structure, or a prediction of an absent one, scores the worst possible
    distance instead: the diagonal of the image in mm. Both masks empty is a perfect answer (HD95 0, Dice 1).
    A present structure with an empty prediction also counts as *missed*.

    Args:
        predicted: (N, H, W) predicted labels.
        truth: (N, H, W) true labels.
        num_labels: labels including background (0).
        spacing_mm: pixel spacing (rows, columns), so HD95 is in mm.
        structure_names: names of labels 1..num_labels-1.

    Returns:
        ``{"dice:NAME", "hd95:NAME", "missed:NAME": (N,)}`` and the means over structures ``dice_mean``,
        ``hd95_mean``, ``missed_rate`` (N,). ``missed`` is 1 or 0 where the structure is present and NaN
        where it is absent, which the statistics leave out; ``missed_rate`` is the share of a sample's
        present structures that are missed (with one structure, averaged over samples: the share of lesions
        missed).
    """
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    def one_hot(labels: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(labels.astype(np.int64))
        return torch.nn.functional.one_hot(tensor, num_labels).permute(0, 3, 1, 2).float()

    pred, true = one_hot(predicted), one_hot(truth)
    dice = compute_dice(pred, true, include_background=False, ignore_empty=False).numpy()  # (N, L-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the prediction/ground truth of class k is all 0": NaN/inf, replaced below
        hd95 = compute_hausdorff_distance(pred, true, include_background=False, percentile=95, spacing=list(spacing_mm)).numpy()
    predicted_present = pred[:, 1:].flatten(2).any(dim=2).numpy()  # (N, L-1)
    truth_present = true[:, 1:].flatten(2).any(dim=2).numpy()
    penalty = roi_diagonal_mm(predicted.shape[1:3], spacing_mm)
    hd95 = np.where(predicted_present & truth_present, hd95, np.where(predicted_present | truth_present, penalty, 0.0))
    hd95 = np.where(np.isfinite(hd95), hd95, penalty)
    missed = np.where(truth_present, (truth_present & ~predicted_present).astype(np.float64), np.nan)
    values: dict[str, np.ndarray] = {}
    for j, name in enumerate(structure_names):
        values[f"dice:{name}"] = dice[:, j].astype(np.float64)
        values[f"hd95:{name}"] = hd95[:, j].astype(np.float64)
        values[f"missed:{name}"] = missed[:, j]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of nothing: no present structure in a sample
        values["dice_mean"] = np.nanmean(dice, axis=1).astype(np.float64)
        values["hd95_mean"] = np.nanmean(hd95, axis=1).astype(np.float64)
        values["missed_rate"] = np.nanmean(missed, axis=1)
    return values


def weighted_means(per_sample: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Sample-weighted mean of each per-sample metric under each row of ``weights`` (NaN samples left out).

    Args:
        per_sample: ``{metric: (N,)}``.
        weights: (B, N) sample weights.

    Returns:
        ``{metric: (B,)}``.
    """
    out = {}
    for name, values in per_sample.items():
        valid = ~np.isnan(values)
        masked = np.where(valid, values, 0.0)
        total = weights @ valid.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(total > 0, (weights @ masked) / np.where(total > 0, total, 1.0), np.nan)
    return out


def arm_statistics(
    names: Sequence[str], weights: np.ndarray, *, labels: np.ndarray | None = None, probabilities: np.ndarray | None = None,
    class_names: Sequence[str] = (), per_sample: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One arm's metrics per training seed and their bootstrap replicates, from its saved test outputs.

    Args:
        names: the metrics.
        weights: (B, N) the bootstrap's sample weights (one resampling plan for every arm compared).
        labels: (N,) true classes (classification).
        probabilities: (S, N, K) predicted probabilities per seed (classification).
        class_names: the K class names (classification).
        per_sample: {metric: (S, N)} per-sample values per seed (segmentation; NaN where undefined).

    Returns:
        ``{metric: (S,)}`` point estimates on the full test set and ``{metric: (S, B)}`` replicates.
    """
    points: list[dict[str, float]] = []
    replicates: list[dict[str, np.ndarray]] = []
    if probabilities is not None:
        assert labels is not None
        for seed_probabilities in probabilities:
            points.append(classification_metrics(labels, seed_probabilities, class_names))
            replicates.append(classification_replicates(labels, seed_probabilities, class_names, weights))
    else:
        assert per_sample is not None
        seeds = len(next(iter(per_sample.values())))
        for seed in range(seeds):
            values = {name: per_sample[name][seed] for name in names}
            points.append({name: float(np.nanmean(value)) if np.isfinite(value).any() else float("nan") for name, value in values.items()})
            replicates.append(weighted_means(values, weights))
    return {name: np.array([p[name] for p in points]) for name in names}, {name: np.stack([r[name] for r in replicates]) for name in names}
