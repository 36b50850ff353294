"""Leakage refusal: the harness will not measure anything on a test set that training has seen.

Two ways test data leaks into an evaluation of synthetic augmentation:

1. the real split is not by patient: a train and a test sample come from the same patient (their
   lesions share anatomy, scanner and noise), so the test set rewards memorising patients;
2. the GAN saw the test patients: its samples then carry test information into training.

Both are checked on patient ids, which ingest stores as salted pseudonyms: train and test files
ingested with different salts give the same patient unrelated ids, and the check would pass blind. So
real files whose provenance records different salt fingerprints are refused
(:func:`check_same_salt`); files without one (simulated cohorts: virtual patients) are not affected.

The second is read from provenance. A synthetic file records its model's training data
(``model.trained_on_sha256``: SHA-256 of the training file; ``model.trained_on_patients_sha256``: SHA-256
of the sorted set of patient ids trained on; ``model.trained_on_path``), as does a model card
(``training_data``). The check refuses when a hash equals a test file's or the test patients', or when the
training file is readable and holds a test patient. It calls the data *verified* when its model's
training data is one of the train files or the train patients (or the readable training file holds no
test patient), and *unverified* otherwise, which is refused unless the recipe allows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augmentor.data.provenance import sha256_file, sha256_text, stored_path
from augmentor.errors import AugmentorError


class LeakageError(AugmentorError):
    """Test data reached training (or cannot be ruled out): the evaluation is refused."""


@dataclass(frozen=True)
class RealFile:
    """A real input file: where it is, its hash and its patients."""

    path: Path
    sha256: str
    patient_ids: frozenset[str]


@dataclass(frozen=True)
class SyntheticCheck:
    """What the provenance check concluded about one synthetic source."""

    source: str  # the synthetic file or model it was checked for
    model: str
    status: str  # "verified" | "unverified"
    reason: str
    gan_training_file: Path | None  # the GAN's training file when readable and confirmed (memorisation)
    gan_training_patients: frozenset[str] | None  # its patients, when known

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": stored_path(self.source),  # a synthetic file's name, or "model NAME"
            "model": self.model,
            "status": self.status,
            "reason": self.reason,
            "gan_training_file": stored_path(self.gan_training_file) if self.gan_training_file else None,
        }


def _example(ids: set[str] | frozenset[str]) -> str:
    shown = sorted(ids)[:3]
    return ", ".join(repr(i) for i in shown) + (", ..." if len(ids) > 3 else "")


SALT_MISMATCH = "patient overlap cannot be checked: ingest both with the same --salt"


def check_same_salt(fingerprints: Mapping[Path, str | None]) -> None:
    """Refuse real files whose patient ids were pseudonymised with different salts.

    Args:
        fingerprints: per file, the salt fingerprint its provenance records (None: no pseudonyms, e.g. a
            simulated cohort's virtual patients; such files are not compared).

    Raises:
        LeakageError: two fingerprints differ.
    """
    known = [(path, fingerprint) for path, fingerprint in fingerprints.items() if fingerprint]
    for path, fingerprint in known[1:]:
        if fingerprint != known[0][1]:
            raise LeakageError(f"{SALT_MISMATCH} ({known[0][0]} and {path} were pseudonymised with different salts)")


def check_real_split(train: Sequence[RealFile], test: Sequence[RealFile]) -> None:
    """Refuse train and test data that share a file or a patient.

    Raises:
        LeakageError: one line naming the shared file or patients.
    """
    for test_file in test:
        for train_file in train:
            if test_file.sha256 == train_file.sha256:
                raise LeakageError(f"leakage: test file {test_file.path} is the same file as train file {train_file.path} (same SHA-256)")
    train_ids = frozenset().union(*(f.patient_ids for f in train))
    test_ids = frozenset().union(*(f.patient_ids for f in test))
    shared = train_ids & test_ids
    if shared:
        raise LeakageError(
            f"leakage: train and test share {len(shared)} patient id(s) ({_example(shared)}); "
            "split by patient so that no patient is in both"
        )


def _patient_ids_of(path: Path) -> frozenset[str]:
    from augmentor.data.reader import H5File

    file = H5File(path)
    try:
        return frozenset(str(p) for p in file.patient_ids().tolist())
    finally:
        file.close()


def check_synthetic(
    source: str,
    model: Mapping[str, Any] | None,
    train: Sequence[RealFile],
    test: Sequence[RealFile],
    *,
    train_patients_used: Sequence[str] = (),
    allow_unverified: bool = False,
) -> SyntheticCheck:
    """Check one synthetic source's provenance against the real train and test data.

    Args:
        source: the synthetic file or model, for messages.
        model: the provenance's ``model`` record (``trained_on_sha256``, ``trained_on_patients_sha256``,
            ``trained_on_path``, ``name``), or None when the file has none.
        train: the real train files.
        test: the real test files.
        train_patients_used: the train patients the downstream networks train on (the GAN may have been
            trained on exactly these).
        allow_unverified: accept a source whose training data cannot be matched to the train data.

    Returns:
        The check's conclusion (verified, or unverified when allowed).

    Raises:
        LeakageError: the GAN saw test data, or it cannot be ruled out and ``allow_unverified`` is False.
    """
    record = dict(model or {})
    model_name = str(record.get("name") or "unknown model")
    file_hash = record.get("trained_on_sha256") or None
    patients_hash = record.get("trained_on_patients_sha256") or None
    trained_path = Path(str(record["trained_on_path"])) if record.get("trained_on_path") else None
    who = source if source == f"model {model_name}" else f"synthetic data {source} (model {model_name})"

    test_ids = frozenset().union(*(f.patient_ids for f in test))
    train_ids = frozenset().union(*(f.patient_ids for f in train))
    for test_file in test:
        if file_hash == test_file.sha256:
            raise LeakageError(f"leakage: {who} was trained on test file {test_file.path} (SHA-256 {file_hash[:12]}…); train the GAN on training patients only")
    test_hashes = {sha256_text(f.patient_ids): str(f.path) for f in test}
    test_hashes[sha256_text(test_ids)] = "the test patients"
    test_hashes[sha256_text(train_ids | test_ids)] = "the train and test patients together"
    if patients_hash in test_hashes:
        raise LeakageError(
            f"leakage: {who} was trained on {test_hashes[patients_hash]} (patient-set SHA-256 {patients_hash[:12]}… matches); "
            "train the GAN on training patients only"
        )

    # A readable training file settles it: read its patients.
    gan_file: Path | None = None
    gan_patients: frozenset[str] | None = None
    readable = trained_path is not None and trained_path.is_file()
    if trained_path is not None and readable and (file_hash is None or sha256_file(trained_path) == file_hash):
        gan_file = trained_path
        gan_patients = _patient_ids_of(trained_path)
        shared = gan_patients & test_ids
        if shared:
            raise LeakageError(f"leakage: {who} was trained on {trained_path}, which holds {len(shared)} test patient(s) ({_example(shared)})")

    train_files = {f.sha256: f for f in train}
    train_hashes = {sha256_text(f.patient_ids): f for f in train}
    if file_hash in train_files:
        matched = train_files[file_hash]
        return SyntheticCheck(source, model_name, "verified", f"its model was trained on train file {stored_path(matched.path)}", matched.path, matched.patient_ids)
    if patients_hash is not None and patients_hash in train_hashes:
        matched = train_hashes[patients_hash]
        return SyntheticCheck(source, model_name, "verified", f"its model was trained on the patients of train file {stored_path(matched.path)}", matched.path, matched.patient_ids)
    if patients_hash is not None and patients_hash == sha256_text(train_ids):
        return SyntheticCheck(source, model_name, "verified", "its model was trained on the train patients", None, train_ids)
    if train_patients_used and patients_hash == sha256_text(train_patients_used):
        used = frozenset(train_patients_used)
        return SyntheticCheck(source, model_name, "verified", "its model was trained on the downstream training patients", None, used)
    if gan_file is not None:
        return SyntheticCheck(source, model_name, "verified", f"its training file {stored_path(gan_file)} holds no test patient", gan_file, gan_patients)

    if file_hash is None and patients_hash is None:
        why = "its provenance does not record the model's training data"
    else:
        shown = (file_hash or patients_hash or "")[:12]
        why = f"its model's training data (SHA-256 {shown}…) is neither a train file here nor the train patients, and is not readable"
    if not allow_unverified:
        raise LeakageError(f"cannot rule out leakage: {who}: {why}; set synthetic.allow_unverified=true to accept it")
    return SyntheticCheck(source, model_name, "unverified", why + " (accepted: synthetic.allow_unverified = true)", None, None)


def real_file(path: Path) -> RealFile:
    """Hash a real file and read its patient ids."""
    return RealFile(path=path, sha256=sha256_file(path), patient_ids=_patient_ids_of(path))


def check_validation_unseen(checks: Sequence[SyntheticCheck], validation_patients: Sequence[str], *, allow: bool) -> dict[str, Any]:
    """Refuse a generator that was trained on validation patients (unless ``allow``).

    The validation patients early-stop and select every arm's network. A generator trained on them
    carries their lesions into the synthetic arms, which then choose checkpoints on patients they have,
    in effect, trained on -- an advantage the real arms do not have.

    Returns:
        ``{"status": "unseen" | "seen (allowed)" | "unknown", "patients": k, "detail": ...}`` for the report.

    Raises:
        LeakageError: a generator's training patients include validation patients and ``allow`` is False.
    """
    validation = frozenset(validation_patients)
    seen: set[str] = set()
    unknown = []
    for check in checks:
        if check.gan_training_patients is None:
            unknown.append(stored_path(check.source))
        else:
            seen |= check.gan_training_patients & validation
    if seen and not allow:
        raise LeakageError(
            f"the generator was trained on {len(seen)} of the {len(validation)} validation patients ({_example(seen)}), which early-stop "
            "every arm; train it on the split's training patients (augment evaluate RECIPE --export-train FILE writes them), or set synthetic.allow_generator_saw_validation=true to accept it (the report says so)"
        )
    if seen:
        return {"status": "seen (allowed)", "patients": len(seen), "detail": f"the generator was trained on {len(seen)} of {len(validation)} validation patients"}
    if unknown:
        return {"status": "unknown", "patients": 0, "detail": f"training patients of {', '.join(unknown)} unknown"}
    return {"status": "unseen", "patients": 0, "detail": "the generator saw none of the validation patients"}
