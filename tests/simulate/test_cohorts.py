"""Cohort builds: the HDF5 contract, determinism for any worker count, disjoint patients, errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from augmentor.data import H5Dataset, read_info
from augmentor.errors import AugmentorError, OutputExistsError
from augmentor.simulate import cohorts
from augmentor.simulate.cohorts import build_cohort


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        arrays = {name: handle[name][...] for name in ("images", "masks", "labels", "patient_ids")}
        for name in handle["extras"]:
            arrays[f"extras/{name}"] = handle["extras"][name][...]
    return arrays


@pytest.fixture(scope="module")
def tiny_liver(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_cohort("liver-lesions", tmp_path_factory.mktemp("liver"), seed=3, train_size=9, test_size=7, workers=1, progress=False)


def test_liver_cohort_follows_the_contract(tiny_liver: dict[str, Path]) -> None:
    train, test = read_info(tiny_liver["train"]), read_info(tiny_liver["test"])
    assert (train.num_samples, test.num_samples) == (9, 7)
    assert train.class_names == ("cyst", "metastasis", "hemangioma")
    assert train.image_shape == (1, 64, 64)
    assert train.hu_window == (-160.0, 240.0)
    assert train.source.value == "real"  # the virtual patients stand in for the real cohort
    assert train.pixel_spacing_mm == (0.8, 0.8)
    assert train.has_patient_ids and set(train.extras) >= {"diameter_mm", "noise_sd_hu"}
    details = train.provenance["details"]
    assert train.provenance["seed"] == 3
    assert details["cohort"] == "liver-lesions" and details["simulator_version"] == cohorts.SIMULATOR_VERSION
    assert details["class_counts"] == {"cyst": 3, "metastasis": 3, "hemangioma": 3}
    arrays = _arrays(tiny_liver["train"])
    assert arrays["images"].dtype == np.int16 and arrays["masks"].dtype == np.uint8
    assert all(arrays["masks"][k].sum() > 0 for k in range(9))  # every ROI has its lesion
    assert np.all((arrays["extras/diameter_mm"] >= 5.0) & (arrays["extras/diameter_mm"] <= 40.0))
    # Liver parenchyma in the portal-venous phase sits around 100-130 HU.
    assert 80.0 < np.median(arrays["images"][arrays["masks"][:, None] == 0]) < 145.0
    # The plug-in dataset reads it.
    sample = H5Dataset(tiny_liver["test"])[0]
    assert sample["image"].shape == (1, 64, 64) and sample["mask"].shape == (1, 64, 64)


def test_train_and_test_patients_are_disjoint(tiny_liver: dict[str, Path]) -> None:
    train_ids = set(_arrays(tiny_liver["train"])["patient_ids"].tolist())
    test_ids = set(_arrays(tiny_liver["test"])["patient_ids"].tolist())
    assert train_ids and test_ids and not train_ids & test_ids


def test_same_arrays_for_any_worker_count(tiny_liver: dict[str, Path], tmp_path: Path) -> None:
    # 17 training samples span two chunks, so two workers really share the work.
    one = build_cohort("liver-lesions", tmp_path / "one", seed=3, train_size=17, test_size=7, workers=1, progress=False)
    two = build_cohort("liver-lesions", tmp_path / "two", seed=3, train_size=17, test_size=7, workers=2, progress=False)
    for split in ("train", "test"):
        first, second = _arrays(one[split]), _arrays(two[split])
        for name in first:
            assert np.array_equal(first[name], second[name]), (split, name)
    # The test split does not depend on the train size: arms of an experiment share one test set.
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(one["test"]).values(), _arrays(tiny_liver["test"]).values(), strict=True))


def test_lung_cohort(tmp_path: Path) -> None:
    paths = build_cohort("lung-nodules", tmp_path, seed=1, train_size=4, test_size=3, workers=0, progress=False)
    info = read_info(paths["train"])
    assert info.class_names == ("benign", "malignant") and info.hu_window == (-1000.0, 400.0)
    arrays = _arrays(paths["train"])
    assert np.bincount(arrays["labels"], minlength=2).tolist() == [2, 2]
    # Aerated lung dominates the background.
    assert np.median(arrays["images"]) < -600


def test_unknown_cohort_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(AugmentorError) as caught:
        build_cohort("liver-lesion", tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "did you mean 'liver-lesions'" in message and "lung-nodules" in message
    assert not any(tmp_path.iterdir())


def test_existing_output_is_refused_and_left_alone(tiny_liver: dict[str, Path]) -> None:
    directory = tiny_liver["train"].parent
    before = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in directory.iterdir()}
    with pytest.raises(OutputExistsError, match="--overwrite"):
        build_cohort("liver-lesions", directory, seed=4, train_size=3, test_size=3, workers=1, progress=False)
    after = {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in directory.iterdir()}
    assert after == before


@pytest.mark.parametrize("size", [0, -3, 2.5])
def test_bad_sizes_are_refused(tmp_path: Path, size: object) -> None:
    with pytest.raises(AugmentorError, match="train size"):
        build_cohort("lung-nodules", tmp_path, train_size=size, progress=False)  # type: ignore[arg-type]


def test_default_plan_matches_the_published_sets() -> None:
    counts = cohorts.split_counts(182, cohorts.LIVER_LESIONS.train_counts)
    assert counts == (53, 64, 65)
    plan = cohorts.plan_split(cohorts.LIVER_LESIONS, counts, 0, "train")
    assert np.bincount([p.class_index for p in plan]).tolist() == [53, 64, 65]
    lesions_per_patient = np.bincount([p.patient_index for p in plan])
    # A realistic referral cohort: roughly a hundred patients, several lesions in some.
    assert 70 <= lesions_per_patient.size <= 140 and lesions_per_patient.max() >= 3
    assert cohorts.split_counts(60, cohorts.LUNG_NODULES.train_counts) == (30, 30)
    lung = cohorts.plan_split(cohorts.LUNG_NODULES, (30, 30), 0, "train")
    benign_per_patient = np.bincount([p.patient_index for p in lung if p.class_index == 0])
    benign_per_patient = benign_per_patient[benign_per_patient > 0]
    # Granulomatous disease leaves several nodules in some patients: 30 benign nodules from ~15 people.
    assert 10 <= benign_per_patient.size <= 22 and benign_per_patient.max() >= 3
    assert sum(cohorts.split_counts(5000, cohorts.LIVER_LESIONS.train_counts)) == 5000


def test_cohort_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    out = tmp_path / "lung"
    result = runner.invoke(app, ["cohort", "lung-nodules", "--out", str(out), "--seed", "2", "--train-size", "2", "--test-size", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "train.h5").exists() and (out / "test.h5").exists()
    again = runner.invoke(app, ["cohort", "lung-nodules", "--out", str(out), "--train-size", "2", "--test-size", "2"])
    assert again.exit_code == 2 and again.output.strip() == f"error: {out / 'train.h5'} exists; pass --overwrite to replace it"
    unknown = runner.invoke(app, ["cohort", "kidney", "--out", str(tmp_path / "k")])
    assert unknown.exit_code == 2 and unknown.output.count("\n") == 1 and "valid: liver-lesions" in unknown.output
