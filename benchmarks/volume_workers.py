"""Patches per second of `train_volumes`' training data (VolumeDataset + the default augmentation) with 1 and 2
workers, through Keras' own PyDataset path, on TensorFlow, JAX and torch.

    python benchmarks/volume_workers.py                       # the three backends, each in its own process
    python benchmarks/volume_workers.py --backends torch --repeats 3

Every backend process writes the same synthetic NIfTI cases (nibabel; different shapes, one bright ball each),
builds one `VolumeDataset` per setting (patch 32^3, batch 2, `default_augmentation(3)`, a disk cache) and
iterates whole epochs through `keras`' `PyDatasetAdapter` (what `fit` does: `workers=1` reads in the training
thread, `workers=2` through Keras' `OrderedEnqueuer`). Settings: 1 worker; 2 worker threads; on torch also 2
worker processes (`use_multiprocessing=True`; on TensorFlow and JAX a forked worker hung in
`tests`-sized runs, see `keras_medseg.training.volumes.default_multiprocessing`, so they are not run). The first
epoch of each setting (compiling the warp, filling the cache) is left out; then the settings run interleaved,
one epoch each per repeat; min and median patches/s are reported with the load average (the machine may be
shared). Then the same datasets feed `fit` of a small 3D UNet (8 filters, depth 2; one epoch per setting per
repeat, interleaved, the first epoch left out): whether the workers overlap the loading with the training
step. `--threads N` (default 1) sets the backend's thread pools (torch intra-op threads, TensorFlow intra- and
inter-op threads, XLA's CPU threading for JAX) so that a worker is one thread of compute, as the issue asks;
`--threads 0` keeps the defaults (what `keras-medseg train` gets; on a shared, oversubscribed machine torch's
two OpenMP threads in the training thread ran the augmentation ~10x slower than one thread, which makes the
defaults a measure of contention, not of workers). Writes `benchmarks/results/volume_workers.json`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def write_cases(root, n=6, seed=0):
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i in range(n):
        shape = tuple(int(s) for s in rng.integers(56, 72, 3))
        grid = np.indices(shape)
        centre = [rng.integers(16, s - 16) for s in shape]
        ball = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= 100
        image = rng.normal(100, 10, size=shape) + 80 * ball
        nib.save(nib.Nifti1Image(image.astype("float32"), np.eye(4)), os.path.join(root, "images", f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image(ball.astype("uint8"), np.eye(4)), os.path.join(root, "labels", f"c{i}.nii.gz"))
    return root


def set_threads(threads):
    """One compute thread per worker (0: the backend's defaults); call before the backend is imported."""
    if not threads:
        return
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "jax":
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   f"intra_op_parallelism_threads={threads}").strip()
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def run_backend(repeats, steps, patch, threads):
    set_threads(threads)
    import keras
    import numpy as np
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from keras_medseg.data.scans.volume_dataset import VolumeDataset
    from keras_medseg.training import default_augmentation

    backend = keras.backend.backend()
    load_start = os.getloadavg()
    root = write_cases(tempfile.mkdtemp(prefix="volume_workers_"))
    settings = {"1 worker": {"workers": 1}, "2 threads": {"workers": 2, "use_multiprocessing": False}}
    if backend == "torch":
        settings["2 processes"] = {"workers": 2, "use_multiprocessing": True}

    def epoch(adapter):
        adapter.on_epoch_begin()
        n = 0
        for batch in adapter.get_numpy_iterator():
            n += batch[0].shape[0]
        adapter.on_epoch_end()
        return n

    adapters, first = {}, {}
    for name, kw in settings.items():
        ds = VolumeDataset(root, patch_size=patch, batch_size=2, steps_per_epoch=steps, augment=default_augmentation(3),
                           cache_dir=os.path.join(root, "cache_" + name.replace(" ", "_")), **kw)
        adapters[name] = PyDatasetAdapter(ds)
        t = time.perf_counter()
        epoch(adapters[name])
        first[name] = time.perf_counter() - t
    rates = {name: [] for name in settings}
    for _ in range(repeats):
        for name, adapter in adapters.items():
            t = time.perf_counter()
            n = epoch(adapter)
            rates[name].append(n / (time.perf_counter() - t))
    # the same data feeding `fit` of a small 3D UNet: whether the workers overlap loading with the step
    from keras_medseg import zoo

    fit_rates, fit_first = {name: [] for name in settings}, {}
    models = {}
    for name in settings:
        models[name] = zoo.build("unet", spatial_dims=3, num_classes=2, in_channels=1, filters=8, depth=2)
        t = time.perf_counter()
        models[name].fit(adapters[name].py_dataset, epochs=1, verbose=0)
        fit_first[name] = time.perf_counter() - t
    for _ in range(repeats):
        for name in settings:
            t = time.perf_counter()
            models[name].fit(adapters[name].py_dataset, epochs=1, verbose=0)
            fit_rates[name].append(steps * 2 / (time.perf_counter() - t))
    out = {"backend": backend, "threads": threads, "keras": keras.__version__, "cpu_count": os.cpu_count(),
           "patch": patch,
           "steps_per_epoch": steps, "batch_size": 2, "repeats": repeats, "load_average": load_start,
           "first_epoch_s": first, "patches_per_s": {}}
    for name, r in rates.items():
        out["patches_per_s"][name] = {"min": float(np.min(r)), "median": float(np.median(r)), "all": r}
    base = out["patches_per_s"]["1 worker"]["median"]
    out["speedup_vs_1_worker"] = {name: v["median"] / base for name, v in out["patches_per_s"].items()}
    out["fit_first_epoch_s"] = fit_first
    out["fit_patches_per_s"] = {name: {"min": float(np.min(r)), "median": float(np.median(r)), "all": r}
                                for name, r in fit_rates.items()}
    base = out["fit_patches_per_s"]["1 worker"]["median"]
    out["fit_speedup_vs_1_worker"] = {name: v["median"] / base for name, v in out["fit_patches_per_s"].items()}
    out["load_average_end"] = os.getloadavg()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="backend compute threads (default 1; 0: defaults)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_backend(args.repeats, args.steps, args.patch, args.threads)))
        return 0
    results = []
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="1")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--repeats", str(args.repeats),
                               "--steps", str(args.steps), "--patch", str(args.patch), "--threads",
                               str(args.threads)], env=env,
                              capture_output=True, text=True, timeout=1200)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not lines:
            results.append({"backend": backend, "error": (proc.stderr or proc.stdout)[-2000:]})
            continue
        results.append(json.loads(lines[-1][len("RESULT "):]))
        r = results[-1]
        print(backend, "loading", {k: round(v["median"], 2) for k, v in r["patches_per_s"].items()},
              {k: round(v, 2) for k, v in r["speedup_vs_1_worker"].items()}, "| fit",
              {k: round(v["median"], 2) for k, v in r["fit_patches_per_s"].items()},
              {k: round(v, 2) for k, v in r["fit_speedup_vs_1_worker"].items()}, "| load", r["load_average"],
              r["load_average_end"], flush=True)
    from _common import write_results

    write_results("volume_workers", results, markdown(results))
    print(markdown(results))
    return 0


def markdown(results):
    """The README block: loading and `fit` rates per backend and setting, the ratio to 1 worker, the load."""
    rows = []
    for r in results:
        if "error" in r:
            rows.append(f"| {r['backend']} | failed: {r['error'].splitlines()[-1][:120] if r['error'] else '?'} "
                        "| | | | | |")
            continue
        for name, v in r["patches_per_s"].items():
            fit = r["fit_patches_per_s"][name]
            rows.append(f"| {r['backend']} | {name} | {v['min']:.2f} / {v['median']:.2f} | "
                        f"{r['speedup_vs_1_worker'][name]:.2f}x | {fit['min']:.2f} / {fit['median']:.2f} | "
                        f"{r['fit_speedup_vs_1_worker'][name]:.2f}x | "
                        f"{r['load_average'][0]:.1f} / {r['load_average_end'][0]:.1f} |")
    first = next((r for r in results if "error" not in r), {})
    return "\n".join([
        f"### Volume data loading with 1 and 2 workers ({first.get('patch', '?')}^3 patches, batch 2, "
        f"{first.get('steps_per_epoch', '?')} steps per epoch, default augmentation, disk cache, "
        f"{first.get('threads', '?')} compute thread(s) per worker; {first.get('repeats', '?')} interleaved epochs "
        "after a first one left out)",
        "",
        "| backend | setting | loading patches/s min / median | vs 1 worker (median) | fit patches/s min / median "
        "| vs 1 worker (median) | load before / after |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Loading: whole epochs through Keras' `PyDatasetAdapter` (what `fit` does; 2 workers through its "
        "`OrderedEnqueuer`). Fit: the same data sets feeding a small 3D UNet (8 filters, depth 2). Worker processes "
        "run on torch only (a forked worker hung on TensorFlow and JAX; `train_volumes` uses threads there). Goal "
        "(issue 34): 2 workers >= 1.7x one worker on 2 cores.",
    ])


if __name__ == "__main__":
    sys.exit(main())
