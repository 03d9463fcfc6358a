"""Patches per second of `train_volumes`' training data (VolumeDataset + the default augmentation) with 1 worker,
2 worker threads and 2 worker processes, through Keras' own PyDataset path, on TensorFlow, JAX and torch.

    python benchmarks/volume_workers.py                       # the three backends, each in its own process
    python benchmarks/volume_workers.py --backends torch --repeats 3

Every backend process writes the same synthetic NIfTI cases (nibabel; different shapes, one bright ball each),
builds one `VolumeDataset` per setting (patch 32^3, batch 2, `default_augmentation(3)`, a disk cache) and
iterates whole epochs (`--steps`, default 128 batches) through `keras`' `PyDatasetAdapter` (what `fit` does:
`workers=1` reads in the training thread, `workers=2` through Keras' `OrderedEnqueuer`). Settings: 1 worker;
2 worker threads; 2 worker processes (`use_multiprocessing=True`: the dataset's own pool, started once by a
forkserver, one compute thread each; `keras_medseg.data.scans.workers`). The first epoch of each setting
(compiling the warp, filling the cache, starting the processes) is left out; then the settings run
interleaved, one epoch each per repeat. Reported per setting: min and median patches/s; the steady rate from
an epoch's first batch to its last (without the enqueuer's start and its 0.1 s drain at the epoch's end);
CPU time per patch of the training process (`process_time`) and of the worker processes (`/proc`), which
shows where the time goes when the goal is not met; the worker processes' threads; the load average (the
machine may be shared). Then the same datasets feed `fit` of a small 3D UNet (8 filters, depth 2; `--fit-steps`
batches, one epoch per setting per repeat, interleaved, the first epoch left out): whether the workers overlap
the loading with the training step. `--threads N` (default 1) sets the training process's backend thread
pools (torch intra-op threads, TensorFlow intra- and inter-op threads, XLA's CPU threading for JAX) so that a
worker is one thread of compute, as the issue asks; `--threads 0` keeps the defaults (what `keras-medseg
train` gets). Writes `benchmarks/results/volume_workers.json`."""

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
    if backend == "jax":  # PJRT_NPROC: the CPU client's thread pools (the flags alone left 1.84 cores busy)
        os.environ["PJRT_NPROC"] = str(threads)
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


def _worker_cpu(ds):
    """`(CPU seconds, threads)` of `ds`'s worker processes so far (Linux `/proc`), or `(0.0, [])`."""
    processes = getattr(ds, "_processes", None)
    if processes is None:
        return 0.0, []
    cpu, threads = 0.0, []
    for pid in processes.pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
            threads.append(len(os.listdir(f"/proc/{pid}/task")))
        except OSError:
            continue
    return cpu, threads


def run_backend(repeats, steps, patch, threads, fit_steps):
    set_threads(threads)
    import keras
    import numpy as np
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from keras_medseg.data.scans.volume_dataset import VolumeDataset
    from keras_medseg.training import default_augmentation

    backend = keras.backend.backend()
    load_start = os.getloadavg()
    root = write_cases(tempfile.mkdtemp(prefix="volume_workers_"))
    settings = {"1 worker": {"workers": 1}, "2 threads": {"workers": 2, "use_multiprocessing": False},
                "2 processes": {"workers": 2, "use_multiprocessing": True}}

    def epoch(adapter):
        """One epoch: `{wall, patches, steady (patches/s from the first batch to the last), parent and worker CPU}`."""
        ds = adapter.py_dataset
        cpu, worker = time.process_time(), _worker_cpu(ds)[0]
        t = time.perf_counter()
        adapter.on_epoch_begin()
        n, first, last = 0, None, None
        for batch in adapter.get_numpy_iterator():
            n += batch[0].shape[0]
            last = time.perf_counter()
            if first is None:
                first, n_first = last, n
        adapter.on_epoch_end()
        wall = time.perf_counter() - t
        return {"wall": wall, "patches": n, "rate": n / wall, "first_batch_s": first - t,
                "steady": (n - n_first) / max(last - first, 1e-9), "parent_cpu": time.process_time() - cpu,
                "worker_cpu": _worker_cpu(ds)[0] - worker}

    adapters, first = {}, {}
    for name, kw in settings.items():
        ds = VolumeDataset(root, patch_size=patch, batch_size=2, steps_per_epoch=steps, augment=default_augmentation(3),
                           cache_dir=os.path.join(root, "cache_" + name.replace(" ", "_")), **kw)
        adapters[name] = PyDatasetAdapter(ds)
        first[name] = epoch(adapters[name])["wall"]  # compiling the warp, filling the cache, starting processes
    runs = {name: [] for name in settings}
    for _ in range(repeats):
        for name, adapter in adapters.items():
            runs[name].append(epoch(adapter))
    # the same data feeding `fit` of a small 3D UNet: whether the workers overlap loading with the step
    from keras_medseg import zoo

    fit_rates, fit_first = {name: [] for name in settings}, {}
    models = {}
    for name in settings:
        adapters[name].py_dataset.steps_per_epoch = fit_steps
        models[name] = zoo.build("unet", spatial_dims=3, num_classes=2, in_channels=1, filters=8, depth=2)
        t = time.perf_counter()
        models[name].fit(adapters[name].py_dataset, epochs=1, verbose=0)
        fit_first[name] = time.perf_counter() - t
    for _ in range(repeats):
        for name in settings:
            t = time.perf_counter()
            models[name].fit(adapters[name].py_dataset, epochs=1, verbose=0)
            fit_rates[name].append(fit_steps * 2 / (time.perf_counter() - t))
    worker_threads = {name: _worker_cpu(a.py_dataset)[1] for name, a in adapters.items()}
    for adapter in adapters.values():
        adapter.py_dataset.close()
    out = {"backend": backend, "threads": threads, "keras": keras.__version__, "cpu_count": os.cpu_count(),
           "patch": patch, "steps_per_epoch": steps, "fit_steps_per_epoch": fit_steps, "batch_size": 2,
           "repeats": repeats, "load_average": load_start, "first_epoch_s": first, "worker_threads": worker_threads,
           "patches_per_s": {}, "steady_patches_per_s": {}, "cpu_ms_per_patch": {}, "epochs": runs}
    for name, r in runs.items():
        rates = [e["rate"] for e in r]
        out["patches_per_s"][name] = {"min": float(np.min(rates)), "median": float(np.median(rates)), "all": rates}
        out["steady_patches_per_s"][name] = float(np.median([e["steady"] for e in r]))
        n = sum(e["patches"] for e in r)
        out["cpu_ms_per_patch"][name] = {"parent": 1000 * sum(e["parent_cpu"] for e in r) / n,
                                         "workers": 1000 * sum(e["worker_cpu"] for e in r) / n}
    base = out["patches_per_s"]["1 worker"]["median"]
    out["speedup_vs_1_worker"] = {name: v["median"] / base for name, v in out["patches_per_s"].items()}
    base = out["steady_patches_per_s"]["1 worker"]
    out["steady_speedup_vs_1_worker"] = {name: v / base for name, v in out["steady_patches_per_s"].items()}
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
    p.add_argument("--steps", type=int, default=128, help="batches per loading epoch (default 128)")
    p.add_argument("--fit-steps", type=int, default=8, help="batches per fit epoch (default 8)")
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="backend compute threads (default 1; 0: defaults)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_backend(args.repeats, args.steps, args.patch, args.threads,
                                                       args.fit_steps)))
        return 0
    results = []
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="1")
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--repeats", str(args.repeats),
                               "--steps", str(args.steps), "--patch", str(args.patch), "--threads",
                               str(args.threads), "--fit-steps", str(args.fit_steps)], env=env,
                              capture_output=True, text=True, timeout=1200)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not lines:
            results.append({"backend": backend, "error": (proc.stderr or proc.stdout)[-2000:]})
            continue
        results.append(json.loads(lines[-1][len("RESULT "):]))
        r = results[-1]
        print(backend, "loading", {k: round(v["median"], 2) for k, v in r["patches_per_s"].items()},
              {k: round(v, 2) for k, v in r["speedup_vs_1_worker"].items()}, "| steady",
              {k: round(v, 2) for k, v in r["steady_speedup_vs_1_worker"].items()}, "| CPU ms/patch",
              {k: (round(v["parent"], 1), round(v["workers"], 1)) for k, v in r["cpu_ms_per_patch"].items()}, "| fit",
              {k: round(v["median"], 2) for k, v in r["fit_patches_per_s"].items()},
              {k: round(v, 2) for k, v in r["fit_speedup_vs_1_worker"].items()}, "| load", r["load_average"],
              r["load_average_end"], flush=True)
    from _common import write_results

    write_results("volume_workers", results, markdown(results))
    print(markdown(results))
    return 0


def cores_used(epochs):
    """Median over `epochs` of (training process + worker CPU seconds) / wall seconds: the cores a setting got."""
    import numpy as np

    return float(np.median([(e["parent_cpu"] + e["worker_cpu"]) / e["wall"] for e in epochs]))


def markdown(results):
    """The README block: loading and `fit` rates per backend and setting, the ratio to 1 worker, CPU per patch."""
    rows = []
    for r in results:
        if "error" in r:
            rows.append(f"| {r['backend']} | failed: {r['error'].splitlines()[-1][:120] if r['error'] else '?'} "
                        "| | | | | | | |")
            continue
        for name, v in r["patches_per_s"].items():
            fit, cpu = r["fit_patches_per_s"][name], r["cpu_ms_per_patch"][name]
            rows.append(f"| {r['backend']} | {name} | {v['min']:.1f} / {v['median']:.1f} | "
                        f"{r['speedup_vs_1_worker'][name]:.2f}x | {r['steady_speedup_vs_1_worker'][name]:.2f}x | "
                        f"{cpu['parent']:.1f} + {cpu['workers']:.1f} | {cores_used(r['epochs'][name]):.2f} | "
                        f"{fit['min']:.2f} / {fit['median']:.2f} | "
                        f"{r['fit_speedup_vs_1_worker'][name]:.2f}x | "
                        f"{r['load_average'][0]:.1f} / {r['load_average_end'][0]:.1f} |")
    first = next((r for r in results if "error" not in r), {})
    return "\n".join([
        f"### Volume data loading with 1 and 2 workers ({first.get('patch', '?')}^3 patches, batch 2, "
        f"{first.get('steps_per_epoch', '?')} steps per loading epoch, {first.get('fit_steps_per_epoch', '?')} per "
        f"fit epoch, default augmentation, disk cache, {first.get('threads', '?')} compute thread(s) per worker; "
        f"{first.get('repeats', '?')} interleaved epochs after a first one left out)",
        "",
        "| backend | setting | loading patches/s min / median | vs 1 worker | steady vs 1 worker | CPU ms per patch "
        "(training process + worker processes) | cores used | fit patches/s min / median | vs 1 worker | load before / "
        "after |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Loading: whole epochs through Keras' `PyDatasetAdapter` (what `fit` does; 2 workers through its "
        "`OrderedEnqueuer`), medians; steady: the rate from an epoch's first batch to its last, without the "
        "enqueuer's start and stop (its drain waits 0.1 s at every epoch end). 2 processes: the dataset's own "
        "pool of worker processes (forkserver, one compute thread each, started once), fed by the enqueuer's "
        "threads (two per process). CPU: `process_time` of the training process and the workers' `/proc` times, "
        "per patch; cores "
        "used: that CPU time over the wall time (2.0 = both cores; less: the setting waited, or other jobs had "
        "the cores). Fit: "
        "the same data sets feeding a small 3D UNet (8 filters, depth 2). Goal (issue 34): 2 workers >= 1.7x one "
        "worker on 2 cores.",
    ])


if __name__ == "__main__":
    sys.exit(main())
