"""Plug-in dataset throughput: random access through a 2-worker DataLoader over a 20 000-sample
compressed HDF5 file, as a ratio to an in-memory TensorDataset of the same (normalised) data read
through the same DataLoader settings, measured in the same run. Target: ratio >= 0.8.

The default ``H5Dataset`` holds files that decode to <= 2 GiB in memory (shared with forked workers);
the lazy path (``cache=False``, every sample read and decompressed from disk) is measured too.

Also prints the size of the file under each compression, which is how the writer's default was chosen.

    python bench/dataset.py [--samples 20000] [--batch-size 64] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from augmentor.data.dataset import H5Dataset, collate
from augmentor.data.intensity import normalise
from augmentor.data.writer import H5Writer


def make_file(path: Path, samples: int, size: int, compression: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CT-like patches: smooth anatomy plus correlated noise (compresses like real CT, not like zeros)."""
    generator = np.random.default_rng(0)
    images = np.empty((samples, 1, size, size), dtype=np.int16)
    masks = np.zeros((samples, size, size), dtype=np.uint8)
    labels = generator.integers(0, 3, size=samples)
    yy, xx = np.mgrid[:size, :size]
    block = 1000
    with H5Writer(path, class_names=["cyst", "metastasis", "hemangioma"], image_shape=(1, size, size), compression=compression) as writer:
        for start in range(0, samples, block):
            count = min(block, samples - start)
            noise = generator.normal(0, 15, size=(count, size, size))
            noise = (noise + np.roll(noise, 1, axis=1) + np.roll(noise, 1, axis=2)) / 1.7
            radius = generator.uniform(4, 20, size=(count, 1, 1))
            disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2
            patch = 110 + noise - 80 * disc
            images[start : start + count, 0] = np.rint(patch).astype(np.int16)
            masks[start : start + count] = disc
            writer.append(images[start : start + count], masks[start : start + count], labels[start : start + count], [f"p{i % 500}" for i in range(count)])
    return images, masks, labels


def throughput(loader: DataLoader, epochs: int) -> float:
    for _ in loader:  # warm-up: worker start-up, file opening
        break
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += len(batch["label"] if isinstance(batch, dict) else batch[2])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        sizes = {}
        for compression in ("none", "gzip", "lzf"):
            path = Path(folder) / f"{compression}.h5"
            images, masks, labels = make_file(path, args.samples, args.size, compression)
            sizes[compression] = path.stat().st_size / 2**20
        print("file size (MiB): " + ", ".join(f"{name} {size:.1f}" for name, size in sizes.items()))

        window = (-160.0, 240.0)
        memory = TensorDataset(
            normalise(torch.from_numpy(images.astype(np.float32)), window), torch.from_numpy(masks).unsqueeze(1).float(), torch.from_numpy(labels)
        )
        options = {"batch_size": args.batch_size, "shuffle": True, "num_workers": 2, "persistent_workers": True, "generator": torch.Generator().manual_seed(0)}
        baseline = throughput(DataLoader(memory, **options), args.epochs)
        print(f"in-memory TensorDataset, 2 workers: {baseline:,.0f} samples/s")
        for compression, cache in (("lzf", None), ("lzf", False), ("gzip", False)):
            dataset = H5Dataset(Path(folder) / f"{compression}.h5", cache=cache)
            mode = "default: cached in memory" if dataset.cached else "lazy: every sample read from disk"
            rate = throughput(DataLoader(dataset, collate_fn=collate, **options), args.epochs)
            print(f"H5Dataset ({compression}, {mode}), 2 workers: {rate:,.0f} samples/s  ratio {rate / baseline:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
