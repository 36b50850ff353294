"""What ingest and export-dicom do with patient identity: no class named after a patient, a salt
fingerprint that tells whether two files' pseudonyms can be compared, and PatientIdentityRemoved only
when the ids identify nobody."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
from ingest_inputs import PATIENT_ID, PATIENT_NAME, assert_not_in_bytes, disk, hu_pattern, write_ct_series
from typer.testing import CliRunner

from augmentor.data.export_dicom import export_dicom
from augmentor.data.ingest import ingest
from augmentor.data.ingest.classes import patient_like_folder
from augmentor.data.ingest.pseudonym import UNSALTED_WARNING
from augmentor.data.provenance import (
    PSEUDONYMISED,
    VIRTUAL,
    make_provenance,
    patient_id_kind,
    salt_fingerprint,
)
from augmentor.data.reader import H5File, read_info
from augmentor.data.writer import H5Writer
from cli import app

runner = CliRunner()


def write_pacs_export(root: Path) -> None:
    """Two patients exported the usual PACS way: ``<NAME>_<BIRTH DATE>/<STUDY>/`` folders of slices."""
    patients = [(PATIENT_NAME, PATIENT_ID, "DOE_JOHN_19500101", 1), ("ROE^JANE", "MRN-67890", "ROE_JANE_19620314", 2)]
    for name, patient_id, folder, seed in patients:
        series = root / folder / "CT_ABDOMEN"
        hu = hu_pattern((3, 40, 40), seed=seed)
        write_ct_series(series, hu, patient_name=name, patient_id=patient_id)
        label = np.zeros(hu.shape, dtype=np.uint8)
        label[1][disk((40, 40), (20, 20), 4)] = 1
        np.save(series / "mask.npy", label)


def refused(result: object) -> str:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 2, output  # type: ignore[attr-defined]
    assert output.startswith("error: ") and output.strip().count("\n") == 0, output
    return output


def test_pacs_patient_folders_are_not_taken_as_classes(tmp_path: Path) -> None:
    source = tmp_path / "SOURCE"
    write_pacs_export(source)
    out = tmp_path / "real.h5"
    result = runner.invoke(app, ["ingest", str(source), "--out", str(out), "--roi-size", "16", "--salt", "s"])
    message = refused(result)
    assert "DOE_JOHN_19500101" in message and "patient" in message
    assert "--classes lesions.csv" in message and "--class-names" in message
    assert not out.exists()

    # The fix the message names: classes from a CSV keyed by the DICOM PatientID.
    table = tmp_path / "lesions.csv"
    table.write_text(f"patient,lesion,class\n{PATIENT_ID},*,cyst\nMRN-67890,*,metastasis\n")
    written = ingest(source, out, classes_csv=table, roi_size=16, salt="s", progress=False)
    assert read_info(written).class_names == ("cyst", "metastasis")
    assert_not_in_bytes(written, ["DOE_JOHN", "ROE_JANE", "19500101", "19620314", PATIENT_ID])


@pytest.mark.parametrize(
    ("folder", "patient_name", "patient_id"),
    [
        ("doe john", "DOE^JOHN", "X"),  # the name, other separators and case
        ("JOHN-DOE_CT", "DOE^JOHN", "X"),  # the name's parts in the other order
        ("mrn12345_ct", "ANON", "MRN-12345"),  # contains the id
        ("1985-scan-19850607", "ANON", "X"),  # a date, whatever the header says
    ],
)
def test_patient_like_folder_names_are_refused(tmp_path: Path, folder: str, patient_name: str, patient_id: str) -> None:
    series = tmp_path / "src" / folder
    hu = hu_pattern((2, 40, 40))
    write_ct_series(series, hu, patient_name=patient_name, patient_id=patient_id)
    np.save(series / "mask.npy", np.ones(hu.shape, dtype=np.uint8))
    with pytest.raises(Exception, match="names a patient, not a class"):
        ingest(tmp_path / "src", tmp_path / "x.h5", roi_size=16, salt="s", progress=False)
    # Listed in --class-names, the folder is taken as the class the user says it is.
    written = ingest(tmp_path / "src", tmp_path / "x.h5", roi_size=16, salt="s", class_names=[folder], progress=False)
    assert read_info(written).class_names == (folder,)


def test_ordinary_class_folders_are_kept() -> None:
    for folder in ("cyst", "metastasis", "hemangioma", "benign_2", "lesions-2024", "batch 20241399"):
        assert patient_like_folder(folder, ["DOE^JOHN", "MRN-12345"]) is None, folder
    assert patient_like_folder("P7", ["7"]) is None  # a short id only when the name equals it
    assert patient_like_folder("7", ["7"]) is not None


def write_npz_source(folder: Path, patients: tuple[str, ...]) -> Path:
    folder.mkdir(parents=True)
    for patient in patients:
        np.savez(folder / f"{patient}.npz", image=np.zeros((32, 32)), mask=disk((32, 32), (16, 16), 4))
    return folder


def test_salt_fingerprint_tells_whether_pseudonyms_can_be_compared(tmp_path: Path) -> None:
    source = write_npz_source(tmp_path / "src", ("alice", "bob"))
    first = ingest(source, tmp_path / "a.h5", roi_size=16, salt="a long secret", progress=False)
    second = ingest(source, tmp_path / "b.h5", roi_size=16, salt="a long secret", progress=False)
    other = ingest(source, tmp_path / "c.h5", roi_size=16, salt="another secret", progress=False)
    unsalted = [ingest(source, tmp_path / f"r{i}.h5", roi_size=16, progress=False) for i in range(2)]
    fingerprints = [salt_fingerprint(read_info(path).provenance) for path in (first, second, other, *unsalted)]
    assert all(fingerprint and len(fingerprint) == 64 for fingerprint in fingerprints)
    assert fingerprints[0] == fingerprints[1]
    assert len(set(fingerprints[1:])) == 4  # another salt, and each random salt, differ
    assert patient_id_kind(read_info(first).provenance) == PSEUDONYMISED
    assert "a long secret" not in first.read_bytes().decode("latin-1")


def test_ingest_warns_once_when_no_salt_is_given(tmp_path: Path) -> None:
    source = write_npz_source(tmp_path / "src", ("alice",))
    unsalted = runner.invoke(app, ["ingest", str(source), "--out", str(tmp_path / "a.h5"), "--roi-size", "16"], env={"AUGMENTOR_SALT": None})
    assert unsalted.exit_code == 0, unsalted.output
    assert unsalted.stderr.strip() == UNSALTED_WARNING and "same --salt" in UNSALTED_WARNING
    assert "\n" not in UNSALTED_WARNING
    salted = runner.invoke(app, ["ingest", str(source), "--out", str(tmp_path / "b.h5"), "--roi-size", "16", "--salt", "s"])
    assert salted.exit_code == 0 and salted.stderr == ""
    from_environment = runner.invoke(app, ["ingest", str(source), "--out", str(tmp_path / "c.h5"), "--roi-size", "16"], env={"AUGMENTOR_SALT": "s"})
    assert from_environment.exit_code == 0 and from_environment.stderr == ""


# --- export-dicom: PatientIdentityRemoved --------------------------------------------------------


def exported_identity(h5: Path, out: Path) -> tuple[str, str]:
    export_dicom(h5, out, progress=False)
    image = pydicom.dcmread(next(out.rglob("000000.dcm")))
    mask = pydicom.dcmread(next(out.rglob("000000_mask.dcm")))
    assert (mask.PatientIdentityRemoved, mask.DeidentificationMethod) == (image.PatientIdentityRemoved, image.DeidentificationMethod)
    return image.PatientIdentityRemoved, image.DeidentificationMethod


def test_raw_patient_ids_are_not_marked_de_identified(tiny_file: Callable[..., Path], tmp_path: Path) -> None:
    raw = tiny_file("raw.h5", count=2, size=16)  # written through H5Writer with the user's own ids
    assert exported_identity(raw, tmp_path / "raw") == ("NO", "")


def test_pseudonymised_and_virtual_ids_are_marked_de_identified(tmp_path: Path) -> None:
    source = write_npz_source(tmp_path / "src", ("alice",))
    ingested = ingest(source, tmp_path / "ingested.h5", roi_size=16, salt="s", progress=False)
    removed, method = exported_identity(ingested, tmp_path / "ingested")
    assert removed == "YES" and "pseudonymous" in method and len(method) <= 64

    from augmentor.simulate.phantom import write_phantoms

    phantoms = write_phantoms(tmp_path / "phantoms.h5", n_patients=1, slices_per_patient=1, size=32, progress=False)
    assert patient_id_kind(read_info(phantoms).provenance) == VIRTUAL
    removed, method = exported_identity(phantoms, tmp_path / "phantoms")
    assert removed == "YES" and "virtual" in method and len(method) <= 64


def test_generated_samples_without_patient_ids_are_marked_de_identified(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.h5"
    with H5Writer(path, class_names=["cyst"], image_shape=(1, 16, 16), source="synthetic", with_patient_ids=False,
                  provenance=make_provenance()) as writer:
        writer.append(np.zeros((1, 1, 16, 16), np.int16), np.zeros((1, 16, 16), np.uint8), [0])
    removed, method = exported_identity(path, tmp_path / "dicom")
    assert removed == "YES" and "no patient id" in method
    assert H5File(path).info.has_patient_ids is False


def test_patient_ids_record_is_stored_in_the_file(tmp_path: Path) -> None:
    source = write_npz_source(tmp_path / "src", ("alice",))
    ingested = ingest(source, tmp_path / "ingested.h5", roi_size=16, salt="s", progress=False)
    with h5py.File(ingested, "r") as handle:
        record = json.loads(handle.attrs["provenance"])["patient_ids"]
    assert record["kind"] == PSEUDONYMISED and "HMAC-SHA-256" in record["method"] and len(record["salt_fingerprint"]) == 64
