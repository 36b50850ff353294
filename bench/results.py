"""What every benchmark reports: a figure, its target, whether it passed, and the spread behind it.

A benchmark calls :func:`record` for each figure (a ratio is the median of >= 5 interleaved repeats, with
the repeats' min-max as its spread). The line is printed; when ``BENCH_RESULTS`` names a file (as
``bench/all.py`` sets it), it is also appended there as JSON, from which ``make bench`` prints one table.
This file is a helper, not a benchmark: ``bench/all.py`` does not run it.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence

RESULTS_ENV = "BENCH_RESULTS"
MIN_REPEATS = 5


def spread(values: Sequence[float], digits: int = 2) -> str:
    """``"min-max over N repeats"`` of a figure's repeats."""
    return f"{min(values):.{digits}f}-{max(values):.{digits}f} over {len(values)}"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def record(figure: str, value: float | str, target: str = "-", passed: bool | None = None, spread_text: str = "", unit: str = "") -> None:
    """Print one figure and, under ``bench/all.py``, add it to the table.

    Args:
        figure: what was measured (e.g. "generate / bare forward").
        value: the figure (a float is printed with 2 decimals).
        target: the target as text (e.g. ">= 0.85"); "-" when the figure is information only.
        passed: whether the target was met (None: no target).
        spread_text: the spread of the repeats (see :func:`spread`).
        unit: appended to a float value.
    """
    shown = f"{value:.2f}{unit}" if isinstance(value, float) else str(value)
    verdict = "" if passed is None else ("  PASS" if passed else "  FAIL")
    print(f"[figure] {figure}: {shown}" + (f" (spread {spread_text})" if spread_text else "") + (f"  target {target}" if target != "-" else "") + verdict, flush=True)
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a") as stream:
            stream.write(json.dumps({"figure": figure, "value": shown, "target": target, "passed": passed, "spread": spread_text}) + "\n")
