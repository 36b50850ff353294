"""The vectorised bootstrap metrics are scikit-learn's metrics with ``sample_weight``; segmentation metrics
on masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, multilabel_confusion_matrix, recall_score, roc_auc_score

from evaluation import metrics

CLASSES = ("cyst", "metastasis", "hemangioma")


def _predictions(seed: int, n: int = 90) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    logits = generator.normal(size=(n, 3)) + 1.5 * np.eye(3)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities = np.round(probabilities, 2)  # ties in the scores: AUC counts them one half
    return labels, probabilities


def test_unit_weights_reproduce_the_point_estimates() -> None:
    labels, probabilities = _predictions(0)
    point = metrics.classification_metrics(labels, probabilities, CLASSES)
    replicates = metrics.classification_replicates(labels, probabilities, CLASSES, np.ones((1, labels.size)))
    assert set(point) == set(replicates) == set(metrics.classification_metric_names(CLASSES))
    for name, value in point.items():
        assert replicates[name][0] == pytest.approx(value), name


def test_weighted_replicates_equal_sklearn_with_sample_weight() -> None:
    labels, probabilities = _predictions(1)
    weights = np.random.default_rng(2).integers(0, 4, size=(5, labels.size)).astype(float)
    replicates = metrics.classification_replicates(labels, probabilities, CLASSES, weights)
    predicted = probabilities.argmax(axis=1)
    for b, weight in enumerate(weights):
        assert replicates["accuracy"][b] == pytest.approx(accuracy_score(labels, predicted, sample_weight=weight))
        sensitivity = recall_score(labels, predicted, average=None, labels=[0, 1, 2], sample_weight=weight)
        confusion = multilabel_confusion_matrix(labels, predicted, sample_weight=weight, labels=[0, 1, 2])
        for k, name in enumerate(CLASSES):
            assert replicates[f"sensitivity:{name}"][b] == pytest.approx(sensitivity[k])
            tn, fp = confusion[k, 0, 0], confusion[k, 0, 1]
            assert replicates[f"specificity:{name}"][b] == pytest.approx(tn / (tn + fp))
            assert replicates[f"auc:{name}"][b] == pytest.approx(roc_auc_score(labels == k, probabilities[:, k], sample_weight=weight))
        assert replicates["auc_macro"][b] == pytest.approx(np.mean([replicates[f"auc:{n}"][b] for n in CLASSES]))


def test_perfect_and_chance_classifiers() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    perfect = metrics.classification_metrics(labels, np.eye(3)[labels], CLASSES)
    assert perfect["accuracy"] == perfect["sensitivity_macro"] == perfect["specificity_macro"] == perfect["auc_macro"] == 1.0
    constant = metrics.classification_metrics(labels, np.full((6, 3), 1 / 3), CLASSES)  # always predicts class 0
    assert constant["auc_macro"] == 0.5
    assert constant["sensitivity:cyst"] == 1.0 and constant["specificity:cyst"] == 0.0
    assert constant["sensitivity:metastasis"] == 0.0 and constant["specificity:metastasis"] == 1.0


def test_dice_and_hd95_of_known_masks() -> None:
    truth = np.zeros((3, 16, 16), np.uint8)
    truth[:, 4:8, 4:8] = 1  # 16 pixels
    predicted = truth.copy()
    predicted[1] = 0
    predicted[1, 4:8, 4:6] = 1  # half of the square: Dice = 2 * 8 / (8 + 16)
    predicted[2] = 0  # nothing predicted: Dice 0, HD95 the image diagonal, missed
    values = metrics.segmentation_per_sample(predicted, truth, 2, (0.5, 0.5), ("lesion",))
    assert set(values) == set(metrics.segmentation_metric_names(("lesion",)))
    diagonal = float(np.hypot(8.0, 8.0))  # 16 pixels of 0.5 mm each way
    assert metrics.roi_diagonal_mm((16, 16), (0.5, 0.5)) == pytest.approx(diagonal)
    assert values["dice:lesion"] == pytest.approx([1.0, 2 / 3, 0.0])
    assert values["hd95:lesion"][0] == 0.0
    assert values["hd95:lesion"][1] == pytest.approx(1.0)  # the missing half is 2 pixels = 1 mm away
    assert values["hd95:lesion"][2] == pytest.approx(diagonal)
    assert values["missed:lesion"].tolist() == [0.0, 0.0, 1.0] == values["missed_rate"].tolist()
    means = metrics.weighted_means(values, np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 1.0]]))
    assert means["dice_mean"] == pytest.approx([(1 + 2 / 3) / 3, (4 / 3) / 3])
    assert means["hd95_mean"] == pytest.approx([(1.0 + diagonal) / 3, (2.0 + diagonal) / 3])  # nothing left out
    assert means["missed_rate"] == pytest.approx([1 / 3, 1 / 3])


def test_absent_structures_empty_or_hallucinated() -> None:
    truth = np.zeros((2, 16, 16), np.uint8)
    predicted = truth.copy()
    predicted[1, 2:5, 2:5] = 1  # a lesion where there is none
    values = metrics.segmentation_per_sample(predicted, truth, 2, (1.0, 1.0), ("lesion",))
    assert values["dice:lesion"].tolist() == [1.0, 0.0]
    assert values["hd95:lesion"] == pytest.approx([0.0, np.hypot(16.0, 16.0)])
    assert np.isnan(values["missed:lesion"]).all()  # nothing to miss: left out of the missed rate


def test_predicting_nothing_never_improves_hd95() -> None:
    """An arm that predicts nothing where unsure must score worse than one that predicts slightly wrong masks."""
    generator = np.random.default_rng(0)
    truth = np.zeros((20, 32, 32), np.uint8)
    for mask, (row, column) in zip(truth, generator.integers(6, 20, size=(20, 2)), strict=True):
        mask[row : row + 8, column : column + 8] = 1
    slightly_wrong = np.roll(truth, 2, axis=2)  # every lesion found, 2 pixels off
    cautious = truth.copy()
    cautious[::2] = 0  # perfect where it answers, nothing on every other sample
    per_arm = {name: metrics.segmentation_per_sample(masks, truth, 2, (0.8, 0.8), ("lesion",)) for name, masks in
               (("slightly wrong", slightly_wrong), ("cautious", cautious))}
    assert per_arm["cautious"]["hd95_mean"].mean() > 5 * per_arm["slightly wrong"]["hd95_mean"].mean()
    assert per_arm["slightly wrong"]["hd95_mean"].mean() == pytest.approx(1.6)  # 2 pixels of 0.8 mm
    assert per_arm["cautious"]["missed_rate"].mean() == 0.5
    assert per_arm["slightly wrong"]["missed_rate"].mean() == 0.0
