"""The patient-level validation split carved from the training patients.

Early stopping and model selection need data the network does not train on; taking it from the test set
would bias the test estimate (the test set is touched once per trained network), and taking single
lesions would put sibling lesions of one patient on both sides. So whole patients are held out, with
classes balanced as well as whole patients allow (scikit-learn's ``StratifiedGroupKFold``: the first
of ``round(1 / fraction)`` folds is the validation set).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from augmentor.errors import AugmentorError


@dataclass(frozen=True)
class PatientSplit:
    """Indices into the real training data: which samples train and which validate."""

    train: np.ndarray  # (n_train,) int64, sorted
    validation: np.ndarray  # (n_validation,) int64, sorted
    train_patients: tuple[str, ...]
    validation_patients: tuple[str, ...]


def validation_split(labels: np.ndarray, patient_ids: np.ndarray, fraction: float, seed: int) -> PatientSplit:
    """Hold out about ``fraction`` of the patients, stratified by class.

    Args:
        labels: (N,) class of each training sample.
        patient_ids: (N,) patient of each sample.
        fraction: share of patients to validate on, in (0, 0.5].
        seed: which patients.

    Returns:
        The split; no patient is on both sides.

    Raises:
        AugmentorError: fewer than two patients, or a split that leaves one side empty.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    patients = np.unique(patient_ids)
    if patients.size < 2:
        raise AugmentorError(
            f"the training data has {patients.size} patient id(s); a patient-level validation split needs at least 2 "
            "(files without patient_ids count as one patient)"
        )
    folds = max(2, min(round(1.0 / fraction), patients.size))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "The least populated class in y has only k members" is expected for tiny cohorts.
        warnings.simplefilter("ignore", UserWarning)
        train, validation = next(splitter.split(np.zeros(len(labels)), labels, groups=patient_ids))
    if train.size == 0 or validation.size == 0:
        raise AugmentorError("the patient-level validation split left one side empty; add training patients")
    return PatientSplit(
        train=np.sort(train).astype(np.int64),
        validation=np.sort(validation).astype(np.int64),
        train_patients=tuple(sorted(set(patient_ids[train].tolist()))),
        validation_patients=tuple(sorted(set(patient_ids[validation].tolist()))),
    )
