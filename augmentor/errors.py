"""Errors a user can act on.

Every problem caused by the user's input (a missing file, a corrupt DICOM, an unknown class name, a
recipe key that does not exist, an output that already exists) raises :class:`AugmentorError` with a
one-line message that says what is wrong and, where possible, how to fix it. The CLI prints that line
and exits with status 2; anything else that escapes is a bug in augmentor.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AugmentorError(Exception):
    """A problem with the user's input, reported as one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class SchemaError(AugmentorError):
    """An HDF5 file does not follow the augmentor dataset contract."""


class RecipeError(AugmentorError):
    """A recipe or a ``--set`` override is invalid."""


class OutputExistsError(AugmentorError):
    """The output path exists and ``overwrite`` was not asked for."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return a ' (did you mean X?)' hint for a near-miss, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def look_up_option(name: str, choices: Iterable[str], what: str = "option") -> str:
    """Return ``name`` if it is one of ``choices``; otherwise raise a one-line error listing them.

    Args:
        name: the value the user gave.
        choices: the valid values.
        what: what kind of thing is being looked up, for the message ("class", "cohort", ...).

    Returns:
        ``name`` unchanged.
    """
    options = list(choices)
    if name in options:
        return name
    raise AugmentorError(
        f"unknown {what} {name!r}{did_you_mean(name, options)}; valid: {', '.join(options) or '(none)'}"
    )
