"""Ablation records: a run's changes against its base recipe, its cost, and the table, from its own logs."""

from __future__ import annotations

import json
from pathlib import Path

from augmentor.recipes import load_recipe, to_dict
from evaluation.ablation import main, run_record, table


def fake_run(folder: Path, overrides: list[str], monitor: list[dict] | None) -> Path:
    """A run directory as the trainer leaves it: the resolved recipe, metrics lines, monitor lines."""
    folder.mkdir(parents=True)
    resolved = to_dict(load_recipe("tiny-cgan", overrides, expect="gan"))
    (folder / "recipe.json").write_text(json.dumps(resolved))
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "elapsed_s": 30.0 * s}) for s in (10, 20)) + "\n")
    if monitor is not None:
        (folder / "monitor.jsonl").write_text("\n".join(json.dumps(m) for m in monitor) + "\n")
    return folder


def scores(kid: float, auc: float, passed: list[str]) -> dict:
    criteria = {"nn_distance": 0.9, "nn_mask_iou": 0.01, "lesion_area": 1.1, "bright_fraction": 2.5}
    diversity = {"criteria": criteria, "passed": passed, "synthetic": {"texture_hu": 10.0}, "real": {"texture_hu": 40.0}}
    return {"all": {"kid": kid, "coverage": 0.7, "c2st_auc": auc, "diversity": diversity}}


def test_a_record_lists_the_changed_method_values_and_what_the_run_cost(tmp_path: Path) -> None:
    base = to_dict(load_recipe("tiny-cgan", expect="gan"))
    run = fake_run(tmp_path / "batch-norm", ["model.discriminator_normalization=batch", "train.steps=20", "train.log_every=5"], [])
    record = run_record(run, base)
    # the method change is listed; the step count and the logging interval are not changes of the method
    assert record["changes"] == {"model.discriminator_normalization": "batch"}
    assert record["steps_run"] == 20 and record["minutes"] == 10.0 and not record["finished"]
    same = run_record(fake_run(tmp_path / "same", [], None), base)
    assert same["changes"] == {} and same["scored_by"] is None


def test_the_table_has_a_row_per_scored_step_with_its_scores(tmp_path: Path, capsys) -> None:
    monitor = [{"step": 10, "scores": scores(0.5, 1.0, ["lesion_area"])}, {"step": 20, "scores": scores(0.125, 0.75, ["nn_distance", "lesion_area"])}]
    run = fake_run(tmp_path / "T-nocolor", ['train.diffaugment=["translation"]'], monitor)
    out = tmp_path / "record.json"
    assert main([str(run), "--base", "tiny-cgan", "--what", "a study", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["what"] == "a study" and record["runs"][0]["scored_by"] == "monitor.jsonl"
    rows = table(record).splitlines()[2:]
    assert len(rows) == 2
    assert "| 10 | 0.500 |" in rows[0] and "| 1.000 |" in rows[0] and "| 2.50 | 0.25 |" in rows[0]  # bright, texture
    # the criteria missed are those not passed
    assert "bright_fraction, nn_distance, nn_mask_iou" in rows[0]
    assert "| 20 | 0.125 |" in rows[1] and "| 0.750 |" in rows[1] and "bright_fraction, nn_mask_iou |" in rows[1]
    assert '`train.diffaugment=["translation"]`' in rows[0]
    capsys.readouterr()
    assert main(["--table", str(out)]) == 0
    assert capsys.readouterr().out.strip() == table(record)


def test_a_folder_that_is_not_a_run_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path), "--base", "tiny-cgan", "--out", str(tmp_path / "r.json")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "not a training run directory" in error and error.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_an_existing_record_or_a_damaged_log_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    run = fake_run(tmp_path / "run", [], [])
    out = tmp_path / "record.json"
    out.write_text("keep me")
    assert main([str(run), "--base", "tiny-cgan", "--out", str(out)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main([str(run), "--base", "tiny-cgan", "--out", str(out), "--overwrite"]) == 0
    (run / "metrics.jsonl").write_text('{"step": 10, "elapsed')
    capsys.readouterr()
    assert main([str(run), "--base", "tiny-cgan", "--out", str(out), "--overwrite"]) == 1
    error = capsys.readouterr().err
    assert "metrics.jsonl: not valid JSON" in error and error.count("\n") == 1


def test_a_record_from_before_the_changes_column_prints_its_runs_as_the_base_recipe() -> None:
    # results/ablations/gan-zoo-round2.json: the shipped runs, written before records listed changes
    record = {"runs": [{"name": "onishi-lung-dcgan", "steps_run": 4000, "minutes": 81.5, "monitor": [{"step": 1000, "scores": scores(0.033, 0.99, [])}]}]}
    (row,) = table(record).splitlines()[2:]
    assert row.startswith("| onishi-lung-dcgan | (the base recipe) | 1000 | 0.033 |")


def test_table_refuses_a_file_that_is_not_a_record_in_one_line(tmp_path: Path, capsys) -> None:
    other = tmp_path / "summary.json"
    other.write_text(json.dumps({"format": "augmentor-summary", "name": "evaluate-lung"}))
    binary = tmp_path / "weights.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for path, message in ((other, "not an ablation record"), (binary, "unreadable")):
        assert main(["--table", str(path)]) == 1
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1


def test_best_keeps_each_runs_lowest_kid_step_and_several_records_make_one_table(tmp_path: Path, capsys) -> None:
    steps = [{"step": 10, "scores": scores(0.5, 1.0, [])}, {"step": 20, "scores": scores(0.125, 0.75, [])}, {"step": 30, "scores": scores(0.25, 0.8, [])}]
    first = {"runs": [{"name": "A", "steps_run": 30, "minutes": 3.0, "monitor": steps}, {"name": "unscored", "steps_run": 5, "minutes": 1.0, "monitor": []}]}
    second = {"runs": [{"name": "B", "steps_run": 10, "minutes": 2.0, "monitor": steps[:1]}]}
    (a, unscored) = table(first, best=True).splitlines()[2:]
    assert a.startswith("| A | (the base recipe) | 20 | 0.125 |") and unscored.startswith("| unscored | (the base recipe) | 5 | – |")
    paths = [tmp_path / "round1.json", tmp_path / "round2.json"]
    for path, record in zip(paths, (first, second), strict=True):
        path.write_text(json.dumps(record))
    assert main(["--table", *map(str, paths), "--best"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| run | changes |") and sum(line.startswith("| run |") for line in lines) == 1
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| round1: A", "| round1: unscored", "| round2: B"]
    assert lines[2].split(" | ")[2] == "20" and lines[4].split(" | ")[2] == "10"
