"""The reference row: logistic regression on a handful of hand-made lesion features.

A reader should see when a few numbers about the lesion -- its size, its attenuation, its contrast to
the surrounding tissue, whether its rim enhances, how round it is -- classify it as well as the CNN. The
features use the lesion mask (on real data the radiologist's outline, here the cohort's), so this row
answers "how hard is the task given the outline", not "how good is a deployable model".
Model: scikit-learn's standardisation + multinomial logistic regression, fitted on the training patients
(the same samples the CNN arms train on), scored on the test set with the same metrics and intervals.
"""

from __future__ import annotations

import numpy as np

FEATURE_NAMES = (
    "area_mm2",
    "equivalent_diameter_mm",
    "mean_hu",
    "sd_hu",
    "p90_hu",
    "p10_hu",
    "surround_hu",
    "contrast_hu",
    "rim_minus_core_hu",
    "compactness",
    "bright_fraction",
)


def lesion_features(images: np.ndarray, masks: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    """Per-lesion features (see :data:`FEATURE_NAMES`).

    Args:
        images: (N, C, H, W) HU (the first channel is used).
        masks: (N, H, W) labels; every label > 0 is lesion.
        spacing_mm: (row, column) pixel spacing.

    Returns:
        (N, len(FEATURE_NAMES)) float64; an empty mask gives zeros.
    """
    from scipy import ndimage

    pixel_area = float(spacing_mm[0] * spacing_mm[1])
    ring = ndimage.generate_binary_structure(2, 1)
    features = np.zeros((images.shape[0], len(FEATURE_NAMES)))
    for n in range(images.shape[0]):
        image = images[n, 0].astype(np.float64)
        lesion = masks[n] > 0
        area = int(lesion.sum())
        if area == 0:
            continue
        values = image[lesion]
        surround = ndimage.binary_dilation(lesion, ring, iterations=3) & ~lesion
        core = ndimage.binary_erosion(lesion, ring, iterations=2)
        rim = lesion & ~core
        boundary = lesion & ~ndimage.binary_erosion(lesion, ring)
        surround_hu = float(image[surround].mean()) if surround.any() else float(values.mean())
        rim_minus_core = float(image[rim].mean() - image[core].mean()) if core.any() and rim.any() else 0.0
        features[n] = (
            area * pixel_area,
            2.0 * np.sqrt(area * pixel_area / np.pi),
            values.mean(),
            values.std(),
            np.percentile(values, 90),
            np.percentile(values, 10),
            surround_hu,
            values.mean() - surround_hu,
            rim_minus_core,
            boundary.sum() ** 2 / (4 * np.pi * area),
            float((values > values.mean() + 100.0).mean()),
        )
    return features


def reference_probabilities(
    train_images: np.ndarray,
    train_masks: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_masks: np.ndarray,
    spacing_mm: tuple[float, float],
    num_classes: int,
) -> np.ndarray:
    """Fit the reference model on the training lesions; return (N_test, K) class probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(lesion_features(train_images, train_masks, spacing_mm), train_labels)
    probabilities = np.zeros((test_images.shape[0], num_classes), np.float32)
    probabilities[:, model.classes_] = model.predict_proba(lesion_features(test_images, test_masks, spacing_mm))
    return probabilities
