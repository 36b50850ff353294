"""Progress bars for long work: one rich bar on stderr, silent when stderr is not a terminal.

Library functions take ``progress: bool`` and wrap their loop in :func:`progress_bar`; the CLI passes
``progress=True``. Bars are transient (they vanish when done), so a command's output is only its
result line, and nothing is drawn in tests or pipes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Advance(Protocol):
    """Moves a bar forward by ``steps``."""

    def __call__(self, steps: float = 1) -> None: ...


@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool = True) -> Iterator[Advance]:
    """A transient rich progress bar; yields a function that advances it.

    Args:
        description: what is being done ("ingest", "export-dicom").
        total: the number of steps, or None when unknown.
        enabled: False draws nothing (the advance function is then a no-op).

    Returns:
        A context manager yielding ``advance(steps=1)``.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(steps: float = 1) -> None:
            bar.advance(task, steps)

        yield advance
