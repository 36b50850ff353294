"""The class of each lesion: from a CSV, from the input itself, or from folder names.

Precedence, first that applies:

1. ``--classes CSV`` -- a CSV with a header row and columns ``patient``, ``lesion`` (optional) and
   ``class``. ``patient`` is the original patient identifier (DICOM PatientID; for other formats the
   file name up to the first ``__``); ``lesion`` is the lesion number within the patient (1, 2, ... in
   the order described in :mod:`augmentor.data.ingest.roi`), or empty / ``*`` for all of that
   patient's lesions. A lesion with no row is an error.
2. A class recorded in the input: the ``augmentor class:`` line of a DICOM's ImageComments (written
   by ``augment export-dicom``), or the ``class`` / ``classes`` / ``labels`` keys of a ``.npz``.
3. The first folder below the source: ``SOURCE/<class>/...``. A folder that looks like a patient -- its
   name equals or contains the DICOM PatientName or PatientID of a series inside it (compared without
   case and separators: ``DOE^JOHN`` matches ``doe_john``), or holds an 8-digit date such as
   ``19500101`` -- is refused (a PACS export names folders ``DOE_JOHN_19500101/CT_ABDOMEN/...``, and a
   class name is stored in the file): give the classes in a CSV, or list the folder names in
   ``--class-names`` if they really are class names.
4. Otherwise every lesion is of the single class ``lesion``.

``class_names`` (``--class-names``) fixes the order of the classes (labels index into it) and
rejects any other class with an "unknown class" error; without it an augmentor export's recorded
order is kept, else the classes found are sorted alphabetically.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
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


# Shorter identifiers are only refused when a folder name equals them (a contained "7" proves nothing).
MIN_CONTAINED_IDENTIFIER = 4
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]{8}(?![0-9])")


def _folded(text: str) -> str:
    """Lower case, letters and digits only: ``DOE^JOHN`` and ``doe_john`` both become ``doejohn``."""
    return "".join(character for character in text.casefold() if character.isalnum())


def _has_date(text: str) -> bool:
    """Whether ``text`` holds an 8-digit YYYYMMDD date (a birth or study date)."""
    for run in _DIGIT_RUN.findall(text):
        try:
            date(int(run[:4]), int(run[4:6]), int(run[6:]))
        except ValueError:
            continue
        if 1850 <= int(run[:4]) <= 2150:
            return True
    return False


def patient_like_folder(folder: str, identifiers: Iterable[str]) -> str | None:
    """Why a class folder's name looks like a patient's, or None when it does not.

    Args:
        folder: the folder name.
        identifiers: the patient's identifying strings (DICOM PatientName, PatientID).

    Returns:
        "matches its DICOM patient name or id", "holds an 8-digit date", or None.
    """
    folded = _folded(folder)
    for identifier in identifiers:
        # A PatientName's components (DOE^JOHN) may appear in any order (JOHN_DOE).
        components = [_folded(part) for part in re.split(r"[\^=]", identifier) if _folded(part)]
        whole = _folded(identifier)
        if not whole:
            continue
        if folded == whole or (len(whole) >= MIN_CONTAINED_IDENTIFIER and whole in folded):
            return "matches the DICOM patient name or id of its series"
        if len(components) > 1 and all(len(part) >= 2 and part in folded for part in components):
            return "matches the DICOM patient name of its series"
    if _has_date(folder):
        return "holds an 8-digit date"
    return None


def check_folder_class(folder: str, identifiers: Iterable[str], class_names: Sequence[str] | None, where: str) -> None:
    """Refuse a class folder whose name looks like a patient's (see the module docstring).

    Args:
        folder: the first folder below the source, about to become a class name.
        identifiers: the patient's identifying strings (DICOM PatientName, PatientID).
        class_names: the user's ``--class-names``: a folder named there is taken as a class.
        where: the input, for the message.
    """
    if class_names and folder in {name.strip() for name in class_names}:
        return
    reason = patient_like_folder(folder, identifiers)
    if reason is not None:
        raise AugmentorError(
            f"{where}: this class folder's name {reason}: it names a patient, not a class; give the classes with "
            "--classes lesions.csv (columns patient,lesion,class), or list the folder in --class-names if it really is a class"
        )


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

