"""HDF5 patch store and FROC: write/read throughput, size on disk, FROC time.

    KERAS_BACKEND=numpy python benchmarks/wsi_patch_store.py                  # 10k patches of 64x64
    KERAS_BACKEND=numpy python benchmarks/wsi_patch_store.py --patches 2000   # quicker

Patches are random crops of scikit-image's immunohistochemistry image (real
tissue texture, so the compression ratios mean something). Measured: append
throughput (one commit per `--append` patches), file size against the raw
uint8 size, the time of one `ThreeStepSampler` batch of 32 (random reads
through the three-step index, with and without augmentation), and the time of
`froc_curve` on a million patch scores.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from _common import markdown_table, write_results  # noqa: E402


def crops(n, size, rng, image):
    r = rng.integers(0, image.shape[0] - size, n)
    c = rng.integers(0, image.shape[1] - size, n)
    return np.stack([image[i:i + size, j:j + size] for i, j in zip(r, c)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=10000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--append", type=int, default=256, help="patches per append (one commit each)")
    parser.add_argument("--batches", type=int, default=30, help="sampler batches timed")
    args = parser.parse_args()

    from skimage import data

    from keras_medseg.data import PatchStore, ThreeStepSampler
    from keras_medseg.evaluation import froc_curve

    image = data.immunohistochemistry()
    rng = np.random.default_rng(0)
    rows, results = [], {}
    raw_mb = args.patches * args.size * args.size * 3 / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        for compression in ("gzip", "lzf", None):
            path = os.path.join(tmp, f"{compression}.h5")
            t0 = time.perf_counter()
            with PatchStore(path, "w", patch_size=args.size, compression=compression) as store:
                for start in range(0, args.patches, args.append):
                    n = min(args.append, args.patches - start)
                    labels = (rng.random(n) < 0.1).astype(int)
                    store.append(crops(n, args.size, rng, image), labels, f"slide_{start // 2048}",
                                 np.where(labels == 1, 0, -1))
            write_s = time.perf_counter() - t0
            mb = os.path.getsize(path) / 1e6
            timings = {}
            for augment in (False, True):
                ds = ThreeStepSampler(path, batch_size=32, steps_per_epoch=args.batches, augment=augment, seed=0)
                ds[0]  # open the file
                t0 = time.perf_counter()
                for i in range(args.batches):
                    ds[i]
                timings[augment] = (time.perf_counter() - t0) / args.batches * 1e3
            name = str(compression)
            results[name] = {"write_patches_per_s": args.patches / write_s, "file_mb": mb, "raw_mb": raw_mb,
                             "batch32_ms": timings[False], "batch32_augmented_ms": timings[True]}
            rows.append([name, f"{args.patches / write_s:,.0f}", f"{mb:.1f} ({mb / raw_mb:.0%})",
                         f"{timings[False]:.1f}", f"{timings[True]:.1f}"])

    n = 1_000_000
    slides = rng.integers(0, 200, n)
    tumors = np.where((slides >= 100) & (rng.random(n) < 0.01), rng.integers(0, 5, n), -1)
    scores = rng.random(n)
    t0 = time.perf_counter()
    curve = froc_curve(scores, tumors, slides, np.arange(100))
    froc_s = time.perf_counter() - t0
    results["froc_curve_1M_patches_s"] = froc_s
    results["froc_curve_points"] = int(curve.thresholds.size)

    table = markdown_table(
        ["compression", "append (patches/s)", "file MB (of raw)", "sampler batch of 32 (ms)", "with augmentation (ms)"],
        rows,
    )
    table += (f"\n\n{args.patches} patches of {args.size}x{args.size}x3 uint8 ({raw_mb:.0f} MB raw), "
              f"one commit per {args.append} patches. `froc_curve` on 1,000,000 patch scores "
              f"(200 slides): {froc_s:.2f} s.")
    print(table)
    write_results("wsi_patch_store", results, table)


if __name__ == "__main__":
    main()
