"""Benchmark: mrfnet.metrics against scikit-image on the same image pairs (speed ratio and agreement).

    python tools/bench_metrics.py [--size 720x1280] [--repeats 5]

Scores a sharp photograph (scikit-image's astronaut, resized) against a blurred, noisy copy with
both libraries and prints a Markdown table: seconds per call (best of --repeats), the ratio, and
the largest difference between the values. A benchmark, not a test: the tests check agreement.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import cv2
import numpy as np
import skimage.data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrfnet.evaluate.metrics import MetricOptions, psnr, ssim


def best_time(function: Callable[[], float], repeats: int) -> tuple[float, float]:
    """(best seconds per call, value)."""
    times, value = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="720x1280", help="HEIGHTxWIDTH of the test pair (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    sharp = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    blurred = cv2.GaussianBlur(sharp, (7, 7), 2.0).astype(np.float64) + rng.normal(0, 3, sharp.shape)
    blurred = np.clip(np.round(blurred), 0, 255).astype(np.uint8)
    options = MetricOptions()  # skimage SSIM, RGB, data range 255
    pairs = {
        "PSNR": (lambda: psnr(sharp, blurred, options),
                 lambda: peak_signal_noise_ratio(sharp, blurred, data_range=255)),
        "SSIM (skimage variant)": (lambda: ssim(sharp, blurred, options),
                                   lambda: structural_similarity(sharp, blurred, gaussian_weights=True, sigma=1.5,
                                                                 use_sample_covariance=False, data_range=255,
                                                                 channel_axis=-1)),
    }
    print(f"\n{height}x{width} RGB uint8, best of {args.repeats}\n")
    print("| metric | mrfnet.metrics (s) | skimage (s) | speed-up | mrfnet value | skimage value | difference |")
    print("|---|---|---|---|---|---|---|")
    for name, (ours, theirs) in pairs.items():
        our_time, our_value = best_time(ours, args.repeats)
        their_time, their_value = best_time(theirs, args.repeats)
        print(f"| {name} | {our_time:.4f} | {their_time:.4f} | {their_time / our_time:.2f}x | {our_value:.8f} | "
              f"{their_value:.8f} | {abs(our_value - their_value):.1e} |")


if __name__ == "__main__":
    main()
