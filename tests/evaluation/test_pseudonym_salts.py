"""Train and test ingested with different salts: the same patient has unrelated pseudonyms, so the
patient-overlap check would pass blind; evaluate refuses such files (by their salt fingerprints)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from augmentor.data.ingest import ingest
from evaluation.inputs import check_real
from evaluation.leakage import SALT_MISMATCH, LeakageError, check_same_salt

Run = Callable[..., tuple[int, str]]


def ingest_train_and_test(tmp_path: Path, train_salt: str | None, test_salt: str | None) -> tuple[Path, Path]:
    """Train and test ingested in two runs from the same three patients (a split that leaks)."""
    folder = tmp_path / "ingested"
    source = folder / "source"
    for name, patient in (("cyst", "alice"), ("metastasis", "bob"), ("hemangioma", "carol")):
        (source / name).mkdir(parents=True)
        mask = np.zeros((16, 16), np.uint8)
        mask[6:10, 6:10] = 1
        np.savez(source / name / f"{patient}.npz", image=np.full((16, 16), 40.0), mask=mask)
    class_names = ["cyst", "metastasis", "hemangioma"]
    train = ingest(source, folder / "train.h5", roi_size=16, salt=train_salt, class_names=class_names, progress=False)
    test = ingest(source, folder / "test.h5", roi_size=16, salt=test_salt, class_names=class_names, progress=False)
    return train, test


def test_files_ingested_without_a_shared_salt_are_refused(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    train, test = ingest_train_and_test(tmp_path, None, None)  # two random salts
    with pytest.raises(LeakageError, match=SALT_MISMATCH):
        check_real([train], [test])
    out = tmp_path / "reports" / "x"
    code, output = run_evaluate(out, tiny_inputs.overrides(f'data.train=["{train}"]', f'data.test=["{test}"]'))
    assert code == 2 and output.count("\n") == 1
    assert output.startswith(f"error: {SALT_MISMATCH} (")
    assert not (tmp_path / "reports").exists()


def test_with_the_same_salt_the_shared_patients_are_found(tmp_path: Path) -> None:
    train, test = ingest_train_and_test(tmp_path, "a long secret", "a long secret")
    with pytest.raises(LeakageError, match="train and test share 3 patient id"):
        check_real([train], [test])


def test_files_without_a_fingerprint_are_not_compared() -> None:
    check_same_salt({Path("cohort/train.h5"): None, Path("real.h5"): "ab" * 32, Path("cohort/test.h5"): None})
    check_same_salt({Path("a.h5"): "ab" * 32, Path("b.h5"): "ab" * 32})
    with pytest.raises(LeakageError, match=r"\(a.h5 and b.h5 were pseudonymised with different salts\)"):
        check_same_salt({Path("a.h5"): "ab" * 32, Path("b.h5"): "cd" * 32})
