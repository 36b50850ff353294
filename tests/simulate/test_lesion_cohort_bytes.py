"""The lesion-ROI cohorts keep their bytes: the shipped lesion models were trained on them.

A change anywhere in the shared acquisition (projector, kernels, noise calibration) or in the lesion
scenes that moves a single pixel of a seed's cohort fails here. If such a change is intended, it must
bump ``cohorts.SIMULATOR_VERSION``, retrain the shipped lesion models and update these digests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import pytest

from augmentor.simulate import cohorts
from augmentor.simulate.cohorts import build_cohort

# sha256 of images, masks and labels (in that order) of a seed-5 cohort with 3 train and 2 test lesions.
PINNED = {
    ("liver-lesions", "train"): "b794d605c28b492e560ac4e72161019ea9ecc5131890894ff3e2be9205e6deb4",
    ("liver-lesions", "test"): "70875edb6222f1e99a828f69313890a812c769e22d940df1f838eb356529228a",
    ("lung-nodules", "train"): "d42140fe15ff4c864b14444c668b3563438bcc828e8514e53ec3c0a10b5737ac",
    ("lung-nodules", "test"): "d0d28ef906349b90575d23848d51eaa1f1b883bffec9b90d4ba5688df99965d4",
}


@pytest.mark.parametrize("name", ["liver-lesions", "lung-nodules"])
def test_tiny_lesion_cohort_has_its_pinned_bytes(name: str, tmp_path: Path) -> None:
    assert cohorts.SIMULATOR_VERSION == "lesion-roi-3"
    paths = build_cohort(name, tmp_path, seed=5, train_size=3, test_size=2, workers=1, progress=False)
    for split, path in paths.items():
        digest = hashlib.sha256()
        with h5py.File(path, "r") as handle:
            for key in ("images", "masks", "labels"):
                digest.update(handle[key][...].tobytes())
        assert digest.hexdigest() == PINNED[(name, split)], (name, split)
