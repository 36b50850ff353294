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

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except AugmentorError as error:
            typer.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            typer.echo("interrupted: outputs are written atomically, so no half-written file was left at an output path", err=True)
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


@app.command("train")
def train_command(
    recipe: Annotated[str, typer.Argument(help="A gan or cyclegan recipe: a .toml file or a shipped recipe's name (e.g. frid-adar-liver).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory: model.safetensors + model.json, checkpoints, samples.")],
    data: Annotated[Path | None, typer.Option("--data", "-d", help="gan recipes: the training .h5 file (training patients only).")] = None,
    data_a: Annotated[Path | None, typer.Option("--data-a", help="cyclegan recipes: domain A, the phantom slices to translate from.")] = None,
    data_b: Annotated[Path | None, typer.Option("--data-b", help="cyclegan recipes: domain B, the CT slices (with organ labels, the hallucination judge trains).")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe value: section.key=value (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")] = False,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N (default: CUDA when available).")] = None,
    overwrite: Overwrite = False,
    distributed: Annotated[bool, typer.Option("--distributed", help="Print the torchrun lines that run this training on several GPUs or nodes, and exit.")] = False,
) -> None:
    """Train a GAN: lesion images with masks (cGAN, WGAN-GP; --data) or phantom -> CT translation (CycleGAN; --data-a, --data-b)."""
    from augmentor.recipes import load_recipe, recipe_kind
    from augmentor.training.distributed import distributed_instructions, environment_world
    from augmentor.training.run import train

    if recipe_kind(recipe) == "cyclegan":
        from augmentor.translation.train import train_cyclegan

        if distributed or environment_world().is_distributed:
            raise AugmentorError("cyclegan recipes train in one process for now; torchrun/DDP training covers the gan recipes (cGAN, WGAN-GP)")

        cyclegan_dir = train_cyclegan(load_recipe(recipe, overrides or [], expect="cyclegan"), data_a, data_b, out,
                                      resume=resume, overwrite=overwrite, device=device, single_file=data)
        typer.echo(f"wrote {cyclegan_dir / 'model.safetensors'} and {cyclegan_dir / 'model.json'} (+ reverse/, segmenter/)")
        return
    if data_a is not None or data_b is not None:
        raise AugmentorError("--data-a and --data-b are for cyclegan recipes; this recipe trains on one file: pass --data")
    if data is None:
        raise AugmentorError("missing option --data: the training .h5 file")
    gan_recipe = load_recipe(recipe, overrides or [], expect="gan")
    if distributed:
        arguments = [recipe, "--data", str(data), "--out", str(out), *(f"--set={item}" for item in overrides or [])]
        arguments += [flag for flag, on in (("--resume", resume), ("--overwrite", overwrite)) if on] + (["--device", device] if device else [])
        typer.echo(distributed_instructions(arguments, gan_recipe.train.batch_size))
        return
    model_dir = train(gan_recipe, data, out, resume=resume, overwrite=overwrite, device=device)
    if environment_world().is_main:  # under torchrun, rank 0 wrote the model
        typer.echo(f"wrote {model_dir / 'model.safetensors'} and {model_dir / 'model.json'}")


@app.command("cohort")
def cohort_command(
    name: Annotated[str, typer.Argument(help="Cohort: liver-lesions, lung-nodules or abdomen-ct.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (gets train.h5 and test.h5).")],
    seed: Seed = 0,
    train_size: Annotated[int | None, typer.Option("--train-size", help="Train samples (default: the published count).")] = None,
    test_size: Annotated[int | None, typer.Option("--test-size", help="Test samples (default: the cohort's).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Processes (default: all cores).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Simulate a cohort of virtual patients: train.h5 and test.h5 from disjoint patients."""
    from augmentor.data.reader import read_info
    from augmentor.simulate.cohorts import build_cohort

    paths = build_cohort(name, out, seed=seed, train_size=train_size, test_size=test_size, overwrite=overwrite, workers=workers)
    for split, path in paths.items():
        typer.echo(f"wrote {path} ({read_info(path).num_samples} {split} samples)")


@app.command("phantom")
def phantom_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .h5 file (phantom domain: flat HU per tissue + label map).")],
    n_patients: Annotated[int, typer.Option("--n-patients", help="Virtual patients to simulate (ignored with --xcat).")] = 10,
    slices_per_patient: Annotated[int, typer.Option("--slices", help="Neighbouring slices per patient (5 mm apart).")] = 8,
    xcat: Annotated[Path | None, typer.Option("--xcat", help="Convert an XCAT volume instead: NAME_act_1.bin (or NAME_atn_1.bin).")] = None,
    log: Annotated[Path | None, typer.Option("--log", help="XCAT's text log (NAME_log) with array size and pixel width.")] = None,
    organ_map: Annotated[Path | None, typer.Option("--organ-map", help="TOML map of XCAT activity values to tissue names (default: shipped map).")] = None,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """Write XCAT-like phantoms (virtual patients' label maps with flat tissue HU), or convert an XCAT volume."""
    from augmentor.data.reader import read_info

    if xcat is not None:
        from augmentor.simulate.xcat import convert_xcat

        if log is None:
            raise AugmentorError("--xcat needs --log: the NAME_log file XCAT wrote next to the .bin")
        written = convert_xcat(xcat, log, out, organ_map=organ_map, overwrite=overwrite, progress=True)
    else:
        from augmentor.simulate.phantom import write_phantoms

        written = write_phantoms(out, n_patients, seed=seed, slices_per_patient=slices_per_patient, overwrite=overwrite, progress=True)
    typer.echo(f"wrote {written} ({read_info(written).num_samples} phantom slices)")


@app.command("generate")
def generate_command(
    classes: Annotated[
        list[str],
        typer.Option("--class", "-c", help="Class to generate; repeat for several, NAME=COUNT for per-class counts, 'all' for every class of --model."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .h5 file.")],
    n: Annotated[int | None, typer.Option("--n", help="Samples per class, at least 1 (for --class items without =COUNT).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Zoo model name or model directory (default: the model that knows the class).")] = None,
    seed: Seed = 0,
    start: Annotated[int, typer.Option("--start", help="Index of the first sample of each class (for shards).")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per write; the output does not depend on it.")] = 1024,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N (default: CUDA when available).")] = None,
    shards: Annotated[int, typer.Option("--shards", help="Local processes, one shard file each, joined into --out (same samples as 1). Under torchrun: one shard per rank.")] = 1,
    overwrite: Overwrite = False,
) -> None:
    """Generate labelled synthetic lesions (image + mask + class) into an HDF5 file."""
    from augmentor.data.reader import read_info
    from augmentor.generate import generate
    from augmentor.training.distributed import environment_world

    world = environment_world()
    written = generate(
        classes, n, out, model=model, seed=seed, start=start, batch_size=batch_size, device=device, overwrite=overwrite,
        shards=shards, world=world,
    )
    if world.is_main:
        info = read_info(written)
        typer.echo(f"wrote {written}: {info.num_samples} synthetic samples from model {info.provenance['model']['name']}")


@app.command("translate")
def translate_command(
    model: Annotated[str, typer.Option("--model", "-m", help="A CycleGAN model: zoo name or model directory (augment train with a cyclegan recipe).")],
    input_file: Annotated[Path, typer.Option("--input", "-i", help="Phantom .h5 file (augment phantom): translated at its own size.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .h5 file: CT-like HU, the phantom's masks byte for byte, safety scores.")],
    ensemble: Annotated[str | None, typer.Option("--ensemble", help="DIR1,DIR2,...: more models of the same recipe (other seeds) for the disagreement score and map.")] = None,
    segmenter: Annotated[Path | None, typer.Option("--segmenter", help="Hallucination judge's model directory (default: the model's segmenter/).")] = None,
    seed: Seed = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Slices per read and write; the output does not depend on it.")] = 64,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:N (default: CUDA when available).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Translate phantom slices into CT-like slices that keep their labels; score hallucination, steganography, disagreement."""
    from augmentor.translation.translate import describe_safety, translate

    members = [Path(item.strip()) for item in ensemble.split(",") if item.strip()] if ensemble else []
    result = translate(model, input_file, out, ensemble=members, segmenter=segmenter, seed=seed, batch_size=batch_size,
                       device=device, overwrite=overwrite, progress=True)
    typer.echo(f"wrote {result.path}: {result.slices} translated slices, masks copied from {input_file.name}")
    for line in describe_safety(result.safety):
        typer.echo(line)


@app.command("models")
def models_command() -> None:
    """List the shipped and user models (user models: $AUGMENTOR_HOME/models)."""
    from rich.console import Console
    from rich.table import Table

    from augmentor.zoo import list_models, user_models_dir

    table = Table(title=f"augmentor models (user models in {user_models_dir()})")
    for column in ("name", "origin", "family", "classes", "size", "training data SHA-256", "weights SHA-256"):
        table.add_column(column, no_wrap=column in ("name", "training data SHA-256", "weights SHA-256"))  # names are copied whole
    for entry in list_models():
        size = f"{entry.image_size}x{entry.image_size}"
        if (entry.card.get("translation") or {}).get("fully_convolutional"):
            size = f"any ({size} crops)"  # a translation model runs at the input's own size
        table.add_row(
            entry.name, entry.origin, f"{entry.family} ({entry.algorithm})", ", ".join(entry.class_names), size,
            entry.training_data_sha256[:12] or "-", entry.weights_sha256[:12],
        )
    Console(width=160).print(table)


@app.command("ingest")
def ingest_command(
    source: Annotated[Path, typer.Argument(help="Folder of DICOM series, NIfTI, PNG/TIFF or .npz files (or one file); layouts in the README.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .h5 file.")],
    input_format: Annotated[str, typer.Option("--format", help="auto, dicom, nifti, images (PNG/TIFF) or npz.")] = "auto",
    classes: Annotated[Path | None, typer.Option("--classes", help="CSV with columns patient,lesion,class (default: class folders).")] = None,
    class_names: Annotated[str | None, typer.Option("--class-names", help="Ordered class list, comma-separated; other classes are refused.")] = None,
    roi_size: Annotated[int, typer.Option("--roi-size", help="Side of the lesion-centred ROI in pixels.")] = 64,
    slices: Annotated[str, typer.Option("--slices", help="all (every slice a lesion is on) or largest.")] = "all",
    spacing: Annotated[float | None, typer.Option("--spacing", help="Resample slices to this in-plane spacing (mm) first.")] = None,
    salt: Annotated[str | None, typer.Option("--salt", envvar="AUGMENTOR_SALT", help="Secret for the patient pseudonyms (never stored); default: random per run.")] = None,
    hu_window: Annotated[str | None, typer.Option("--hu-window", help="LOW,HIGH HU window stored for training (default -160,240); also how 8-bit PNGs are read. Write --hu-window=-160,240.")] = None,
    whole_slices: Annotated[bool, typer.Option("--whole-slices", help="Every axial slice whole (a CT domain, e.g. for translation); no lesion labels needed. DICOM or NIfTI.")] = False,
    size: Annotated[int, typer.Option("--size", help="With --whole-slices: pixels per side of the slices.")] = 256,
    overwrite: Overwrite = False,
) -> None:
    """Ingest real data: lesion-centred ROIs with masks, classes and pseudonymised patients (or, with --whole-slices, every CT slice whole)."""
    from augmentor.data.ingest import ingest, parse_hu_window
    from augmentor.data.reader import read_info

    if whole_slices:
        from augmentor.data.ingest.whole_slices import ingest_whole_slices

        if classes is not None or class_names:
            raise AugmentorError("--whole-slices takes no classes (--classes, --class-names): every slice is one sample of the CT domain")
        written = ingest_whole_slices(source, out, format=input_format, size=size, spacing_mm=spacing, salt=salt,
                                      hu_window=parse_hu_window(hu_window), overwrite=overwrite, progress=True)
    else:
        written = ingest(
            source, out, format=input_format, classes_csv=classes,
            class_names=[name for name in class_names.split(",") if name.strip()] if class_names else None,
            roi_size=roi_size, slices=slices, spacing_mm=spacing, salt=salt, hu_window=parse_hu_window(hu_window),
            overwrite=overwrite, progress=True,
        )
    info = read_info(written)
    typer.echo(f"wrote {written}: {info.num_samples} samples, classes {', '.join(info.class_names)}")
    if salt is None:
        from augmentor.data.ingest.pseudonym import UNSALTED_WARNING

        typer.echo(UNSALTED_WARNING, err=True)


@app.command("inspect")
def inspect_command(
    path: Annotated[Path, typer.Argument(help="An augmentor .h5 file (or an evaluation report.json).")],
    grid: Annotated[Path | None, typer.Option("--grid", help="Image grid PNG (default: FILE.png next to the file).")] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Images per class in the grid.")] = 8,
    no_grid: Annotated[bool, typer.Option("--no-grid", help="Do not draw the image grid.")] = False,
) -> None:
    """Summarise a file (classes, HU statistics, schema, provenance) and draw an image grid."""
    from augmentor.inspect import inspect_file, inspect_report, print_summary

    if path.suffix.lower() == ".json":
        inspect_report(path)
        return
    summary = inspect_file(path, grid, per_class, make_grid=not no_grid, progress=True)
    if not summary.valid:
        raise AugmentorError(summary.problem or f"{path}: invalid")
    print_summary(summary)


@app.command("evaluate")
def evaluate_command(
    recipe: Annotated[str, typer.Argument(help="An evaluate recipe: a .toml file or a shipped recipe's name (e.g. evaluate-liver).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder: report.html, report.json, predictions.npz.")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe value: section.key=value (repeatable).")] = None,
    overwrite: Overwrite = False,
    export_train: Annotated[
        Path | None,
        typer.Option("--export-train", help="Write the samples of the split's training patients (validation patients left out) to this .h5 "
                     "and stop: the file to train a generator on, so that it never sees the patients that early-stop the arms. "
                     "--out is not written."),
    ] = None,
    plan: Annotated[
        bool,
        typer.Option("--plan", help="Print the jobs the run would train (budgets, and which the cache holds) and stop; inputs are checked "
                     "and built as for a run. --out is not needed."),
    ] = False,
) -> None:
    """Retrain downstream classifiers/segmenters with and without synthetic data, and report the difference."""
    from augmentor.recipes import load_recipe

    evaluate_recipe = load_recipe(recipe, overrides or [], expect="evaluate")
    if plan:
        from evaluation.run import plan_evaluation

        for line in plan_evaluation(evaluate_recipe, progress=True):
            typer.echo(line)
        return
    if export_train is not None:
        from evaluation.export import export_training_split

        written, samples, patients = export_training_split(evaluate_recipe, export_train, overwrite=overwrite, progress=True)
        typer.echo(f"wrote {written}: {samples} samples of {patients} training patients (validation patients left out)")
        return
    if out is None:
        raise AugmentorError("give --out FOLDER for the report (or --export-train FILE to write the split's training samples)")
    from evaluation.run import evaluate

    folder = evaluate(evaluate_recipe, out, overwrite=overwrite, progress=True)
    typer.echo(f"wrote {folder / 'report.html'} and {folder / 'report.json'}")


@app.command("compare")
def compare_command(
    report_a: Annotated[Path, typer.Argument(help="Report folder (or report.json) of run A.")],
    report_b: Annotated[Path, typer.Argument(help="Report folder (or report.json) of run B: the same test files and seeds.")],
    arms: Annotated[list[str], typer.Option("--arm", help="An arm both reports have, e.g. 'classic+synthetic x1' (repeatable).")],
    test: Annotated[
        list[Path] | None,
        typer.Option("--test", help="The reports' test files, in their order (repeatable); default: found in the report folders, under cohorts/ or next to the reports, checked by SHA-256."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the comparison (JSON).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Arms of two evaluation reports against each other (A − B), paired by training seed and test sample."""
    from evaluation.compare import compare_and_write

    typer.echo(compare_and_write(report_a, report_b, arms, test, out, overwrite=overwrite))


@app.command("export-dicom")
def export_dicom_command(
    h5: Annotated[Path, typer.Argument(help="An augmentor .h5 file.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to create: <class>/<index>.dcm and <index>_mask.dcm.")],
    overwrite: Overwrite = False,
) -> None:
    """Export every sample as a DICOM CT image plus a mask series (marked synthetic unless real)."""
    from augmentor.data.export_dicom import export_dicom

    count = export_dicom(h5, out_dir, overwrite=overwrite, progress=True)
    typer.echo(f"wrote {count} samples to {out_dir} ({2 * count} DICOM files)")


if __name__ == "__main__":
    sys.exit(app())
