"""Ablation records of GAN training runs, and their table: what each change did, from the runs' own logs.

A generator study (issue #13) trains a recipe several times with one or two values changed and compares the
monitor's scores (:mod:`evaluation.monitor`: KID, coverage, the diversity criteria, the classifier two-sample
AUC) at the same steps. This module turns run directories into one committed JSON record and prints the table
from it, so the table in a note or the README is generated from a file, not typed:

    python -m evaluation.ablation runs/A runs/B --base onishi-lung-dcgan --what "..." --setting "..." \\
        --out results/ablations/NAME.json
    python -m evaluation.ablation --table results/ablations/NAME.json
    python -m evaluation.ablation --table results/ablations/*.json --best     # every study, each run's best step

Each run's ``changes`` are the resolved recipe values that differ from ``--base`` resolved the same way
(``train.steps`` and the monitor's own settings are not changes of the method and are left out); its minutes
are the trainer's elapsed time at its last logged step (monitor scoring included), so a run cut short still
tells what it cost.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from augmentor.errors import AugmentorError
from augmentor.models.card import write_json_atomic
from augmentor.recipes import load_recipe, to_dict

RECIPE = "recipe.json"
METRICS = "metrics.jsonl"
CARD = "model.json"
MONITOR_LOGS = ("monitor.jsonl", "monitor-posthoc.jsonl")  # the training run's own scores first
NOT_A_CHANGE = ("train.steps", "monitor.", "train.checkpoint_every", "train.sample_every", "train.log_every", "train.keep_checkpoints")
FORMAT = "augmentor-ablation"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"steps": 1}}`` -> ``{"train.steps": 1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def recipe_changes(resolved: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``resolved`` that differ from ``base`` (both resolved recipes), method settings only."""
    ours, theirs = flatten(resolved), flatten(base)
    changes = {}
    for key in sorted(set(ours) | set(theirs)):
        if key.startswith(NOT_A_CHANGE) or key in ("name", "description"):
            continue
        if ours.get(key) != theirs.get(key):
            changes[key] = ours.get(key)
    return changes


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise AugmentorError(f"{path}: unreadable ({error})") from None


def _json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise AugmentorError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None


def _json_file(path: Path) -> Any:
    return _json(_read(path), path)


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [_json(line, path) for line in _read(path).splitlines() if line.strip()]


def run_record(run: Path, base: Mapping[str, Any]) -> dict[str, Any]:
    """One run directory as an ablation row: name, changes, steps, minutes, monitor scores, selected step."""
    if not (run / RECIPE).is_file():
        raise AugmentorError(f"{run}: not a training run directory (no {RECIPE})")
    resolved = _json_file(run / RECIPE)
    metrics = _json_lines(run / METRICS) if (run / METRICS).is_file() else []
    monitor: list[dict[str, Any]] = []
    scored_by = None
    for name in MONITOR_LOGS:
        if (run / name).is_file():
            monitor, scored_by = _json_lines(run / name), name
            break
    card = _json_file(run / CARD) if (run / CARD).is_file() else {}
    return {
        "name": run.name,
        "changes": recipe_changes(resolved, base),
        "steps_planned": flatten(resolved).get("train.steps"),
        "steps_run": metrics[-1]["step"] if metrics else 0,
        "finished": bool(card),
        "minutes": round(metrics[-1]["elapsed_s"] / 60.0, 1) if metrics else 0.0,
        "command": card.get("command"),
        "selected_step": (card.get("monitor") or {}).get("selected_step"),
        "scored_by": scored_by,
        "recipe": resolved,
        "monitor": monitor,
    }


def collect(runs: Sequence[Path], base_recipe: str, what: str, setting: str) -> dict[str, Any]:
    """The record of a study: its description, the machine setting and one row per run."""
    base = to_dict(load_recipe(base_recipe, expect="gan"))
    return {"format": FORMAT, "what": what, "setting": setting, "base": base_recipe, "runs": [run_record(run, base) for run in runs]}


def _number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _changes_text(changes: Mapping[str, Any]) -> str:
    return ", ".join(f"`{key}={json.dumps(value)}`" for key, value in changes.items()) or "(the base recipe)"


TABLE_HEADER = (
    "| run | changes | step | KID | coverage | NN-distance ratio | mask IoU − real | area ratio | bright ratio | texture ratio | "
    "criteria missed | C2ST AUC | minutes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _lowest_kid(entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The scored step with the lowest KID (all classes together), or every entry if none has one."""
    scored = [entry for entry in entries if (entry.get("scores", {}).get("all") or {}).get("kid") is not None]
    return [min(scored, key=lambda entry: entry["scores"]["all"]["kid"])] if scored else list(entries)


def table(record: Mapping[str, Any], *, best: bool = False, label: str = "") -> str:
    """The markdown table of a record: one row per run and scored step (all classes together); ``best``: only each
    run's step of lowest KID; ``label`` prefixes the run names (several records in one table)."""
    rows = [TABLE_HEADER]
    for run in record["runs"]:
        entries = run["monitor"] or [{"step": run["steps_run"], "scores": {}}]
        for entry in _lowest_kid(entries) if best else entries:
            scores = entry["scores"].get("all", {})
            criteria = scores.get("diversity", {}).get("criteria", {})
            texture = [scores.get("diversity", {}).get(side, {}).get("texture_hu") for side in ("synthetic", "real")]
            texture_ratio = texture[0] / texture[1] if None not in texture and texture[1] else None
            missed = sorted(set(criteria) - set(scores.get("diversity", {}).get("passed", []))) if criteria else []
            rows.append(
                f"| {label}{run['name']} | {_changes_text(run.get('changes') or {})} | {entry['step']} | {_number(scores.get('kid'), 3)} | "
                f"{_number(scores.get('coverage'))} | {_number(criteria.get('nn_distance'))} | {_number(criteria.get('nn_mask_iou'))} | "
                f"{_number(criteria.get('lesion_area'))} | {_number(criteria.get('bright_fraction'))} | {_number(texture_ratio)} | "
                f"{', '.join(missed) if criteria else '–'} | {_number(scores.get('c2st_auc'), 3)} | {_number(run['minutes'], 1)} |"
            )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.ablation", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("runs", type=Path, nargs="*", help="training run directories")
    parser.add_argument("--base", help="the recipe the runs change (name or path)")
    parser.add_argument("--what", default="", help="what the study is, which data it trained on and was scored against")
    parser.add_argument("--setting", default="", help="the machine and how it was shared")
    parser.add_argument("--out", type=Path, help="the record to write (JSON)")
    parser.add_argument("--table", type=Path, nargs="+", help="print the table of these records (one table) and exit")
    parser.add_argument("--best", action="store_true", help="with --table: each run's step of lowest KID only")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    arguments = parser.parse_args(argv)
    try:
        if arguments.table:
            parts: list[str] = []
            for path in arguments.table:
                if not path.is_file():
                    raise AugmentorError(f"{path}: no such record")
                record = _json_file(path)
                if not isinstance(record, dict) or not isinstance(record.get("runs"), list):
                    raise AugmentorError(f"{path}: not an ablation record (no list of runs)")
                text = table(record, best=arguments.best, label=f"{path.stem}: " if len(arguments.table) > 1 else "")
                parts.append(text if not parts else text.split("\n", 2)[2])  # one header
            print("\n".join(parts))
            return 0
        if not arguments.runs or not arguments.base or not arguments.out:
            raise AugmentorError("give run directories, --base and --out (or --table RECORD)")
        if arguments.out.exists() and not arguments.overwrite:
            raise AugmentorError(f"{arguments.out} exists; pass --overwrite to replace it")
        record = collect(arguments.runs, arguments.base, arguments.what, arguments.setting)
    except AugmentorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_json_atomic(arguments.out, record)
    print(table(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
