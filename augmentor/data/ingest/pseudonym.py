"""Pseudonymous patient ids: a keyed (salted) SHA-256 of the original identifier.

The original identifier (DICOM PatientID, a file name) is never written; the stored id is
``P`` + the first 16 hex digits of HMAC-SHA-256(salt, identifier). HMAC is the standard way to salt a
hash: without the salt, nobody can test a guessed identifier against the stored ids. The salt is never
stored. Without a salt a random one is drawn per run, so ids are consistent within one file but cannot
be linked to any other ingest; give the same salt (``--salt`` or ``AUGMENTOR_SALT``) to several runs
to keep a patient's id the same across files (e.g. a train and a test ingest). 64 bits make a collision
between two patients of one cohort vanishingly unlikely (about 1e-10 for 50 000 patients).

The file records how its ids were made (provenance ``patient_ids``, see :meth:`Pseudonymiser.record`),
with a *salt fingerprint*: HMAC-SHA-256 of a fixed text under the salt. It is not the salt and does not
reveal it, but two files have the same fingerprint exactly when they were pseudonymised with the same
salt -- which is how ``augment evaluate`` knows that the patient-overlap check between a train and a
test file means something. (Like any keyed hash it lets someone test guessed salts, so use a long random
secret, not a word.)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from augmentor.data.provenance import PSEUDONYMISED

PSEUDONYM_PREFIX = "P"
PSEUDONYM_HEX_DIGITS = 16
FINGERPRINT_TEXT = b"augmentor salt fingerprint v1"
UNSALTED_WARNING = (
    "warning: no --salt given: patient ids were pseudonymised with a random salt, so they match no other "
    "ingest; ingest train and test data with the same --salt (or AUGMENTOR_SALT)"
)


class Pseudonymiser:
    """Maps original patient identifiers to stable pseudonyms for one salt.

    Args:
        salt: secret text; None draws a random salt for this run only.
    """

    def __init__(self, salt: str | None = None) -> None:
        self.salted = salt is not None
        key = salt if salt is not None else secrets.token_hex(32)
        self._key = key.encode()

    def __call__(self, identifier: str) -> str:
        """The pseudonym of ``identifier`` (ASCII, 17 characters)."""
        digest = hmac.new(self._key, identifier.strip().encode(), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX_DIGITS]

    def fingerprint(self) -> str:
        """HMAC-SHA-256 of a fixed text under the salt (hex): equal for equal salts, and not the salt."""
        return hmac.new(self._key, FINGERPRINT_TEXT, hashlib.sha256).hexdigest()

    def record(self) -> dict[str, str]:
        """The provenance's ``patient_ids`` record: kind, method and salt fingerprint."""
        return {"kind": PSEUDONYMISED, "method": self.describe(), "salt_fingerprint": self.fingerprint()}

    def describe(self) -> str:
        """How the ids were made, for the provenance (never the salt itself)."""
        salt = "a salt given by the user" if self.salted else "a random salt drawn for this run"
        return f"HMAC-SHA-256 of the original patient id with {salt} (not stored), first {PSEUDONYM_HEX_DIGITS} hex digits"
