"""How easily synthetic lesions are told from real ones: a classifier two-sample test.

KID and precision/recall compare synthetic and real lesions in the features of a CNN trained to tell the
*classes* apart; a generator whose lesions carry an artefact that no class differs by (square frames left
by upsampling, a missing noise texture, striped backgrounds) can still score well there. The classifier
two-sample test (Lopez-Paz & Oquab 2017, "Revisiting classifier two-sample tests") asks the direct question:
a small CNN is trained to tell real from synthetic images on half of each set (early-stopped on a part of
that half) and scored on the other half. Its ROC AUC is 0.5 when the two sets cannot be told apart and 1.0
when every synthetic lesion gives itself away.

The network, its training loop and its early stopping are the evaluation harness's (the Frid-Adar CNN at the
monitor's feature-network size, :func:`evaluation.training.train_network`); images only, masks not shown.

Command line: ``python -m evaluation.detectability --model NAME --reference FILE`` generates as many lesions
per class as the reference holds (at most ``--samples-per-class``) and prints the AUC per class.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from augmentor.errors import AugmentorError

MIN_PER_SET = 16  # at least this many real and synthetic images (a quarter of each trains, validates, tests)
TRAINING = {"batch_size": 32, "learning_rate": 1e-3, "eval_every": 10, "patience": 5, "lr_patience": 3, "warmup_steps": 50}
EPOCHS, MIN_STEPS, VALIDATION_SHARE = 30.0, 100, 0.25


def two_sample_test(real_hu: np.ndarray, synthetic_hu: np.ndarray, window: tuple[float, float], seed: int = 0) -> dict[str, Any]:
    """Train a CNN to tell ``real_hu`` from ``synthetic_hu`` and score it on held-out images of both.

    Args:
        real_hu: (N, C, H, W) real images in HU.
        synthetic_hu: (M, C, H, W) synthetic images in HU, the same shape.
        window: the HU window that maps images to [-1, 1].
        seed: which images train and test, the network's initialisation and its batches.

    Returns:
        ``{"auc", "accuracy", "n"}``: ROC AUC and accuracy (threshold 0.5) on the held-out images, and the
        number of images per set used (the smaller set's size; the larger set is subsampled).

    Raises:
        AugmentorError: fewer than ``MIN_PER_SET`` images in a set, or sets of different image shapes.
    """
    from sklearn.metrics import roc_auc_score

    from evaluation.monitor import _feature_network
    from evaluation.training import Samples, Task, TrainingStage, TrainSettings, predict, train_network

    if real_hu.shape[1:] != synthetic_hu.shape[1:] or real_hu.ndim != 4:
        raise AugmentorError(f"two-sample test: real images {real_hu.shape[1:]} and synthetic {synthetic_hu.shape[1:]} differ (need (N, C, H, W) alike)")
    n = min(len(real_hu), len(synthetic_hu))
    if n < MIN_PER_SET:
        raise AugmentorError(f"two-sample test: {n} images in the smaller set; need at least {MIN_PER_SET}")
    rng = np.random.default_rng(seed)
    real = real_hu[np.sort(rng.permutation(len(real_hu))[:n])]
    synthetic = synthetic_hu[np.sort(rng.permutation(len(synthetic_hu))[:n])]
    images = np.concatenate([real, synthetic]).astype(np.int16 if np.issubdtype(real.dtype, np.integer) else np.float32)
    labels = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    # each set: half tests; of the other half, VALIDATION_SHARE early-stops and the rest trains
    order = [rng.permutation(n), n + rng.permutation(n)]
    test = np.concatenate([o[: n // 2] for o in order])
    rest = [o[n // 2 :] for o in order]
    validation = np.concatenate([r[: max(2, int(len(r) * VALIDATION_SHARE))] for r in rest])
    train = np.concatenate([r[max(2, int(len(r) * VALIDATION_SHARE)) :] for r in rest])

    def samples(indices: np.ndarray) -> Samples:
        chosen = images[indices]
        masks = torch.zeros((len(indices), *chosen.shape[2:]), dtype=torch.uint8)
        return Samples(torch.from_numpy(chosen), masks, torch.from_numpy(labels[indices]), window)

    with torch.random.fork_rng(devices=[]):  # a caller's random streams (a training run's) must not see this
        torch.manual_seed(seed)
        network = _feature_network(int(images.shape[1]), 2, int(images.shape[-1]))
        stage = TrainingStage("train", samples(train), EPOCHS, MIN_STEPS, augment=False)
        train_network(network, [stage], samples(validation), Task.CLASSIFICATION, TrainSettings(**TRAINING), seed)  # type: ignore[arg-type]
        probabilities = predict(network, samples(test), Task.CLASSIFICATION)[:, 1]
    truth = labels[test]
    return {
        "auc": float(roc_auc_score(truth, probabilities)),
        "accuracy": float(np.mean((probabilities > 0.5) == truth.astype(bool))),
        "n": int(n),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.detectability", description="Classifier two-sample test of a generator's lesions against real ones, per class.")
    parser.add_argument("--model", required=True, help="a shipped model's name or a model directory")
    parser.add_argument("--reference", required=True, help="HDF5 of real lesions of patients the model never saw (e.g. the tuning cohort's test.h5)")
    parser.add_argument("--samples-per-class", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    import tempfile
    from pathlib import Path

    from augmentor.data.reader import H5File
    from augmentor.generate import generate

    try:
        real = H5File(arguments.reference)
        labels, window = real.labels(), real.info.hu_window
        with tempfile.TemporaryDirectory(prefix="augment-c2st-") as folder:
            for index, name in enumerate(real.info.class_names):
                rows = np.flatnonzero(labels == index)[: arguments.samples_per_class]
                if rows.size < MIN_PER_SET:
                    print(f"{name}: {rows.size} reference lesions, too few (need {MIN_PER_SET})")
                    continue
                hu, _, _ = real.read(rows)
                out = generate(name, int(rows.size), Path(folder) / f"{name}.h5", model=arguments.model, seed=arguments.seed, progress=False)
                synthetic = H5File(out)
                fake, _, _ = synthetic.read(np.arange(len(synthetic)))
                result = two_sample_test(hu, fake, window, seed=arguments.seed)
                print(f"{name}: AUC {result['auc']:.3f}, accuracy {result['accuracy']:.3f} ({result['n']} real and {result['n']} synthetic; 0.5 = indistinguishable)")
    except AugmentorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
