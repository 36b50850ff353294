"""``augment evaluate RECIPE --export-train FILE``: the split's training patients, for training a generator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from augmentor.data.reader import H5File, read_info
from cli import app
from evaluation.leakage import (
    LeakageError,
    SyntheticCheck,
    check_synthetic,
    check_validation_unseen,
    real_file,
)
from evaluation.splits import validation_split
from tests.evaluation.conftest import TinyInputs, training_record


def export(inputs: TinyInputs, out: Path, *flags: str) -> tuple[int, str]:
    arguments = ["evaluate", "tiny-evaluate", "--export-train", str(out), *flags]
    for override in inputs.overrides():
        arguments += ["--set", override]
    result = CliRunner().invoke(app, arguments)
    return result.exit_code, result.output


def test_export_holds_exactly_the_split_training_samples(tiny_inputs: TinyInputs, tmp_path: Path) -> None:
    out = tmp_path / "split-train.h5"
    code, output = export(tiny_inputs, out)
    assert code == 0, output
    source = H5File(tiny_inputs.train)
    split = validation_split(source.labels(), source.patient_ids(), 0.25, 0)  # tiny-evaluate's fraction and seed
    exported = H5File(out)
    assert len(exported) == split.train.size < len(source)
    images, masks, labels = exported.read(np.arange(len(exported)))
    expected = source.read(split.train)
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(masks, expected[1])
    np.testing.assert_array_equal(labels, expected[2])
    assert list(exported.patient_ids()) == list(source.patient_ids()[split.train])
    assert not set(exported.patient_ids()) & set(split.validation_patients)
    info, original = read_info(out), read_info(tiny_inputs.train)
    assert (info.class_names, info.hu_window, info.pixel_spacing_mm, info.source) == (original.class_names, original.hu_window, original.pixel_spacing_mm, original.source)
    details = info.provenance["details"]
    assert details["evaluate_recipe"] == "tiny-evaluate" and details["split_seed"] == 0
    assert info.provenance["inputs"] == {"train.h5": next(iter(info.provenance["inputs"].values()))}
    assert f"{len(split.train_patients)} training patients" in output

    # A generator trained on the export passes the check that refuses one trained on the whole train file.
    train, test = [real_file(tiny_inputs.train)], [real_file(tiny_inputs.test)]

    def check(trained_on: Path) -> SyntheticCheck:
        record = training_record(trained_on)
        model = {"name": "gan", "trained_on_sha256": record["sha256"], "trained_on_patients_sha256": record["patients_sha256"], "trained_on_path": str(trained_on)}
        return check_synthetic("model gan", model, train, test)

    assert check_validation_unseen([check(out)], split.validation_patients, allow=False)["status"] == "unseen"
    with pytest.raises(LeakageError, match="--export-train"):
        check_validation_unseen([check(tiny_inputs.train)], split.validation_patients, allow=False)


def test_export_refuses_existing_output_and_an_input_file(tiny_inputs: TinyInputs, tmp_path: Path, tiny_file: Callable[..., Path]) -> None:
    out = tmp_path / "split-train.h5"
    out.write_bytes(b"keep me")
    code, output = export(tiny_inputs, out)
    assert code == 2 and "exists" in output and out.read_bytes() == b"keep me"
    before = tiny_inputs.train.read_bytes()
    code, output = export(tiny_inputs, tiny_inputs.train, "--overwrite")
    assert code == 2 and "input files" in output
    assert tiny_inputs.train.read_bytes() == before


def test_evaluate_without_out_or_export_is_refused(tiny_inputs: TinyInputs) -> None:
    result = CliRunner().invoke(app, ["evaluate", "tiny-evaluate"])
    assert result.exit_code == 2 and "--out" in result.output
