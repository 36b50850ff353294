"""The ``augment`` command: one verb per step, each a thin call into the library.

Every command imports its heavy libraries lazily (so ``augment --help`` is instant) and reports user
errors (:class:`augmentor.errors.AugmentorError`) as one line on stderr with exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from augmentor.errors import AugmentorError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _AugmentGroup(TyperGroup):
    """Turns user errors into one line and an exit status instead of a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AugmentorError as error:
            typer.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing was written to the output path", err=True)
            ctx.exit(EXIT_INTERRUPTED)


app = typer.Typer(
    cls=_AugmentGroup,
    name="augment",
    help="Labelled synthetic medical images (GANs + a virtual-patient CT simulator), and proof that they help.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of every random draw.")]


def _version(value: bool) -> None:
    if value:
        from augmentor import __version__

        typer.echo(f"augmentor {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Labelled synthetic medical images, and proof that they help."""


# --- commands -----------------------------------------------------------------------------------
# Each command: parse, validate, call one library function, print a result. No logic here.


@app.command("join")
def join_command(
    shards: Annotated[list[Path], typer.Argument(help="Shard .h5 files, in order.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Joined .h5 file (virtual dataset over the shards).")],
    overwrite: Overwrite = False,
) -> None:
    """Join shards into one file via an HDF5 virtual dataset (no sample data is copied)."""
    from augmentor.data.reader import read_info
    from augmentor.data.shards import join_shards

    joined = join_shards(shards, out, overwrite=overwrite)
    typer.echo(f"wrote {joined} ({read_info(joined).num_samples} samples from {len(shards)} shards)")


if __name__ == "__main__":
    sys.exit(app())
