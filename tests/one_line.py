"""The CLI's promise for bad input, as one assertion: exit status 2 and one line starting with ``error: ``."""

from __future__ import annotations


def assert_one_line_error(result: object, *fragments: str) -> None:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 2, output  # type: ignore[attr-defined]
    assert output.startswith("error: ") and output.count("\n") == 1, output
    for fragment in fragments:
        assert fragment in output, (fragment, output)
