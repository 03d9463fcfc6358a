"""A data set 3x larger than the memory cache: epochs with and without the disk cache, and peak memory.

    python benchmarks/volume_cache.py                      # 12 cases of 192x192x96 (~13 MB each in RAM)
    python benchmarks/volume_cache.py --cases 4 --side 48  # seconds (the test suite's smoke run)

The cases are written as gzipped NIfTI (1 x 1 x 2 mm) and trained on at
1.5 x 1.5 x 2 mm with z-score intensity, so every read is a gunzip, a
trilinear resampling and a normalisation, as in a real CT/MR run. The memory
cache of `VolumeDataset` gets a third of the preprocessed data set
(`cache_bytes`), so without a disk cache every epoch reads every case again.
Each setting runs in its own fresh process (peak RSS is that process's
`ru_maxrss`), epochs of 64^3 patches, batch 2, no augmentation (the cache
alone is measured):

* `memory cache only` (the anchor): epoch 1 and later epochs all read the files;
* `disk cache` (`cache_dir`): epoch 1 reads and writes the cache, later
  epochs memory-map it;
* `all in memory` (the floor of this design: `cache_bytes` above the data
  set, later epochs only crop).

Later epochs: min and median over `--epochs - 1` epochs. Goals (issue 34):
the disk cache's later epochs >= 5x faster than its first, peak RSS <= the
memory budget + 1 GB.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from _common import markdown_table, write_results  # noqa: E402

SETTINGS = ("memory cache only", "disk cache", "all in memory")


def write_cases(root, n, side, depth):
    """`n` gzipped NIfTI cases of `side x side x depth` voxels of 1 x 1 x 2 mm, each with a bright ball labelled 1."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    shape = (side, side, depth)
    grid = np.indices(shape, sparse=True)
    for i in range(n):
        centre = [rng.integers(s // 4, 3 * s // 4) for s in shape]
        ball = sum((g - c) ** 2 * w for g, c, w in zip(grid, centre, (1, 1, 4))) <= (side // 6) ** 2
        image = (rng.normal(40, 20, size=shape) + 100 * ball).astype("float32")
        nib.save(nib.Nifti1Image(image, affine), os.path.join(root, "images", f"case{i:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(ball.astype("uint8"), affine), os.path.join(root, "labels", f"case{i:03d}.nii.gz"))


def measure(root, setting, epochs, patch, cache_dir, budget):
    """One setting in this process: seconds per epoch, loads per epoch, peak RSS (MB)."""
    from keras_medseg.data import VolumeDataset

    kw = {"patch_size": patch, "batch_size": 2, "spacing": (1.5, 1.5, 2.0), "intensity": "zscore",
          "pos_fraction": 0.5}
    if setting == "all in memory":
        kw["cache_bytes"] = 2**40
    else:
        kw["cache_bytes"] = budget
    if setting == "disk cache":
        kw["cache_dir"] = cache_dir
    ds = VolumeDataset(root, **kw)
    ds.steps_per_epoch = -(-len(ds.cases) // 2)
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds, loads = [], []
    for epoch in range(epochs):
        if epoch:
            ds.on_epoch_end()
        before = ds.loads
        t0 = time.perf_counter()
        for k in range(len(ds)):
            x, _ = ds[k]
            assert x.shape[1:4] == (patch,) * 3
        seconds.append(time.perf_counter() - t0)
        loads.append(ds.loads - before)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "loads": loads, "peak_rss_mb": peak, "rss_after_import_mb": rss_start,
            "cached_bytes": ds.cached_bytes,
            "disk_cache_bytes": ds.disk_cache.nbytes if ds.disk_cache is not None else 0}


def run(cases=12, side=192, depth=96, patch=64, epochs=4, out=None):
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "data")
        t0 = time.perf_counter()
        write_cases(root, cases, side, depth)
        write_seconds = time.perf_counter() - t0
        from keras_medseg.data import VolumeDataset

        one = VolumeDataset(root, patch_size=patch, spacing=(1.5, 1.5, 2.0), intensity="zscore")
        image, labels, _, _ = one.load_case(0)
        case_bytes = image.nbytes + labels.nbytes
        data_bytes = case_bytes * cases
        budget = data_bytes // 3
        results = {}
        for setting in SETTINGS:  # each in a fresh process: its own peak RSS, a cold start
            cmd = [sys.executable, os.path.abspath(__file__), "--measure", setting, "--root", root, "--epochs",
                   str(epochs), "--patch", str(patch), "--cache-dir", os.path.join(tmp, "cache"), "--budget",
                   str(budget)]
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode:
                raise RuntimeError(f"{setting} failed: {r.stderr[-2000:]}")
            results[setting] = json.loads(r.stdout.strip().splitlines()[-1])
    later = {s: results[s]["seconds"][1:] for s in SETTINGS}
    disk = results["disk cache"]
    first_over_later = disk["seconds"][0] / min(later["disk cache"])
    return {"cases": cases, "shape": [side, side, depth], "patch": patch, "epochs": epochs,
            "case_mb": case_bytes / 2**20, "data_set_mb": data_bytes / 2**20, "memory_budget_mb": budget / 2**20,
            "write_seconds": write_seconds, "settings": results,
            "later_min": {s: min(v) for s, v in later.items()},
            "later_median": {s: statistics.median(v) for s, v in later.items()},
            "disk_first_over_later": first_over_later,
            "goal_first_over_later": 5.0, "met_speed": first_over_later >= 5.0,
            "disk_peak_rss_mb": disk["peak_rss_mb"],
            "goal_peak_rss_mb": budget / 2**20 + 1024, "met_rss": disk["peak_rss_mb"] <= budget / 2**20 + 1024}


def markdown(res):
    rows = []
    floor = res["later_min"]["all in memory"]
    for s in SETTINGS:
        r = res["settings"][s]
        rows.append([s, f"{r['seconds'][0]:.2f}", f"{res['later_min'][s]:.2f} / {res['later_median'][s]:.2f}",
                     f"{r['seconds'][0] / res['later_min'][s]:.1f}x",
                     f"{res['later_min'][s] / floor:.1f}x", " / ".join(str(v) for v in r["loads"]),
                     f"{r['peak_rss_mb']:.0f}"])
    table = markdown_table(["setting", "epoch 1 (s)", "later epochs min / median (s)", "epoch 1 / later (min)",
                            "later vs all in memory", "case reads per epoch", "peak RSS (MB)"], rows)
    return (f"### Disk cache: a data set 3x the memory cache ({res['cases']} cases of "
            f"{'x'.join(map(str, res['shape']))} voxels, {res['case_mb']:.1f} MB each preprocessed, memory cache "
            f"{res['memory_budget_mb']:.0f} MB of {res['data_set_mb']:.0f} MB)\n\n{table}\n\n"
            f"Each setting in its own process; epochs of {res['patch']}^3 patches, batch 2, no augmentation; "
            f"gzipped NIfTI resampled from 1 x 1 x 2 mm to 1.5 x 1.5 x 2 mm, z-score. Goals (issue 34): disk cache "
            f"later epochs >= 5x faster than its first: **{res['disk_first_over_later']:.1f}x** "
            f"({'met' if res['met_speed'] else 'NOT met'}); peak RSS <= memory budget + 1 GB "
            f"({res['goal_peak_rss_mb']:.0f} MB): **{res['disk_peak_rss_mb']:.0f} MB** "
            f"({'met' if res['met_rss'] else 'NOT met'}). Load average before/after: {res.get('load', '')}.")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--side", type=int, default=192)
    p.add_argument("--depth", type=int, default=96)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4, help="epochs per setting (default 4: 1 cold + 3 later)")
    p.add_argument("--no-write", action="store_true", help="print only (no JSON or README block)")
    p.add_argument("--measure", choices=SETTINGS, help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.root, args.measure, args.epochs, args.patch, args.cache_dir, args.budget)))
        return 0
    load_before = os.getloadavg()[0]
    res = run(args.cases, args.side, args.depth, args.patch, args.epochs)
    res["load"] = f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"
    text = markdown(res)
    if not args.no_write:
        write_results("volume_cache", res, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
