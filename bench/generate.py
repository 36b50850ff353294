"""Generation throughput and memory: 60 000 64x64 lesions with masks into compressed HDF5.

Prints (1) ``augment generate``'s throughput as a ratio to the bare generator forward pass on the
same latents, measured in the same run (target >= 0.9), and (2) the peak RSS of a generate process
writing 60 000 samples vs one writing 6 000 (target: within 10 %: memory is flat in N). Uses the
shipped liver model when present, else a randomly initialised generator of the shipped size (speed
does not depend on the weights).

    python bench/generate.py [--n 60000] [--device cpu]
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
    """Samples/s of the network alone on the same latents, batches of the same size."""
    from augmentor.generate import GROUP, SampleStream, pick_device
    from augmentor.models.card import load_generator

    chosen = pick_device(device)
    network, card = load_generator(model, device=chosen)
    stream = SampleStream(network, card, chosen, seed=0)
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


def run_generate(model: Path, cls: str, n: int, out: Path, device: str) -> dict[str, float]:
    code = WORKER.format(cls=cls, n=n, out=str(out), model=str(model), device=device)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model, cls = model_directory(Path(folder))
        print(f"model: {model}")
        forward = bare_forward(model, args.n, args.device)
        print(f"bare generator forward: {forward:,.0f} samples/s")
        large = run_generate(model, cls, args.n, Path(folder) / "large.h5", args.device)
        rate = args.n / large["seconds"]
        size = (Path(folder) / "large.h5").stat().st_size / 2**20
        print(f"augment generate, {args.n} samples -> HDF5 ({size:.0f} MiB): {rate:,.0f} samples/s  ratio {rate / forward:.2f} (target >= 0.9)")
        small = run_generate(model, cls, args.n // 10, Path(folder) / "small.h5", args.device)
        growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
        print(f"peak RSS: {args.n // 10} samples {small['peak_rss_mib']:.0f} MiB, {args.n} samples {large['peak_rss_mib']:.0f} MiB  growth {growth:+.1%} (target within 10 %)")


if __name__ == "__main__":
    main()
