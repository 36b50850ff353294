"""Throughput of the CT acquisition simulator (projection + Poisson noise + FBP).

Prints images/second of :func:`augmentor.simulate.acquisition.simulate_scan` for lesion-ROI patches
(96 and 128 pixels at 0.7 mm) and whole 256x256 slices at 1.4 mm, one process, one thread, and the same
scan done with scikit-image's ``radon``/``iradon`` for comparison (the reason the simulator uses its own
sparse projector). Also prints the noise sigma and NPS peak of a uniform liver patch at dose 1.

Run: ``.venv/bin/python bench/acquisition.py`` (about 1 minute).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def _time(function, repeats: int) -> float:
    function()  # warm-up: builds and caches the projector
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    import torch

    torch.set_num_threads(1)
    from augmentor.simulate.acquisition import _projector, default_num_views, simulate_scan
    from augmentor.simulate.noise_metrics import measure_noise

    rng = np.random.default_rng(0)
    print("simulate_scan throughput (1 process, 1 thread)")
    for size, spacing, batch in ((96, 0.7, 32), (128, 0.7, 32), (256, 1.4, 8)):
        views = default_num_views(size)
        start = time.perf_counter()
        _projector(size, views)
        build = time.perf_counter() - start
        images = np.full((batch, size, size), 110.0)
        seconds = _time(lambda images=images, spacing=spacing: simulate_scan(images, spacing, rng=rng), 3)
        single = _time(lambda images=images, spacing=spacing: simulate_scan(images[0], spacing, rng=rng), 3)
        print(
            f"  {size}x{size} @ {spacing} mm, {views} views: projector build {build:.2f} s; "
            f"batch of {batch}: {batch / seconds:.0f} images/s ({1e3 * seconds / batch:.1f} ms each); "
            f"one at a time: {1e3 * single:.1f} ms"
        )
    rois_needed = 1700
    size, batch = 128, 32
    images = np.full((batch, size, size), 110.0)
    seconds = _time(lambda: simulate_scan(images, 0.7, rng=rng), 2) / batch
    print(f"  -> {rois_needed} lesion ROIs of 128x128: {rois_needed * seconds:.1f} s on one core")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.results import record

    record("acquisition simulate_scan, 128x128 lesion ROIs (1 thread)", 1.0 / seconds, spread_text="mean of 2 batches", unit=" images/s")

    from skimage.transform import iradon, radon

    size = 128
    image = np.full((size, size), 110.0)
    angles = np.linspace(0.0, 180.0, default_num_views(size), endpoint=False)

    def skimage_scan() -> np.ndarray:
        sinogram = radon(image, theta=angles, circle=False)
        return iradon(sinogram, theta=angles, circle=False, filter_name="hann")

    seconds = _time(skimage_scan, 2)
    ours = _time(lambda: simulate_scan(np.repeat(image[None], 32, 0), 0.7, rng=rng), 2) / 32
    print(f"scikit-image radon+iradon 128x128: {1e3 * seconds:.0f} ms/image; ours {1e3 * ours:.1f} ms/image "
          f"({seconds / ours:.0f}x faster)")

    flat = simulate_scan(np.full((16, 128, 128), 110.0), 0.7, rng=np.random.default_rng(1))
    measurement = measure_noise(flat[:, 32:96, 32:96], 0.7)
    print(f"uniform 110 HU patch, dose 1, standard kernel: sigma {measurement.sigma_hu:.1f} HU, "
          f"NPS peak {measurement.peak_per_mm:.3f} cycles/mm, mean frequency {measurement.mean_frequency_per_mm:.3f}")


if __name__ == "__main__":
    main()
