"""The run's inputs: real train/test files (given, or a simulated cohort built and reused), and the
synthetic pool (given files, or generated deterministically from a model), each validated and hashed.

Everything that can be checked without writing is checked by :func:`check_real` / :func:`check_synthetic`
before anything is built, generated or trained, so bad inputs fail in seconds with one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.data.provenance import salt_fingerprint, sha256_file, stored_path, stored_provenance
from augmentor.data.reader import H5File, read_info
from augmentor.data.schema import DatasetInfo
from augmentor.errors import AugmentorError
from evaluation.leakage import RealFile, SyntheticCheck, check_real_split, check_same_salt
from evaluation.leakage import check_synthetic as check_synthetic_provenance
from evaluation.recipe import DataSection, SyntheticSection


@dataclass
class RealData:
    """The real train and test data, validated.

    Attributes:
        train: the train files (hash and patients).
        test: the test files.
        info: the first train file's description (classes, window, shape, spacing, mask labels).
        train_labels / train_patients: per train sample, over the train files in order.
        test_labels / test_patients: per test sample.
        cohort: how a simulated cohort was obtained ({name, seed, dir, built}), or None for given files.
    """

    train: list[RealFile]
    test: list[RealFile]
    info: DatasetInfo
    train_labels: np.ndarray
    train_patients: np.ndarray
    test_labels: np.ndarray
    test_patients: np.ndarray
    cohort: dict[str, Any] | None = None

    @property
    def train_paths(self) -> list[Path]:
        return [f.path for f in self.train]

    @property
    def test_paths(self) -> list[Path]:
        return [f.path for f in self.test]


def _infos(paths: Sequence[str | Path], role: str) -> list[DatasetInfo]:
    infos = [read_info(Path(p)) for p in paths]
    for info in infos:
        if not info.has_patient_ids:
            raise AugmentorError(f"{info.path}: {role} file has no patient_ids; patient-level splits, leakage checks and the patient bootstrap need them")
        if info.num_samples == 0:
            raise AugmentorError(f"{info.path}: {role} file holds no samples")
    return infos


def _check_compatible(reference: DatasetInfo, other: DatasetInfo, what: str) -> None:
    if other.class_names != reference.class_names:
        raise AugmentorError(f"{other.path}: {what} classes {list(other.class_names)} differ from {reference.path}'s {list(reference.class_names)}")
    if other.image_shape != reference.image_shape:
        raise AugmentorError(f"{other.path}: {what} image shape {other.image_shape} differs from {reference.path}'s {reference.image_shape}")


def _labels_and_patients(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    labels, patients = [], []
    for path in paths:
        file = H5File(path)
        labels.append(file.labels())
        patients.append(file.patient_ids().astype(str))
        file.close()
    return np.concatenate(labels), np.concatenate(patients)


def check_real(train_paths: Sequence[str | Path], test_paths: Sequence[str | Path]) -> RealData:
    """Validate, hash and leakage-check the real train and test files.

    Raises:
        AugmentorError: a missing or invalid file, files that do not match, files pseudonymised with
            different salts (their patients cannot be compared), or leakage between train and test.
    """
    train_infos, test_infos = _infos(train_paths, "train"), _infos(test_paths, "test")
    check_same_salt({info.path: salt_fingerprint(info.provenance) for info in [*train_infos, *test_infos]})
    reference = train_infos[0]
    for info in train_infos[1:]:
        _check_compatible(reference, info, "train")
    for info in test_infos:
        _check_compatible(reference, info, "test")
    train_parts = [_labels_and_patients([i.path]) for i in train_infos]
    test_parts = [_labels_and_patients([i.path]) for i in test_infos]
    train = [RealFile(i.path, sha256_file(i.path), frozenset(part[1].tolist())) for i, part in zip(train_infos, train_parts, strict=True)]
    test = [RealFile(i.path, sha256_file(i.path), frozenset(part[1].tolist())) for i, part in zip(test_infos, test_parts, strict=True)]
    train_labels, train_patients = (np.concatenate([part[k] for part in train_parts]) for k in (0, 1))
    test_labels, test_patients = (np.concatenate([part[k] for part in test_parts]) for k in (0, 1))
    check_real_split(train, test)
    missing = sorted(set(range(reference.num_classes)) - set(train_labels.tolist()))
    if missing:
        raise AugmentorError(f"the train data has no sample of class {', '.join(reference.class_names[c] for c in missing)}")
    return RealData(train, test, reference, train_labels, train_patients, test_labels, test_patients)


def _cohort_identity(options: DataSection) -> tuple[dict[str, Any], Any]:
    """What a cohort file of the recipe must record, and how to read that from a file's provenance."""
    from augmentor.simulate.cohorts import LESION_COHORTS, SIMULATOR_VERSION

    if options.cohort == "abdomen-ct":
        from augmentor.simulate import abdomen

        # whole slices: each file records its own split's size (in its recipe) and the simulator's version
        expected: dict[str, Any] = {
            "cohort": options.cohort,
            "seed": options.cohort_seed,
            "sizes": {"train": options.cohort_train_size or abdomen.DEFAULT_TRAIN_SIZE, "test": options.cohort_test_size or abdomen.DEFAULT_TEST_SIZE},
            "simulator_version": abdomen.SIMULATOR_VERSION,
        }

        def found_abdomen(provenance: dict[str, Any], split: str) -> dict[str, Any]:
            recipe = provenance.get("recipe", {}) or {}
            details = provenance.get("details", {}) or {}
            return {
                "cohort": recipe.get("cohort"), "seed": provenance.get("seed"), "sizes": {**expected["sizes"], split: recipe.get("size")},
                "simulator_version": details.get("simulator"),
            }

        return expected, found_abdomen
    cohort = LESION_COHORTS[options.cohort]
    expected_lesions: dict[str, Any] = {
        "cohort": options.cohort,
        "seed": options.cohort_seed,
        "train_size": options.cohort_train_size or sum(cohort.train_counts),
        "test_size": options.cohort_test_size or cohort.test_size,
        "simulator_version": SIMULATOR_VERSION,
    }

    def found_lesions(provenance: dict[str, Any], split: str) -> dict[str, Any]:
        details = provenance.get("details", {}) or {}
        return {
            "cohort": details.get("cohort"),
            "seed": provenance.get("seed"),
            "train_size": details.get("train_size"),
            "test_size": details.get("test_size"),
            "simulator_version": details.get("simulator_version"),
        }

    return expected_lesions, found_lesions


def cohort_paths(options: DataSection, staging: Path) -> tuple[Path, bool]:
    """Where the cohort lives and whether it must be built (False: a matching one is there to reuse).

    Raises:
        AugmentorError: the directory holds a different cohort (name, seed, sizes or simulator version).
    """
    directory = Path(options.cohort_dir) if options.cohort_dir else staging / "inputs" / "cohort"
    train, test = directory / "train.h5", directory / "test.h5"
    if not (train.exists() or test.exists()):
        return directory, True
    expected, read_identity = _cohort_identity(options)
    for split, path in (("train", train), ("test", test)):
        if not path.exists():
            raise AugmentorError(f"{directory}: holds {train.name if path is test else test.name} but not {path.name}; delete it or set data.cohort_dir elsewhere")
        found = read_identity(read_info(path).provenance, split)
        if found != expected:
            differing = ", ".join(f"{key} {found[key]!r} (recipe: {expected[key]!r})" for key in expected if found[key] != expected[key])
            raise AugmentorError(f"{path}: holds another cohort ({differing}); delete it or set data.cohort_dir elsewhere")
    return directory, False


def build_or_reuse_cohort(options: DataSection, staging: Path, progress: bool) -> tuple[list[Path], list[Path], dict[str, Any]]:
    """Build the recipe's cohort (or reuse a matching one); returns train paths, test paths and a record."""
    from augmentor.simulate.cohorts import build_cohort

    directory, build = cohort_paths(options, staging)
    if build:
        build_cohort(
            options.cohort,
            directory,
            seed=options.cohort_seed,
            train_size=options.cohort_train_size or None,
            test_size=options.cohort_test_size or None,
            progress=progress,
        )
    record = {"name": options.cohort, "seed": options.cohort_seed, "dir": str(directory), "built": build}
    return [directory / "train.h5"], [directory / "test.h5"], record


# -------------------------------------------------------------------------------------- synthetic ----


@dataclass
class SyntheticData:
    """The synthetic pool and what its provenance check concluded.

    Attributes:
        paths: the pool's files (after generation, for a model).
        checks: one leakage check per file (or one for the model).
        model: the zoo/path model entry's name and card summary when generating; None for given files.
        generate_counts: per class, how many samples to generate (model only).
        generated: whether the pool was generated in this run (False: given or reused).
    """

    paths: list[Path]
    checks: list[SyntheticCheck]
    model: dict[str, Any] | None = None
    model_path: Path | None = None
    generate_counts: tuple[int, ...] = ()
    generated: bool = False
    validation_check: dict[str, Any] = field(default_factory=dict)  # did the generator see validation patients?
    info: list[dict[str, Any]] = field(default_factory=list)


def check_synthetic(
    options: SyntheticSection,
    real: RealData,
    needed_per_class: Sequence[int],
    wanted_per_class: Sequence[int],
    train_patients_used: Sequence[str],
) -> SyntheticData | None:
    """Validate the synthetic inputs (files or model) against the real data, without generating.

    Args:
        options: the recipe's ``[synthetic]`` section.
        real: the validated real data.
        needed_per_class: synthetic samples each class must have (the largest any arm uses).
        wanted_per_class: samples per class a model generates (the arms' needs and the audits').
        train_patients_used: the downstream training patients (for the provenance check).

    Returns:
        The synthetic data (paths still to generate, for a model), or None when the recipe gives none.

    Raises:
        AugmentorError: invalid files, classes or shapes that do not match, too few samples, or leakage.
    """
    class_names = real.info.class_names
    if options.files:
        infos = [read_info(Path(p)) for p in options.files]
        checks = []
        for info in infos:
            _check_compatible(real.info, info, "synthetic")
            checks.append(
                check_synthetic_provenance(
                    str(info.path), info.provenance.get("model"), real.train, real.test,
                    train_patients_used=train_patients_used, allow_unverified=options.allow_unverified,
                )
            )
        labels = np.concatenate([H5File(info.path).labels() for info in infos])
        for c, need in enumerate(needed_per_class):
            have = int((labels == c).sum())
            if have < need:
                raise AugmentorError(
                    f"the synthetic files hold {have} samples of class {class_names[c]!r}, the arms need {need}; "
                    "generate more or lower arms.sweep / arms.pretrain_samples"
                )
        return SyntheticData([info.path for info in infos], checks)
    if not options.model:
        return None
    from augmentor.zoo import resolve_model

    entry = resolve_model(options.model)
    if tuple(entry.class_names) != tuple(class_names):
        raise AugmentorError(f"model {entry.name} generates classes {list(entry.class_names)}, the real data has {list(class_names)} (same names, same order needed)")
    if entry.image_size != real.info.image_shape[-1]:
        raise AugmentorError(f"model {entry.name} makes {entry.image_size}x{entry.image_size} images, the real data is {real.info.image_shape[-1]}x{real.info.image_shape[-2]}")
    training = entry.card.get("training_data", {}) or {}
    record = {
        "name": entry.name,
        "trained_on_sha256": training.get("sha256"),
        "trained_on_patients_sha256": training.get("patients_sha256"),
        "trained_on_path": training.get("path"),
    }
    check = check_synthetic_provenance(
        f"model {entry.name}", record, real.train, real.test, train_patients_used=train_patients_used, allow_unverified=options.allow_unverified
    )
    summary = {
        "name": entry.name,
        "origin": entry.origin,
        "path": stored_path(entry.path),
        "family": entry.family,
        "algorithm": entry.algorithm,
        "weights_sha256": entry.weights_sha256,
        "training_data": {**training, "path": stored_path(training["path"])} if training.get("path") else training,
    }
    return SyntheticData([], [check], model=summary, model_path=entry.path, generate_counts=tuple(int(n) for n in wanted_per_class))


def _pool_matches(path: Path, synthetic: SyntheticData, seed: int) -> bool:
    info = read_info(path)
    model = info.provenance.get("model", {}) or {}
    assert synthetic.model is not None
    if model.get("weights_sha256") != synthetic.model["weights_sha256"] or info.provenance.get("seed") != seed:
        raise AugmentorError(f"{path}: holds samples of another model or seed; delete it or set synthetic.pool elsewhere")
    if (info.provenance.get("details", {}) or {}).get("start", 0) != 0:
        raise AugmentorError(f"{path}: is a shard (start != 0); delete it or set synthetic.pool elsewhere")
    labels = H5File(path).labels()
    return all(int((labels == c).sum()) >= n for c, n in enumerate(synthetic.generate_counts))


def generate_pool(options: SyntheticSection, synthetic: SyntheticData, class_names: Sequence[str], staging: Path, progress: bool) -> None:
    """Generate the pool from the model (or reuse a matching one at ``synthetic.pool``), in place."""
    from augmentor.generate import generate

    if synthetic.model_path is None or not any(synthetic.generate_counts):
        return
    path = Path(options.pool) if options.pool else staging / "inputs" / "synthetic.h5"
    if path.exists() and _pool_matches(path, synthetic, options.seed):
        synthetic.paths = [path]
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    requests = [f"{name}={count}" for name, count in zip(class_names, synthetic.generate_counts, strict=True) if count > 0]
    generate(
        requests, None, path, model=synthetic.model_path, seed=options.seed, batch_size=options.batch_size,
        device=options.device, overwrite=path.exists(), progress=progress,
    )
    synthetic.paths = [path]
    synthetic.generated = True


# The recipe values that are paths ([section] -> keys); the report's copy keeps only their file names.
RECIPE_PATHS = {"data": ("train", "test", "cohort_dir"), "synthetic": ("files", "model", "pool"), "phantoms": ("file", "translation_models", "dir")}


def stored_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """The resolved recipe as the report stores it: every path reduced to its file name
    (:func:`augmentor.data.provenance.stored_path`); zoo model names are kept as they are."""
    copy = {section: dict(values) if isinstance(values, dict) else values for section, values in recipe.items()}
    for section, keys in RECIPE_PATHS.items():
        values = copy.get(section)
        if not isinstance(values, dict):
            continue
        for key in keys:
            value = values.get(key)
            if isinstance(value, str) and value:
                values[key] = stored_path(value)
            elif isinstance(value, list | tuple):
                values[key] = [stored_path(item) for item in value]
    return copy


def describe_file(path: Path, role: str, sha256: str | None = None) -> dict[str, Any]:
    """Provenance entry of an input file for the report (its own path is reduced by the caller)."""
    info = read_info(path)
    file = H5File(path)
    labels = file.labels()
    patients = np.unique(file.patient_ids()).size if info.has_patient_ids else None
    file.close()
    return {
        "role": role,
        "path": str(path),
        "sha256": sha256 or sha256_file(path),
        "samples": info.num_samples,
        "patients": patients,
        "class_counts": {name: int((labels == c).sum()) for c, name in enumerate(info.class_names)},
        "source": info.source.value,
        "image_shape": list(info.image_shape),
        "hu_window": list(info.hu_window),
        "provenance": stored_provenance(info.provenance),
    }


# ----------------------------------------------------------------------------------------- oracle ----


def oracle_train_size(cohort_name: str, needed_per_class: Sequence[int]) -> int:
    """The smallest train size whose class split (the cohort's proportions) holds ``needed_per_class``."""
    from augmentor.simulate.cohorts import LESION_COHORTS, split_counts

    weights = LESION_COHORTS[cohort_name].train_counts
    size = max(1, sum(needed_per_class))
    while any(have < need for have, need in zip(split_counts(size, weights), needed_per_class, strict=True)):
        size += 1
    return size


def build_or_reuse_oracle(options: DataSection, oracle_seed: int, needed_per_class: Sequence[int], staging: Path, progress: bool) -> tuple[Path, dict[str, Any]]:
    """Real lesions of new virtual patients for the oracle arms: the cohort's train split at ``oracle_seed``.

    Built next to ``data.cohort_dir`` (``<cohort name>-oracle-seed<seed>-n<train size>``, shared by every
    cohort seed's evaluation) or inside the report folder. The size is in the name because the lesions drawn
    depend on it: a run that needs another size (other arms, another sweep) builds its own pool beside the
    existing one instead of replacing it, so the two runs' cached jobs stay valid.

    Returns:
        The oracle file (its train split) and a record for the report.
    """
    from augmentor.simulate.cohorts import SIMULATOR_VERSION, build_cohort

    size = oracle_train_size(options.cohort, needed_per_class)
    directory = Path(options.cohort_dir).parent / f"{options.cohort}-oracle-seed{oracle_seed}-n{size}" if options.cohort_dir else staging / "inputs" / "oracle"
    path = directory / "train.h5"
    reuse = False
    if path.exists():
        provenance = read_info(path).provenance
        details = provenance.get("details", {}) or {}
        reuse = (
            details.get("cohort") == options.cohort
            and provenance.get("seed") == oracle_seed
            and details.get("simulator_version") == SIMULATOR_VERSION
            and int(details.get("train_size") or 0) == size  # the lesions drawn depend on the size: reuse only the same
        )
    if not reuse:
        build_cohort(options.cohort, directory, seed=oracle_seed, train_size=size, test_size=1, overwrite=True, progress=progress)
    record = {"cohort": options.cohort, "seed": oracle_seed, "lesions": read_info(path).num_samples, "dir": str(directory), "built": not reuse}
    return path, record
