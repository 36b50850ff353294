"""Cohort build time: ``liver-lesions`` (182 train + 1 500 test ROIs) must build in <= 3 minutes on 2 cores.

Run: ``.venv/bin/python bench/cohort.py [--cohort lung-nodules] [--workers 2]``. Builds into a temporary
directory (removed afterwards) and prints wall time, samples per second and the output size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from augmentor.data import read_info
from augmentor.simulate.cohorts import LESION_COHORTS, build_cohort, default_workers
from bench.results import record

TARGET_SECONDS = {"liver-lesions": 180.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", default="liver-lesions", choices=sorted(LESION_COHORTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    workers = default_workers() if args.workers is None else args.workers
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        paths = build_cohort(args.cohort, Path(directory), seed=args.seed, workers=workers, progress=not args.no_progress, overwrite=True)
        seconds = time.perf_counter() - start
        samples = sum(read_info(path).num_samples for path in paths.values())
        megabytes = sum(path.stat().st_size for path in paths.values()) / 1e6
    target = TARGET_SECONDS.get(args.cohort)
    verdict = "" if target is None else f"  (target <= {target:.0f} s: {'met' if seconds <= target else 'MISSED'})"
    print(f"{args.cohort}: {samples} ROIs (train + test) in {seconds:.1f} s with {workers} workers, "
          f"{samples / seconds:.0f} ROIs/s, {megabytes:.1f} MB{verdict}")
    record(f"cohort {args.cohort} build ({workers} workers)", seconds, "-" if target is None else f"<= {target:.0f} s",
           None if target is None else seconds <= target, "one run", unit=" s")


if __name__ == "__main__":
    main()
