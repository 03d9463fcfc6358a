"""Sliding-window inference on a large volume: time and peak memory.

    python benchmarks/sliding_window.py                # 256^3 volume, 64^3 3D UNet
    python benchmarks/sliding_window.py --size 128     # quicker

Target (issue 8): peak RSS < 4 GB for a 256^3 volume with a 64^3 3D UNet,
because windows are predicted `batch_size` at a time and only one
output-sized accumulator is kept.
"""

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from _common import markdown_table, write_results  # noqa: E402


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="volume edge length (default 256)")
    p.add_argument("--patch", type=int, default=64, help="window edge length (default 64)")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--filters", type=int, default=8, help="UNet width (default 8)")
    args = p.parse_args()

    from keras_medseg import zoo
    from keras_medseg.inference import sliding_window

    model = zoo.build("unet", spatial_dims=3, input_size=args.patch, filters=args.filters, depth=3,
                      num_classes=2)
    volume = np.random.default_rng(0).standard_normal((args.size,) * 3 + (1,)).astype("float32")
    model.predict_on_batch(volume[None, :args.patch, :args.patch, :args.patch])  # warm-up / tracing
    before = rss_mb()
    start = time.perf_counter()
    out = sliding_window(model, volume, (args.patch,) * 3, overlap=args.overlap, batch_size=args.batch_size,
                         progress=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert out.shape == volume.shape[:-1] + (2,)
    data = {
        "volume": [args.size] * 3, "patch": [args.patch] * 3, "overlap": args.overlap,
        "batch_size": args.batch_size, "unet_filters": args.filters, "unet_params": model.count_params(),
        "seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": before,
        "volume_mb": volume.nbytes / 2**20, "output_mb": out.nbytes / 2**20,
        "target_peak_rss_mb": 4096, "meets_target": peak < 4096,
    }
    table = markdown_table(
        ["volume", "patch", "overlap", "batch", "UNet params", "time (s)", "peak RSS (MB)", "target < 4096 MB"],
        [[f"{args.size}^3", f"{args.patch}^3", args.overlap, args.batch_size, model.count_params(),
          round(seconds, 1), round(peak), "met" if peak < 4096 else "missed"]],
    )
    write_results("sliding_window", data, "### Sliding-window inference (3D UNet)\n\n" + table)
    print(table)


if __name__ == "__main__":
    main()
