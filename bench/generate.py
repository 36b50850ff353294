"""Generation throughput and memory: 64x64 lesions with masks into compressed HDF5.

Prints (1) ``augment generate``'s throughput as a ratio to the bare generator forward pass, both in this
process, taking turns in ``--repeats`` (>= 5) interleaved repeats of ``--ratio-n`` samples each (the order
reversing every repeat); the figure is the median of the per-repeat ratios, with their min-max (target
>= 0.85); and (2) the peak RSS of a generate process writing ``--n`` (60 000) samples vs one writing a
tenth of them (target: within 10 %: memory is flat in N). Uses the shipped liver model when present, else
a randomly initialised generator of the shipped size (speed does not depend on the weights).

    python bench/generate.py [--n 60000] [--ratio-n 8192] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import MIN_REPEATS, median, record, spread

WORKER = """
import json, resource, sys, time
from augmentor.generate import generate
start = time.perf_counter()
generate("{cls}", {n}, {out!r}, model={model!r}, seed=0, device={device!r}, progress=False)
elapsed = time.perf_counter() - start
print(json.dumps({{"seconds": elapsed, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def model_directory(folder: Path) -> tuple[Path, str]:
    from augmentor.zoo import list_models

    for entry in list_models():
        if entry.origin == "shipped" and entry.image_size == 64:
            return entry.path, entry.class_names[0]
    from augmentor.models.card import save_model
    from augmentor.models.dcgan import ConditionalDCGANGenerator

    torch.manual_seed(0)
    network = ConditionalDCGANGenerator(num_classes=3, latent_dim=128, image_size=64, base_channels=32).eval()
    path = folder / "random-liver-size"
    save_model(path, network, {"class_names": ["cyst", "metastasis", "hemangioma"], "hu_window": [-160.0, 240.0]})
    return path, "cyst"


def bare_forward(model: Path, n: int, device: str) -> float:
    """Samples/s of the network alone (as generation runs it: resize upsampling folded) on latents of the
    same blocks, batches of the same size."""
    from augmentor.generate import GROUP, SampleStream, pick_device
    from augmentor.models.card import load_generator

    chosen = pick_device(device)
    network, card = load_generator(model, device=chosen)
    stream = SampleStream(network, card, chosen, seed=0)
    network = stream.network
    latents = [torch.randn(GROUP, stream.latent_dim, device=chosen) for _ in range(4)]
    labels = torch.zeros(GROUP, dtype=torch.long, device=chosen)
    with torch.inference_mode():
        network(latents[0], labels)
        if chosen.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for block in range(n // GROUP):
            output = network(latents[block % 4], labels)
        output.cpu()
        return (n // GROUP) * GROUP / (time.perf_counter() - start)


def generate_rate(model: Path, cls: str, n: int, out: Path, device: str) -> float:
    """Samples/s of ``generate`` (model load, forward passes, HDF5 writes, the rename) in this process."""
    from augmentor.generate import generate

    start = time.perf_counter()
    generate(cls, n, out, model=model, seed=0, device=device, progress=False, overwrite=True)
    return n / (time.perf_counter() - start)


def run_generate(model: Path, cls: str, n: int, out: Path, device: str) -> dict[str, float]:
    code = WORKER.format(cls=cls, n=n, out=str(out), model=str(model), device=device)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60_000, help="samples of the large run of the memory figure")
    parser.add_argument("--ratio-n", type=int, default=8192, help="samples per side per repeat of the throughput ratio")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model, cls = model_directory(Path(folder))
        print(f"model: {model}; {torch.get_num_threads()} torch threads")
        bare_forward(model, 1024, args.device)  # warm-up: first-call allocations, kernel choice
        ratios, forward_rates, generate_rates = [], [], []
        for repeat in range(args.repeats):
            sides = ["forward", "generate"] if repeat % 2 == 0 else ["generate", "forward"]
            rates = {}
            for side in sides:
                if side == "forward":
                    rates[side] = bare_forward(model, args.ratio_n, args.device)
                else:
                    rates[side] = generate_rate(model, cls, args.ratio_n, Path(folder) / "ratio.h5", args.device)
            forward_rates.append(rates["forward"])
            generate_rates.append(rates["generate"])
            ratios.append(rates["generate"] / rates["forward"])
            print(f"  repeat {repeat + 1}: forward {rates['forward']:,.0f} samples/s, generate {rates['generate']:,.0f} samples/s", flush=True)
        print(f"bare forward {median(forward_rates):,.0f} samples/s, generate {median(generate_rates):,.0f} samples/s (medians)")
        ratio = median(ratios)
        record(f"generate / bare forward ({args.ratio_n} samples a side)", ratio, ">= 0.85", ratio >= 0.85, spread(ratios))
        large = run_generate(model, cls, args.n, Path(folder) / "large.h5", args.device)
        small = run_generate(model, cls, args.n // 10, Path(folder) / "small.h5", args.device)
        growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
        print(f"peak RSS: {args.n // 10} samples {small['peak_rss_mib']:.0f} MiB, {args.n} samples {large['peak_rss_mib']:.0f} MiB "
              f"({args.n / large['seconds']:,.0f} samples/s)")
        record(f"generate peak RSS growth {args.n // 10} -> {args.n} samples", f"{growth:+.1%}", "within 10 %", abs(growth) <= 0.10, "one run each")


if __name__ == "__main__":
    main()
