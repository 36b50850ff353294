"""Arms of two evaluation reports against each other, paired by training seed and test sample.

Two runs of ``augment evaluate`` that differ in one input -- the generator (``synthetic.model``), a recipe of the
generator, the classifier -- and share the test set and the seeds answer "does A help more than B?" only if their
arms are compared *paired*: the same seeds and the same test lesions on both sides, so that what the two runs
share (the test patients' difficulty, a seed's luck) cancels. Two intervals side by side cannot say that::

    augment compare reports/tune-ada reports/tune-shipped --arm "classic+synthetic x1" \\
        [--test cohorts/lung-nodules-seed1/test.h5] [--out comparison.json]   # or: python -m evaluation.compare ...

prints, per arm and headline metric, A − B with its interval (the harness's method: a t interval over seeds
combined with a cluster bootstrap over test patients, the same resamples on both sides) and how many seeds came out
higher. The bootstrap resamples by patient, so it reads the reports' test files; the reports keep file names only
(folders may name a patient), so without ``--test`` the files are looked for where the tool puts them -- inside a
report folder (a cohort it built), under ``cohorts/<data.cohort_dir>/`` (the shipped recipes' layout), next to the
report folders, in the working folder -- and taken only where their SHA-256 is what both reports record.
``--test`` names them where they live elsewhere. The statistics settings (resamples, confidence, seed) are the
reports', which must agree.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from augmentor.data.provenance import sha256_file
from augmentor.data.reader import H5File
from augmentor.errors import AugmentorError
from augmentor.models.card import write_json_atomic
from evaluation import bootstrap, metrics
from evaluation.report import PREDICTIONS, format_pair, load_report

FORMAT = "augmentor-comparison"
TEST_ROLE = "real test"
TASKS = ("classification", "segmentation")


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _test_entries(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [entry for entry in (report.get("inputs") or {}).get("files", []) if entry.get("role") == TEST_ROLE]


def _test_hashes(report: Mapping[str, Any]) -> list[str]:
    return [str(entry["sha256"]) for entry in _test_entries(report)]


def locate_test_files(reports: Sequence[Mapping[str, Any]], folders: Sequence[Path]) -> list[Path]:
    """The reports' test files, found by name where the tool puts them and checked by SHA-256.

    Raises:
        AugmentorError: one line naming the file that was not found (give it with ``--test``).
    """
    entries = _test_entries(reports[0])
    found: list[Path] = []
    for index, entry in enumerate(entries):
        recorded = str(entry.get("path", ""))
        name = Path(recorded).name
        candidates = [folder / recorded for folder in folders]
        for report in reports:
            cohort_dir = ((report.get("recipe") or {}).get("data") or {}).get("cohort_dir")
            if cohort_dir:
                candidates.append(Path("cohorts") / Path(str(cohort_dir)).name / name)
        candidates += [folder.resolve().parent / name for folder in folders] + [Path(name)]
        seen: set[Path] = set()
        for candidate in candidates:
            if candidate.resolve() in seen or not candidate.is_file():
                continue
            seen.add(candidate.resolve())
            if sha256_file(candidate) == entry["sha256"]:
                found.append(candidate)
                break
        else:
            raise AugmentorError(
                f"the reports' test file {name!r} (SHA-256 {str(entry['sha256'])[:12]}…, file {index + 1} of "
                f"{len(entries)}) is not in a report folder, under cohorts/ or next to the reports: give it with --test"
            )
    return found


def _task_of(report: Mapping[str, Any], arm: str) -> str | None:
    for task in TASKS:
        if any(entry["name"] == arm for entry in (report.get(task) or {}).get("arms", [])):
            return task
    return None


def _predictions(folder: Path) -> Any:
    path = folder / PREDICTIONS
    if not path.is_file():
        raise AugmentorError(f"{path}: file not found (the report folder's per-seed test outputs)")
    try:
        return np.load(path)
    except (OSError, ValueError) as error:
        raise AugmentorError(f"{path}: not a readable .npz file ({error})") from None


def compare(report_a: Path, report_b: Path, arms: Sequence[str], test_files: Sequence[Path] | None = None) -> dict[str, Any]:
    """A − B for each of ``arms`` (named alike in both reports), paired by seed and test sample. ``test_files``:
    the reports' test files in their order; None or empty: found by :func:`locate_test_files`.

    Raises:
        AugmentorError: one line, when the reports do not share the test set, the seeds or the statistics
            settings, when an arm is missing, or when ``test_files`` are not the reports' test files.
    """
    reports = [load_report(path) for path in (report_a, report_b)]
    folders = [_folder(path) for path in (report_a, report_b)]
    hashes = [_test_hashes(report) for report in reports]
    if not hashes[0] or hashes[0] != hashes[1]:
        raise AugmentorError(f"{report_a} and {report_b} were not tested on the same files (SHA-256 of their '{TEST_ROLE}' files differ)")
    if reports[0]["seeds"] != reports[1]["seeds"]:
        raise AugmentorError(f"the reports trained different seeds ({reports[0]['seeds']} and {reports[1]['seeds']}): nothing to pair")
    settings: list[dict[str, Any]] = [{key: (report.get("statistics") or {}).get(key) for key in ("resamples", "confidence", "seed")} for report in reports]
    if None in settings[0].values():
        raise AugmentorError(f"{report_a}: the report records no statistics settings (resamples, confidence, seed)")
    if settings[0] != settings[1]:
        raise AugmentorError(f"the reports' statistics settings differ ({settings[0]} and {settings[1]})")
    if not test_files:
        test_files = locate_test_files(reports, folders)  # each checked by its SHA-256 there
    else:
        for path in test_files:
            if not path.is_file():
                raise AugmentorError(f"{path}: file not found")
        if [sha256_file(path) for path in test_files] != hashes[0]:
            raise AugmentorError(f"--test {' '.join(str(p) for p in test_files)}: not the reports' test files (their SHA-256 differ from the {len(hashes[0])} the reports record)")
    for arm in arms:
        for report, path in zip(reports, (report_a, report_b), strict=True):
            if _task_of(report, arm) is None:
                names = [entry["name"] for task in TASKS for entry in (report.get(task) or {}).get("arms", [])]
                raise AugmentorError(f"{path}: no arm {arm!r}; its arms are {', '.join(repr(name) for name in names)}")
        if _task_of(reports[0], arm) != _task_of(reports[1], arm):
            raise AugmentorError(f"{arm!r} is a {_task_of(reports[0], arm)} arm in one report and a {_task_of(reports[1], arm)} arm in the other")

    files = [H5File(path) for path in test_files]
    patients = np.concatenate([file.patient_ids().astype(str) for file in files])
    labels = np.concatenate([file.labels() for file in files])
    seeds = list(reports[0]["seeds"])
    stats = settings[0]
    plan = bootstrap.make_plan(patients, len(seeds), int(stats["resamples"]), float(stats["confidence"]), int(stats["seed"]))
    predictions = [_predictions(folder) for folder in folders]
    rows = []
    for arm in arms:
        task = _task_of(reports[0], arm)
        assert task is not None
        section = reports[0][task]
        names = list(section["metric_names"])
        both = []
        for saved in predictions:
            if task == "classification":
                probabilities = saved[f"{task}/{arm}/probabilities"]
                if probabilities.shape[:2] != (len(seeds), labels.size):
                    raise AugmentorError(f"{arm!r}: the saved outputs hold {probabilities.shape[1]} test samples, the test files {labels.size}")
                both.append(metrics.arm_statistics(names, plan.sample_weights, labels=labels, probabilities=probabilities, class_names=section["class_names"]))
            else:
                both.append(metrics.arm_statistics(names, plan.sample_weights, per_sample={name: saved[f"{task}/{arm}/{name}"] for name in names}))
        (points_a, replicates_a), (points_b, replicates_b) = both
        differences = {
            name: bootstrap.paired_difference(points_a[name], replicates_a[name], points_b[name], replicates_b[name], plan).to_dict()
            | {"seeds_higher": int(np.sum(points_a[name] > points_b[name]))}
            for name in names
        }
        rows.append({"arm": arm, "task": task, "headline_metrics": section["headline_metrics"], "differences": differences})
    sides = [
        {"report": str(path), "name": report.get("name"), "created": report.get("created"), "model": ((report.get("inputs") or {}).get("model") or {}).get("name")}
        for path, report in zip((report_a, report_b), reports, strict=True)
    ]
    return {"format": FORMAT, "a": sides[0], "b": sides[1], "seeds": seeds, "test_sha256": hashes[0], "statistics": stats, "arms": rows}


def markdown(result: Mapping[str, Any]) -> str:
    """A table per task: each arm's A − B on the task's headline metrics."""
    lines: list[str] = []
    for task in TASKS:
        rows = [row for row in result["arms"] if row["task"] == task]
        if not rows:
            continue
        header = ["arm: A − B", *(f"Δ {name}" for name in rows[0]["headline_metrics"])]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [row["arm"], *(format_pair(row["differences"].get(name), len(result["seeds"])) for name in rows[0]["headline_metrics"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    a, b = result["a"], result["b"]
    lines.append(f"A: {a['report']} (model {a['model']}); B: {b['report']} (model {b['model']}); {len(result['seeds'])} seeds, paired by seed and test sample [95 % CI].")
    return "\n".join(lines)


def compare_and_write(report_a: Path, report_b: Path, arms: Sequence[str], test_files: Sequence[Path] | None = None, out: Path | None = None, *, overwrite: bool = False) -> str:
    """:func:`compare`, written to ``out`` (JSON, atomically) if given; returns the markdown table.

    Raises:
        AugmentorError: as :func:`compare`, or ``out`` exists and not ``overwrite`` (checked first).
    """
    if out is not None and out.exists() and not overwrite:
        raise AugmentorError(f"{out} exists; pass --overwrite to replace it")
    result = compare(report_a, report_b, arms, test_files)
    if out is not None:
        write_json_atomic(out, result)
    return markdown(result)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.compare", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("report_a", type=Path, help="report folder (or report.json) of A")
    parser.add_argument("report_b", type=Path, help="report folder (or report.json) of B")
    parser.add_argument("--arm", action="append", required=True, help="an arm both reports have (repeat for several)")
    parser.add_argument("--test", type=Path, nargs="+", help="the reports' test files, in their order (default: found by name and SHA-256)")
    parser.add_argument("--out", type=Path, help="also write the comparison (JSON)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    arguments = parser.parse_args(argv)
    try:
        print(compare_and_write(arguments.report_a, arguments.report_b, arguments.arm, arguments.test, arguments.out, overwrite=arguments.overwrite))
    except AugmentorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
