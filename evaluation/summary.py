"""The small summary of a report that is committed next to the README, and the README tables made from it.

``summary.json`` (written into every report folder) keeps what a headline table needs -- arms with their
estimates and intervals, paired differences against classic augmentation and between the arms the recipe's
``statistics.pairs`` names (with how many seeds came out higher), augmentation efficiency, the
reference row, budget-bound flags, seeds, cohort, generator hash and run time -- in a few kilobytes, so a
shipped experiment's numbers can live in the repository (``results/``) while its report does not.

The README's result tables are generated from those files, never typed::

    python -m evaluation.summary results/evaluate-liver.json            # print the markdown
    python -m evaluation.summary                                        # print the shipped-models tables
    python -m evaluation.summary --update README.md results/*.json      # rewrite the marked README blocks

A block in the README is marked ``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->``; the test suite
checks that every marked block equals what its committed summary gives.

So is the README's table of shipped models (block ``<!-- zoo -->`` ... ``<!-- /zoo -->``): ``--update`` rewrites
it from the cards in ``augmentor/zoo/weights/*/model.json`` (no argument names them) -- classes, training data,
recipe, training run and, from a card's ``monitor`` record, the shipped step's scores and diversity criteria
against the tuning cohort. Regenerate the README whenever a shipped model changes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evaluation.report import format_efficiency, format_interval, format_pair

SUMMARY_FORMAT = "augmentor-evaluation-summary"
AUDIT_FORMAT = "augmentor-translation-audit"  # evaluation.translation_audit's records (kept here: no torch import)
TRANSLATION_ALGORITHM = "cyclegan"
SUMMARY_JSON = "summary.json"
CLASSIFICATION_COLUMNS = ("sensitivity_macro", "specificity_macro", "auc_macro")
SEGMENTATION_COLUMNS = ("dice_mean", "hd95_mean")


def _estimate(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not value:
        return None
    return {key: value.get(key) for key in ("estimate", "low", "high", "seeds_higher") if key in value}


def summarise(report: Mapping[str, Any]) -> dict[str, Any]:
    """The summary of a full report (see the module docstring)."""
    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "name": report.get("name"),
        "created": report.get("created"),
        "runtime_s": report.get("runtime_s"),
        "seeds": report.get("seeds"),
        "cohort": (report.get("inputs") or {}).get("cohort"),
        "oracle": (report.get("inputs") or {}).get("oracle"),
        "model": {key: ((report.get("inputs") or {}).get("model") or {}).get(key) for key in ("name", "weights_sha256")},
        **_translation_models(report),
        "generator_saw_validation": report.get("generator_saw_validation"),
        "split": {key: (report.get("split") or {}).get(key) for key in ("train_patients", "validation_patients", "test_patients", "train_samples", "test_samples")},
        "jobs": report.get("jobs"),
    }
    # what the jobs' training cost when they ran (a cached job keeps its own time), however many came from the cache
    seconds = [run.get("seconds") or 0.0 for task in ("classification", "segmentation") for runs in ((report.get(task) or {}).get("training") or {}).values() for run in runs]
    if seconds:
        summary["job_seconds"] = round(float(sum(seconds)), 1)
    for task, columns in (("classification", CLASSIFICATION_COLUMNS), ("segmentation", SEGMENTATION_COLUMNS)):
        section = report.get(task)
        if not section:
            continue
        names = [name for name in columns if name in section["metric_names"]]
        deltas = names[:2]
        structures = section.get("structure_names") or []
        if task == "segmentation" and len(structures) > 1:
            # several structures (phantom -> CT: liver and vessels): Dice of each, and its Δ, in the table
            dice = ["dice_mean", *(f"dice:{name}" for name in structures)]
            names, deltas = [*dice, *(name for name in names if name not in dice)], dice
        versus_classic = section.get("paired_differences_vs_classic") or {}
        versus_real = section.get("paired_differences") or {}
        summary[task] = {
            "metrics": names,
            "delta_metrics": deltas,
            "arms": [
                {
                    "name": arm["name"],
                    "kind": arm["kind"],
                    "ratio": arm["ratio"],
                    **{name: _estimate(section["metrics"][arm["name"]][name]) for name in names},
                    "vs_classic": {name: _estimate(versus_classic[arm["name"]][name]) for name in names} if arm["name"] in versus_classic else None,
                    "vs_real": {name: _estimate(versus_real[arm["name"]][name]) for name in names} if arm["name"] in versus_real else None,
                    "budget_bound_seeds": (section.get("budget_bound") or {}).get(arm["name"], []),
                    "steps_run": (section.get("convergence") or {}).get(arm["name"], {}).get("steps_run"),
                }
                for arm in section["arms"]
            ],
            "efficiency": {
                ratio: {name: entry[name] for name in names if name in entry} | {"synthetic_arm": entry["synthetic_arm"], "oracle_arm": entry["oracle_arm"]}
                for ratio, entry in (section.get("efficiency") or {}).items()
            },
        }
        between = section.get("paired_differences_between") or []
        if between:
            summary[task]["pairs"] = [
                {"arm": entry["arm"], "baseline": entry["baseline"], **{name: _estimate(entry["differences"].get(name)) for name in deltas}} for entry in between
            ]
        reference = section.get("reference")
        if reference:
            summary[task]["reference"] = {"name": reference["name"], **{name: _estimate(reference["metrics"][name]) for name in names}}
    return summary


def _translation_models(report: Mapping[str, Any]) -> dict[str, Any]:
    """The translation models of a phantom -> CT evaluation (name and weights hash by arm label), if any."""
    phantoms = (report.get("inputs") or {}).get("phantoms") or {}
    models = phantoms.get("translation_models")
    if not models:
        return {}
    return {"translation_models": {label: {key: model.get(key) for key in ("name", "weights_sha256", "structure_consistency")} for label, model in models.items()}}


def write_summary(report: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summarise(report), indent=1) + "\n")


# Said above each table when a summary holds both tasks.
TASK_CAPTIONS = {
    "classification": "Classification (macro over the classes):",
    "segmentation": "Segmentation (Dice; HD95 in mm, an empty prediction scored as the ROI diagonal):",
}


def markdown(summary: Mapping[str, Any]) -> str:
    """The README tables of one summary."""
    lines: list[str] = []
    seeds = summary.get("seeds") or []
    tasks = [task for task in ("classification", "segmentation") if summary.get(task)]
    for task in tasks:
        section = summary[task]
        names = section["metrics"]
        if len(tasks) > 1:
            lines += [TASK_CAPTIONS[task], ""]
        deltas = section.get("delta_metrics", names[:2])
        efficiency = {entry["synthetic_arm"]: entry for entry in section.get("efficiency", {}).values()}
        header = ["arm", *names, *(f"Δ {name} vs classic" for name in deltas)]
        with_efficiency = bool(efficiency) and task == "classification"
        if with_efficiency:
            header.append(f"efficiency ({names[0]})")
        header.append("budget-bound seeds")
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for arm in section["arms"]:
            row = [arm["name"], *(format_interval(arm[name], empty="") for name in names)]
            row += [format_interval((arm.get("vs_classic") or {}).get(name), signed=True, empty="") for name in deltas]
            if with_efficiency:
                row.append(format_efficiency(efficiency.get(arm["name"], {}).get(names[0])) if arm["name"] in efficiency else "")
            bound = arm.get("budget_bound_seeds") or []
            row.append(f"{len(bound)} of {len(seeds)}" if bound else "none")
            lines.append("| " + " | ".join(row) + " |")
        reference = section.get("reference")
        if reference:
            row = [f"reference: {reference['name']}", *(format_interval(reference.get(name), empty="") for name in names)]
            row += [""] * (len(header) - len(row))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        pairs = section.get("pairs") or []
        if pairs:  # statistics.pairs: arms against each other, paired by seed and test sample
            header = ["arm − baseline", *(f"Δ {name}" for name in deltas)]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for pair in pairs:
                row = [f"{pair['arm']} − {pair['baseline']}", *(format_pair(pair.get(name), len(seeds), empty="") for name in deltas)]
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    runtime = summary.get("runtime_s")
    cohort = summary.get("cohort") or {}
    jobs = summary.get("jobs") or {}
    cached = f", {jobs['from_cache']} of {jobs['total']} jobs from the cache" if jobs.get("from_cache") else ""
    if cached and summary.get("job_seconds"):
        cached += f" (the jobs' own training: {summary['job_seconds'] / 60:.0f} worker-minutes)"
    translation = summary.get("translation_models")
    if translation:
        generator = "translation models " + ", ".join(
            f"`{label}` ({'with' if model.get('structure_consistency') else 'without'} structure consistency, weights SHA-256 {str(model.get('weights_sha256'))[:12]}…)"
            for label, model in translation.items()
        )
    else:
        generator = f"generator `{(summary.get('model') or {}).get('name')}` (weights SHA-256 {str((summary.get('model') or {}).get('weights_sha256'))[:12]}…)"
    lines.append(
        f"Mean over {len(seeds)} seeds [95 % CI]; cohort `{cohort.get('name')}` seed {cohort.get('seed')}; "
        f"{generator}; run time {runtime / 60:.0f} min{cached}." if runtime else ""
    )
    return "\n".join(lines).rstrip() + "\n"


def calibration_markdown(calibration: Mapping[str, Any]) -> str:
    """The README table of one difficulty calibration (``bench/cohort_difficulty.py --json``)."""
    sens, spec = "sensitivity_macro", "specificity_macro"
    large = calibration["large"]
    lines = [
        f"| cohort | cohort seed | training seeds | published count: macro sensitivity / specificity | {large} lesions | gain in sensitivity | budget-bound jobs |",
        "|---|---|---|---|---|---|---|",
    ]
    seeds = len(calibration["train"]["seeds"])
    for result in calibration["results"]:
        arms = result["arms"]
        small, big = arms["small"], arms["large"]
        bound = sum(len(arm.get("budget_bound") or []) for arm in (small, big))
        lines.append(
            f"| {calibration['cohort']} | {result['cohort_seed']} | {seeds} "
            f"| {small['train_samples']}: {format_interval(small['metrics'][sens])} / {format_interval(small['metrics'][spec])} "
            f"| {format_interval(big['metrics'][sens])} / {format_interval(big['metrics'][spec])} "
            f"| {format_interval(result['gain'][sens], signed=True)} | {bound} of {2 * seeds} |"
        )
    across = calibration.get("across_cohort_seeds")
    if across:
        cohort_seeds = ", ".join(str(seed) for seed in calibration["cohort_seeds"])
        lines.append(
            f"| {calibration['cohort']} | mean ± sd over {cohort_seeds} | | {across['small'][sens]['mean']:.3f} ± {across['small'][sens]['sd']:.3f} "
            f"| {across['large'][sens]['mean']:.3f} ± {across['large'][sens]['sd']:.3f} | {across['gain'][sens]['mean']:+.3f} ± {across['gain'][sens]['sd']:.3f} | |"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- shipped models ----

ZOO_BLOCK = "zoo"
# Recipe settings the README names when a shipped model's recipe moves them off their defaults.
NAMED_SETTINGS = (
    ("model", "upsample"), ("model", "minibatch_std"), ("model", "mask_output"), ("model", "embedding_init"),
    ("model", "noise_inputs"), ("train", "diffaugment"), ("train", "real_dihedral"), ("train", "r1_gamma"), ("train", "lecam_weight"), ("train", "mask_smoothing"),
    ("train", "mask_background_fill"), ("train", "ada_target"),
)
# The bright-pixel (contrast-filled vessel) criterion is judged for the liver alone, as tests/test_zoo_diversity.py does.
BRIGHT_JUDGED_MODELS = frozenset({"frid-adar-liver"})


def shipped_cards() -> list[dict[str, Any]]:
    """The cards of the models shipped in ``augmentor/zoo/weights`` (read by path, so that a user model of the
    same name does not stand in for a shipped one)."""
    from augmentor.zoo import SHIPPED_DIR, resolve_model

    entries = [resolve_model(folder) for folder in sorted(SHIPPED_DIR.iterdir()) if (folder / "model.json").is_file()]
    return [{**entry.card, "name": entry.name} for entry in entries]  # a model is named by its folder


def _count(value: Any) -> str:
    """An integer with spaces between thousands (``11 000``); ``–`` when unknown."""
    return "–" if value is None else f"{int(value):,}".replace(",", " ")


def _recipe_text(card: Mapping[str, Any]) -> str:
    """The card's recipe as a link to its file, its algorithm and the named settings it moves off their defaults."""
    from augmentor.recipes import to_dict
    from augmentor.training.recipe import GanRecipe

    recipe = card.get("recipe") or {}
    defaults = to_dict(GanRecipe())
    settings = []
    for section, key in NAMED_SETTINGS:
        value = (recipe.get(section) or {}).get(key)
        if value is None or value == defaults[section][key]:
            continue  # a card older than the setting ran with its default
        settings.append(f"`{key}`" if value is True else f"`{key} = {json.dumps(value)}`")
    name = recipe.get("name") or card.get("name")
    return f"[`{name}`](recipes/{name}.toml): " + ", ".join([str(card.get("algorithm", "?")), *settings])


def _criterion_text(name: str, diversity: Mapping[str, Any]) -> str:
    """A criterion's value followed by ✔ (met) or ✘ (missed); ``–`` when the scores do not hold it."""
    criteria = diversity.get("criteria") or {}
    if name not in criteria:
        return "–"
    value = format_interval({"estimate": criteria[name]}, signed=name == "nn_mask_iou", digits=2)
    return f"{value} {'✔' if name in (diversity.get('passed') or []) else '✘'}"


def zoo_markdown(cards: Sequence[Mapping[str, Any]]) -> str:
    """The README's shipped-models tables (block ``<!-- zoo -->``) from the models' cards.

    Args:
        cards: model cards (``model.json``); a card without a ``monitor`` record shows ``–`` for the scores.

    Returns:
        A table of the models (classes, training data, recipe, training run), then one of the monitor's scores
        at the shipped step against the tuning cohort, per model and class, with the diversity criteria met.
    """
    from evaluation.diversity import (  # imports torch (memorisation's nearest neighbours): here, not at the top
        AREA_RATIO_TOLERANCE,
        BRIGHT_RATIO_TOLERANCE,
        CRITERIA,
        MASK_IOU_EXCESS_MAX,
        NN_DISTANCE_RATIO_MIN,
    )

    translators = [card for card in cards if card.get("algorithm") == TRANSLATION_ALGORITHM]
    cards = [card for card in cards if card.get("algorithm") != TRANSLATION_ALGORITHM]
    lines = ["| model | classes | trained on | recipe | training |", "|---|---|---|---|---|"]
    for card in cards:
        data = card.get("training_data") or {}
        trained_on = f"{_count(data.get('num_samples'))} lesions of {_count(data.get('num_patients'))} patients (`{Path(str(data.get('path'))).name}`)"
        training = _training_text(card)
        monitor = card.get("monitor")
        if monitor:
            training += f"; shipped step {_count(monitor.get('selected_step'))} (select `{monitor.get('select')}`)"
        lines.append(f"| `{card['name']}` | {', '.join(card['class_names'])} | {trained_on} | {_recipe_text(card)} | {training} |")
    references = sorted({Path(str((card["monitor"].get("reference") or {}).get("path"))).name for card in cards if card.get("monitor")})
    against = f" (`{'`, `'.join(references)}`)" if references else ""
    lines += [
        "",
        f"The monitor's scores at the shipped step against lesions of the tuning cohort{against}, and the diversity criteria,"
        f" ✔ met or ✘ missed: NN-distance ratio synthetic / real ≥ {NN_DISTANCE_RATIO_MIN}, mask-IoU excess over "
        f"real ≤ {MASK_IOU_EXCESS_MAX}, area ratio within {AREA_RATIO_TOLERANCE * 100:.0f} % of 1 and, in the liver, bright-pixel "
        f"(vessel) ratio within {BRIGHT_RATIO_TOLERANCE * 100:.0f} % of 1; near-copies: samples flagged as copies of a training lesion.",
        "",
        "| model | class | KID | coverage | NN-distance ratio | mask-IoU excess | area ratio | bright ratio | near-copies |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for card in cards:
        scores = (card.get("monitor") or {}).get("scores") or {}
        if not scores:
            lines.append(f"| `{card['name']}` |" + " – |" * 8)
            continue
        judged = [name for name in CRITERIA if name != "bright_fraction" or card["name"] in BRIGHT_JUDGED_MODELS]
        for row, group in enumerate(name for name in [*card["class_names"], "all"] if name in scores):
            entry = scores[group]
            diversity = entry.get("diversity") or {}
            copies = entry.get("near_copy_fraction")
            cells = [
                f"`{card['name']}`" if row == 0 else "", group,
                format_interval({"estimate": entry.get("kid")}), format_interval({"estimate": entry.get("coverage")}, digits=2),
                *(_criterion_text(name, diversity) if name in judged else "–" for name in CRITERIA),
                "–" if copies is None else f"{100 * copies:.1f} %",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    if translators:
        lines += ["", translation_models_markdown(translators).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _training_text(card: Mapping[str, Any]) -> str:
    wall = card.get("wall_time_s")
    return f"{_count(card.get('steps'))} steps, {wall / 60:.0f} min on {card.get('device', '?')}" if wall else f"{_count(card.get('steps'))} steps"


def translation_models_markdown(cards: Sequence[Mapping[str, Any]]) -> str:
    """The shipped translation models (CycleGAN cards): direction, both domains' training data, recipe, run.
    Their scores on held-out slices are in the ``translation-<name>`` block (``evaluation.translation_audit``)."""
    lines = ["| translation model | translates | trained on | recipe | training |", "|---|---|---|---|---|"]
    for card in cards:
        data = card.get("training_data") or {}
        domains = []
        for key, what in (("domain_a", "phantom"), ("domain_b", "CT")):
            domain = data.get(key) or {}
            domains.append(f"{_count(domain.get('num_samples'))} {what} slices of {_count(domain.get('num_patients'))} patients (`{Path(str(domain.get('path'))).name}`)")
        translation = card.get("translation") or {}
        direction = f"{translation.get('from', 'A')} → {translation.get('to', 'B')}"
        if translation.get("structure_consistency"):
            direction += ", structure consistency"
        lines.append(f"| `{card['name']}` | {direction} | {' and '.join(domains)} | {_recipe_text(card)} | {_training_text(card)} |")
    return "\n".join(lines) + "\n"


def readme_block(result: Mapping[str, Any]) -> tuple[str, str]:
    """The README block name and table of a committed result: an evaluation summary (``evaluate-...``) or a
    difficulty calibration (``calibration-<cohort>``, from ``bench/cohort_difficulty.py --json``)."""
    if "across_cohort_seeds" in result or "results" in result:
        return f"calibration-{result['cohort']}", calibration_markdown(result)
    if result.get("format") == AUDIT_FORMAT:
        # imports torch: here, not at the top
        from evaluation.translation_audit import markdown as audit_markdown

        return str(result["name"]), audit_markdown(result)
    return str(result["name"]), markdown(result)


def _replace_block(text: str, opening: str, closing: str, table: str) -> str | None:
    """``text`` with what lies between the lines ``opening`` and ``closing`` replaced by ``table``; None when unmarked."""
    pattern = re.compile(rf"({re.escape(opening)}\n).*?({re.escape(closing)})", re.S)
    if not pattern.search(text):
        return None

    def replace(match: re.Match[str]) -> str:
        return match.group(1) + table + match.group(2)

    return pattern.sub(replace, text)


def update_readme(readme: Path, summaries: Sequence[Path], cards: Sequence[Mapping[str, Any]] | None = None) -> bool:
    """Rewrite the marked blocks of ``readme`` from ``summaries``, and its ``<!-- zoo -->`` block, if it has one,
    from ``cards`` (default: the shipped models' cards); returns whether anything changed."""
    text = readme.read_text()
    updated = text
    for path in summaries:
        name, table = readme_block(json.loads(path.read_text()))
        replaced = _replace_block(updated, f"<!-- results:{name} -->", f"<!-- /results:{name} -->", table)
        if replaced is None:
            raise SystemExit(f"{readme}: no block <!-- results:{name} --> ... <!-- /results:{name} -->")
        updated = replaced
    if f"<!-- {ZOO_BLOCK} -->" in updated:  # the cards are read only for a README that shows them
        zoo = zoo_markdown(shipped_cards() if cards is None else cards)
        updated = _replace_block(updated, f"<!-- {ZOO_BLOCK} -->", f"<!-- /{ZOO_BLOCK} -->", zoo) or updated
    if updated != text:
        readme.write_text(updated)
    return updated != text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="README tables from committed evaluation summaries and difficulty calibrations, and of the shipped models.")
    parser.add_argument("summaries", nargs="*", type=Path, help="committed results (none: print the shipped-models tables)")
    parser.add_argument("--update", type=Path, help="rewrite the marked blocks of this README")
    arguments = parser.parse_args(argv)
    if arguments.update:
        changed = update_readme(arguments.update, arguments.summaries)
        print(f"{arguments.update}: {'updated' if changed else 'already up to date'}")
        return 0
    for path in arguments.summaries:
        sys.stdout.write(readme_block(json.loads(path.read_text()))[1] + "\n")
    if not arguments.summaries:
        sys.stdout.write(zoo_markdown(shipped_cards()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
