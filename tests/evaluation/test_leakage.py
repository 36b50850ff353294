"""Leakage refusal: a shared patient, or a GAN whose provenance shows it saw test data, stops the run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from augmentor.data.provenance import sha256_file, sha256_text
from augmentor.data.reader import H5File
from augmentor.generate import generate
from evaluation.leakage import LeakageError, check_synthetic, real_file

Run = Callable[..., tuple[int, str]]


def test_train_and_test_sharing_a_patient_is_refused(tiny_inputs: Any, tiny_file: Callable[..., Path], run_evaluate: Run, tmp_path: Path) -> None:
    overlapping = tiny_file("overlap.h5", count=6, patients=3, seed=5, patient_prefix="train-")  # train-000 ... train-002
    out = tmp_path / "reports" / "x"
    code, output = run_evaluate(out, tiny_inputs.overrides(f'data.test=["{overlapping}"]'))
    assert code == 2
    assert output.strip() == "error: leakage: train and test share 3 patient id(s) ('train-000', 'train-001', 'train-002'); split by patient so that no patient is in both"
    assert not (tmp_path / "reports").exists()


def test_the_same_file_as_train_and_test_is_refused(tiny_inputs: Any, run_evaluate: Run, tmp_path: Path) -> None:
    code, output = run_evaluate(tmp_path / "x", tiny_inputs.overrides(f'data.test=["{tiny_inputs.train}"]'))
    assert code == 2 and "is the same file as train file" in output and output.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_synthetic_file_from_a_gan_trained_on_the_test_file_is_refused(tiny_inputs: Any, tiny_generator: Callable[[str, Path], Path], run_evaluate: Run, tmp_path: Path) -> None:
    cheat = tiny_generator("cheat-gan", tiny_inputs.test)
    synthetic = generate("all", 12, tmp_path / "cheat.h5", model=cheat, progress=False)
    code, output = run_evaluate(tmp_path / "x", tiny_inputs.overrides('synthetic.model=""', f'synthetic.files=["{synthetic}"]'))
    assert code == 2 and output.count("\n") == 1
    assert f"error: leakage: synthetic data {synthetic} (model cheat-gan) was trained on test file {tiny_inputs.test}" in output
    assert not (tmp_path / "x").exists()
    # the same model named directly (the harness would generate from it) is refused too
    code, output = run_evaluate(tmp_path / "x", tiny_inputs.overrides(f"synthetic.model={cheat}"))
    assert code == 2 and f"error: leakage: model cheat-gan was trained on test file {tiny_inputs.test}" in output


def test_provenance_kinds_that_reveal_test_patients(tiny_inputs: Any, tiny_file: Callable[..., Path]) -> None:
    train, test = [real_file(tiny_inputs.train)], [real_file(tiny_inputs.test)]
    test_ids = H5File(tiny_inputs.test).patient_ids().tolist()
    # only the patient-set hash is known, and it is the test patients'
    with pytest.raises(LeakageError, match=r"was trained on the test patients \(patient-set SHA-256"):
        check_synthetic("s.h5", {"name": "g", "trained_on_patients_sha256": sha256_text(test_ids)}, train, test)
    # trained on train + test together
    train_ids = H5File(tiny_inputs.train).patient_ids().tolist()
    with pytest.raises(LeakageError, match="was trained on the train and test patients together"):
        check_synthetic("s.h5", {"name": "g", "trained_on_patients_sha256": sha256_text(train_ids + test_ids)}, train, test)
    # the training file is readable and holds a test patient
    mixed = tiny_file("mixed.h5", count=6, patients=3, seed=3, patient_prefix="test-")
    with pytest.raises(LeakageError, match=r"holds 3 test patient\(s\) \('test-000', 'test-001', 'test-002'\)"):
        check_synthetic("s.h5", {"name": "g", "trained_on_sha256": sha256_file(mixed), "trained_on_path": str(mixed)}, train, test)


def test_unverifiable_provenance_is_refused_unless_allowed(tiny_inputs: Any) -> None:
    train, test = [real_file(tiny_inputs.train)], [real_file(tiny_inputs.test)]
    elsewhere = {"name": "g", "trained_on_sha256": "ab" * 32, "trained_on_path": "/nowhere/train.h5"}
    with pytest.raises(LeakageError, match=r"^cannot rule out leakage: synthetic data s.h5 \(model g\): .*set synthetic.allow_unverified=true"):
        check_synthetic("s.h5", elsewhere, train, test)
    with pytest.raises(LeakageError, match="its provenance does not record the model's training data"):
        check_synthetic("s.h5", None, train, test)
    accepted = check_synthetic("s.h5", elsewhere, train, test, allow_unverified=True)
    assert accepted.status == "unverified" and accepted.gan_training_patients is None


def test_training_data_matching_the_train_file_or_patients_is_verified(tiny_inputs: Any) -> None:
    train, test = [real_file(tiny_inputs.train)], [real_file(tiny_inputs.test)]
    record_of_file = {"name": "g", "trained_on_sha256": sha256_file(tiny_inputs.train), "trained_on_path": str(tiny_inputs.train)}
    by_file = check_synthetic("s.h5", record_of_file, train, test)
    assert by_file.status == "verified" and by_file.gan_training_file == tiny_inputs.train
    record = {"name": "g", "trained_on_patients_sha256": sha256_text(H5File(tiny_inputs.train).patient_ids().tolist())}
    by_patients = check_synthetic("s.h5", record, train, test)
    assert by_patients.status == "verified" and by_patients.gan_training_patients == train[0].patient_ids
