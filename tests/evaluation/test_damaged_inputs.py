"""``augment evaluate`` on an input with damaged samples: one line naming the file and the sample, exit 2,
and no report or staging folder left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def test_damaged_test_file_is_a_one_line_error(tiny_inputs: Any, run_evaluate: Any, flip_sample_bytes: Any, tmp_path: Path) -> None:
    flip_sample_bytes(tiny_inputs.test, 5)
    out = tmp_path / "reports" / "tiny"
    code, output = run_evaluate(out, tiny_inputs.overrides())
    assert code == 2, output
    assert output.startswith("error: ") and output.count("\n") == 1, output
    assert f"{tiny_inputs.test}: sample 5 of 'images' cannot be read" in output
    assert not out.exists() and not list(out.parent.glob(".*"))
