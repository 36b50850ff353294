"""``make bench``: run every benchmark, then print one table (figure, value, target, pass/fail, spread).

Each benchmark prints its own lines as it goes and reports its figures through :mod:`bench.results`;
this script collects them and prints the table last, with the total time. The difficulty calibration
(``bench/cohort_difficulty.py``, 30 minutes to hours) runs as its ``--quick`` smoke run unless ``--full``
(``make bench BENCH_FULL=1``) asks for the real one.

    python bench/all.py [--full] [--only generate,train]

Every ``bench/*.py`` but this runner and ``results.py`` is a benchmark; one that reports no figure through
:func:`bench.results.record` still gets a row saying it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import RESULTS_ENV

ROOT = Path(__file__).resolve().parent.parent

# Every bench/*.py runs (a new benchmark joins the table by being there), with these arguments where the
# defaults are not make bench's sizes; each ratio is still the median of >= 5 interleaved repeats.
# To fit the table in 15 minutes on 2 cores: the CycleGAN step at 128x128 only (256x256 takes 3 s a step;
# `python bench/train.py` times both) and generation's throughput ratio on 4 096 samples a side.
ARGUMENTS: dict[str, list[str]] = {
    "augmentation": ["--repeats", "5"],
    "cohort": ["--no-progress"],
    "dataset": ["--repeats", "5"],
    "generate": ["--ratio-n", "4096"],
    "train": ["--cyclegan-sizes", "128", "--cyclegan-steps", "4"],
}
NOT_BENCHMARKS = {"all", "results"}  # this runner and the reporting helper
CALIBRATION = "cohort_difficulty"  # run last, --quick unless --full


def benchmarks() -> list[str]:
    """The benchmark scripts' names, in name order, the calibration excluded."""
    names = sorted(path.stem for path in (ROOT / "bench").glob("*.py"))
    return [name for name in names if name not in NOT_BENCHMARKS | {CALIBRATION}]


def difficulty_rows(path: Path, full: bool) -> list[dict[str, object]]:
    """The calibration's figures from its ``--json`` record."""
    from bench.cohort_difficulty import GAIN_TARGET, SENSITIVITY_TARGET

    summary = json.loads(path.read_text())["across_cohort_seeds"]
    sensitivity = summary["small"]["sensitivity_macro"]["mean"]
    if not full:
        return [{"figure": "difficulty calibration (--quick smoke run: tiny cohorts, numbers mean nothing)",
                 "value": f"ran (sensitivity {sensitivity:.2f})", "target": "full run: make bench BENCH_FULL=1", "passed": None, "spread": ""}]
    low, high = SENSITIVITY_TARGET
    rows: list[dict[str, object]] = [{"figure": "difficulty: macro sensitivity, published train count", "value": f"{sensitivity:.3f}",
                                      "target": f"{low:.2f}-{high:.2f}", "passed": low <= sensitivity <= high, "spread": ""}]
    if "gain" in summary:
        gain = summary["gain"]["sensitivity_macro"]["mean"]
        rows.append({"figure": "difficulty: sensitivity gain with 5 000 lesions", "value": f"{gain:+.3f}", "target": f">= {GAIN_TARGET:.2f}",
                     "passed": gain >= GAIN_TARGET, "spread": ""})
    return rows


def print_table(rows: list[dict[str, object]], seconds: float) -> None:
    columns = ("figure", "value", "target", "result", "spread (min-max over repeats)")
    cells = [[str(row["figure"]), str(row["value"]), str(row["target"]),
              {True: "pass", False: "FAIL", None: "-"}[row["passed"]], str(row["spread"])] for row in rows]  # type: ignore[index]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    print("\n" + "  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)))
    print("  ".join("-" * width for width in widths))
    for line in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
    print(f"\n{len(rows)} figures in {seconds / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="run the full difficulty calibration (30 minutes to hours), not its --quick smoke run")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names (default: all, and the calibration)")
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else None
    start = time.perf_counter()
    rows: list[dict[str, object]] = []
    failed = []
    with tempfile.TemporaryDirectory() as folder:
        results = Path(folder) / "results.jsonl"
        environment = {**os.environ, RESULTS_ENV: str(results)}
        for name in benchmarks():
            if chosen is not None and name not in chosen:
                continue
            arguments = ARGUMENTS.get(name, [])
            print(f"== bench/{name}.py {' '.join(arguments)}", flush=True)
            began = time.perf_counter()
            status = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), *arguments], env=environment, cwd=ROOT).returncode
            recorded = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
            results.unlink(missing_ok=True)
            rows += recorded
            if status:
                failed.append(name)
                rows.append({"figure": f"bench/{name}.py", "value": f"exited {status}", "target": "runs", "passed": False, "spread": ""})
            elif not recorded:
                rows.append({"figure": f"bench/{name}.py", "value": "ran; no figure recorded (see its output)", "target": "-", "passed": None, "spread": ""})
            print(f"   ({time.perf_counter() - began:.0f} s)", flush=True)
        if chosen is None or CALIBRATION in chosen:
            record = Path(folder) / "difficulty.json"
            arguments = ["--json", str(record)] + ([] if args.full else ["--quick"])
            print(f"== bench/{CALIBRATION}.py {' '.join(arguments)}", flush=True)
            status = subprocess.run([sys.executable, str(ROOT / "bench" / f"{CALIBRATION}.py"), *arguments], cwd=ROOT).returncode
            if status or not record.exists():
                failed.append(CALIBRATION)
                rows.append({"figure": f"bench/{CALIBRATION}.py", "value": f"exited {status}", "target": "runs", "passed": False, "spread": ""})
            else:
                rows += difficulty_rows(record, args.full)
    print_table(rows, time.perf_counter() - start)
    if failed:
        print(f"failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
