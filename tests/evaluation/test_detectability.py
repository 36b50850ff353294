"""The classifier two-sample test: about 0.5 for two samples of one distribution, near 1 for an artefact."""

from __future__ import annotations

import numpy as np
import pytest

from augmentor.errors import AugmentorError
from evaluation.detectability import main, two_sample_test

WINDOW = (-200.0, 200.0)


def lesions(n: int, seed: int, frame: bool = False) -> np.ndarray:
    """(n, 1, 16, 16) HU: a bright disc of random size and place on CT-like noise; ``frame`` adds a faint square."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:16, :16]
    images = rng.normal(0.0, 25.0, (n, 1, 16, 16))
    for i in range(n):
        r, c, radius = rng.uniform(5, 11), rng.uniform(5, 11), rng.uniform(2, 4)
        images[i, 0][(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] += 80.0
        if frame:
            images[i, 0, 4, 4:12] += 40.0
            images[i, 0, 11, 4:12] += 40.0
            images[i, 0, 4:12, 4] += 40.0
            images[i, 0, 4:12, 11] += 40.0
    return np.round(images).astype(np.int16)


def test_two_samples_of_one_distribution_cannot_be_told_apart_and_a_frame_gives_itself_away() -> None:
    same = two_sample_test(lesions(96, seed=1), lesions(96, seed=2), WINDOW, seed=0)
    framed = two_sample_test(lesions(96, seed=1), lesions(96, seed=2, frame=True), WINDOW, seed=0)
    assert same["n"] == framed["n"] == 96
    assert 0.3 <= same["auc"] <= 0.7, same
    assert framed["auc"] >= 0.9 and framed["accuracy"] >= 0.8, framed
    assert two_sample_test(lesions(96, seed=1), lesions(96, seed=2, frame=True), WINDOW, seed=0) == framed  # deterministic


def test_the_larger_set_is_subsampled_and_bad_sets_are_one_line_errors() -> None:
    assert two_sample_test(lesions(40, seed=1), lesions(200, seed=2), WINDOW)["n"] == 40
    with pytest.raises(AugmentorError, match="need at least 16"):
        two_sample_test(lesions(8, seed=1), lesions(40, seed=2), WINDOW)
    with pytest.raises(AugmentorError, match="differ"):
        two_sample_test(lesions(40, seed=1), lesions(40, seed=2)[:, :, :8, :8], WINDOW)


def test_command_line_refuses_a_missing_reference(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "onishi-lung-dcgan", "--reference", "/nonexistent/test.h5"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error
