"""The class of each lesion: from a CSV, from the input itself, or from folder names.

Precedence, first that applies:

1. ``--classes CSV`` -- a CSV with a header row and columns ``patient``, ``lesion`` (optional) and
   ``class``. ``patient`` is the original patient identifier (DICOM PatientID; for other formats the
   file name up to the first ``__``); ``lesion`` is the lesion number within the patient (1, 2, ... in
   the order described in :mod:`augmentor.data.ingest.roi`), or empty / ``*`` for all of that
   patient's lesions. A lesion with no row is an error.
2. A class recorded in the input: the ``augmentor class:`` line of a DICOM's ImageComments (written
   by ``augment export-dicom``), or the ``class`` / ``classes`` / ``labels`` keys of a ``.npz``.
3. The first folder below the source: ``SOURCE/<class>/...``.
4. Otherwise every lesion is of the single class ``lesion``.

``class_names`` (``--class-names``) fixes the order of the classes (labels index into it) and
rejects any other class with an "unknown class" error; without it an augmentor export's recorded
order is kept, else the classes found are sorted alphabetically.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from augmentor.errors import AugmentorError, look_up_option

DEFAULT_CLASS = "lesion"
ALL_LESIONS = "*"
CSV_COLUMNS = ("patient", "lesion", "class")

# DICOM ImageComments lines written by export_dicom and read back by ingest ("augmentor class: cyst").
COMMENT_PREFIX = "augmentor "
LIST_SEPARATOR = "|"


@dataclass(frozen=True)
class ClassTable:
    """Classes from a CSV: ``(patient, lesion)`` -> class, ``lesion`` 0 meaning every lesion."""

    path: Path
    rows: dict[tuple[str, int], str]

    def classes_of(self, patients: Iterable[str]) -> set[str]:
        """The classes the CSV gives to any of ``patients``."""
        wanted = {patient.strip() for patient in patients}
        return {name for (patient, _), name in self.rows.items() if patient in wanted}

    def lookup(self, patient: str, lesion: int, where: str) -> str:
        """The class of lesion ``lesion`` (1-based) of ``patient``; one-line error when absent."""
        key = patient.strip()
        name = self.rows.get((key, lesion)) or self.rows.get((key, 0))
        if name is None:
            raise AugmentorError(
                f"{self.path}: no class for lesion {lesion} of patient {key!r} ({where}); "
                f"add a row '{key},{lesion},<class>' or '{key},*,<class>'"
            )
        return name


def read_class_csv(path: str | Path) -> ClassTable:
    """Read a class CSV (see the module docstring).

    Args:
        path: the CSV file.

    Returns:
        Its :class:`ClassTable`.
    """
    csv_path = Path(path)
    if not csv_path.is_file():
        raise AugmentorError(f"{csv_path}: class CSV not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            columns = [name.strip().lower() for name in reader.fieldnames or []]
            for required in ("patient", "class"):
                if required not in columns:
                    raise AugmentorError(
                        f"{csv_path}: missing column {required!r}; the header must be patient,lesion,class (lesion optional)"
                    )
            rows: dict[tuple[str, int], str] = {}
            for line_number, raw in enumerate(reader, start=2):
                row = {(key or "").strip().lower(): (value or "").strip() for key, value in raw.items()}
                patient, name = row.get("patient", ""), row.get("class", "")
                lesion_text = row.get("lesion", "") or ALL_LESIONS
                if not patient or not name:
                    raise AugmentorError(f"{csv_path}:{line_number}: empty patient or class")
                if lesion_text == ALL_LESIONS:
                    lesion = 0
                else:
                    try:
                        lesion = int(lesion_text)
                    except ValueError:
                        lesion = -1
                    if lesion < 1:
                        raise AugmentorError(
                            f"{csv_path}:{line_number}: lesion {lesion_text!r} must be a number from 1 or '*'"
                        )
                previous = rows.get((patient, lesion))
                if previous is not None and previous != name:
                    raise AugmentorError(
                        f"{csv_path}:{line_number}: patient {patient!r} lesion {lesion_text} is both {previous!r} and {name!r}"
                    )
                rows[(patient, lesion)] = name
    except UnicodeDecodeError:
        raise AugmentorError(f"{csv_path}: not a UTF-8 text CSV") from None
    except csv.Error as error:
        raise AugmentorError(f"{csv_path}: malformed CSV ({error})") from None
    if not rows:
        raise AugmentorError(f"{csv_path}: no rows")
    return ClassTable(csv_path, rows)


def order_classes(
    found: Iterable[str], class_names: Sequence[str] | None, recorded_order: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The file's ordered class names.

    Args:
        found: the classes the samples will have.
        class_names: the user's order (``--class-names``); every found class must be in it.
        recorded_order: the order an augmentor export recorded, kept when it holds every found class.

    Returns:
        ``class_names``, else ``recorded_order``, else the found classes sorted alphabetically
        (``("lesion",)`` when none).
    """
    found_set = set(found)
    if class_names:
        names = tuple(name.strip() for name in class_names)
        if len(set(names)) != len(names) or not all(names):
            raise AugmentorError(f"--class-names must be distinct, non-empty names, got {list(class_names)}")
        for name in sorted(found_set):
            check_class(name, names)
        return names
    if recorded_order and found_set <= set(recorded_order):
        return tuple(recorded_order)
    if not found_set:
        return (DEFAULT_CLASS,)
    return tuple(sorted(found_set))


def check_class(name: str, class_names: Sequence[str], where: str = "") -> str:
    """``name`` if it is one of ``class_names``; else a one-line 'unknown class' error."""
    try:
        return look_up_option(name, class_names, "class")
    except AugmentorError as error:
        raise AugmentorError(f"{where}: {error}" if where else str(error)) from None


@dataclass(frozen=True)
class RecordedLabels:
    """What an augmentor DICOM export records about a sample in its ImageComments, for ingest.

    Attributes:
        class_name: the sample's class.
        class_names: the exported file's ordered class list (kept on re-ingest).
        mask_label_names: names of the mask values (written on masks).
        source: "real", "synthetic", "phantom" or "translated".
    """

    class_name: str | None = None
    class_names: tuple[str, ...] | None = None
    mask_label_names: tuple[str, ...] | None = None
    source: str | None = None


def labels_comment(recorded: RecordedLabels) -> str:
    """ImageComments text: one ``augmentor <key>: <value>`` line per recorded field (lists joined by ``|``)."""
    fields = (
        ("class", recorded.class_name),
        ("class names", recorded.class_names),
        ("mask labels", recorded.mask_label_names),
        ("source", recorded.source),
    )
    lines = []
    for key, value in fields:
        if value is None:
            continue
        text = LIST_SEPARATOR.join(value) if isinstance(value, tuple) else value
        lines.append(f"{COMMENT_PREFIX}{key}: {text}")
    return "\n".join(lines)


def parse_labels_comment(text: str | None) -> RecordedLabels:
    """Read back :func:`labels_comment`; lines that are not augmentor's are ignored."""
    values: dict[str, str] = {}
    for line in str(text or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key.startswith(COMMENT_PREFIX) and value.strip():
            values[key[len(COMMENT_PREFIX) :]] = value.strip()

    def listed(key: str) -> tuple[str, ...] | None:
        return tuple(part.strip() for part in values[key].split(LIST_SEPARATOR)) if key in values else None

    return RecordedLabels(
        class_name=values.get("class"),
        class_names=listed("class names"),
        mask_label_names=listed("mask labels"),
        source=values.get("source"),
    )

