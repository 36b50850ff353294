"""``augment evaluate``: does synthetic data make a downstream model better? Retrain and measure.

One file per idea: :mod:`~evaluation.recipe` (the ``evaluate`` recipe), :mod:`~evaluation.inputs` (real and
synthetic inputs), :mod:`~evaluation.phantoms` (phantoms and their CycleGAN translations), :mod:`~evaluation.leakage` (refusals), :mod:`~evaluation.splits` (patient-level validation
split), :mod:`~evaluation.arms` (what each arm trains on), :mod:`~evaluation.batch_augmentation` (classic
augmentation on whole batches), :mod:`~evaluation.models` (downstream networks), :mod:`~evaluation.training` (the loop with early
stopping), :mod:`~evaluation.jobs` ((arm, seed) jobs, in process or in a pool), :mod:`~evaluation.metrics`,
:mod:`~evaluation.bootstrap` (intervals, paired differences, p-values), :mod:`~evaluation.fidelity`,
:mod:`~evaluation.memorisation`, :mod:`~evaluation.plots`, :mod:`~evaluation.report` and :mod:`~evaluation.run`
(:func:`evaluate`, the whole protocol).

Importing this package is cheap (the recipe loader imports :mod:`evaluation.recipe`); :func:`evaluate` loads
torch and MONAI on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from evaluation.run import evaluate

        return evaluate
    raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
