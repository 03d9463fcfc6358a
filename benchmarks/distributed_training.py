"""Steps per second of data-parallel training with 1 and 2 processes on this machine, per backend; on paper, GPUs.

    python benchmarks/distributed_training.py                        # cpu preset, the three backends in turn
    python benchmarks/distributed_training.py --backends torch       # some backends
    python benchmarks/distributed_training.py --preset smoke         # seconds, no README update

Each backend runs in its own driver process (Keras fixes the backend per
process). Every process computes on one thread (OMP, TensorFlow and XLA
thread pools set to 1), so the 2 processes have a core each as GPUs have a
device each. The driver times `fit` of a small 2D zoo UNet (global batch
`batch`) in itself (1 process) and in a run of 2 processes started by
`keras_medseg.training.distribute.launch`, interleaved over `repeats`; min
and median steps/s after `warmup` steps. The limit of 2 processes is twice
the 1-process rate (half the batch each, no communication): the gap shows
what the engine's all-reduce and synchronisation cost on CPUs (the machine
may be shared: the load average is recorded).

On paper (no multi-GPU machine was lent): the gradient of the zoo's 3D UNet
(`zoo.build("unet", spatial_dims=3)`, its defaults) is all-reduced every step;
a ring all-reduce moves `2 (W - 1) / W` times its bytes through each GPU's
link (Sergeev & Del Balso, "Horovod: fast and easy distributed deep learning
in TensorFlow", 2018), so its time is that over the link's bandwidth
(assumed: per direction, achieved ~= nominal; latency ignored).
"""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from _common import markdown_table, write_results  # noqa: E402

NAME = "distributed"
PRESETS = {
    "smoke": {"size": 32, "filters": 4, "batch": 4, "steps": 4, "warmup": 2, "repeats": 1},
    "cpu": {"size": 64, "filters": 8, "batch": 8, "steps": 20, "warmup": 3, "repeats": 2},
}
BACKENDS = ("tensorflow", "jax", "torch")
LINKS = {  # bytes per second, one direction (nominal)
    "NVLink 4 (H100 SXM, 450 GB/s)": 450e9,
    "PCIe 4.0 x16 (~25 GB/s)": 25e9,
    "InfiniBand / Ethernet 100 Gb/s (12.5 GB/s)": 12.5e9,
    "Ethernet 10 Gb/s (1.25 GB/s)": 1.25e9,
}


def _driver(backend, preset):
    """In a process with KERAS_BACKEND=backend: interleave 1 and 2 processes; print JSON."""
    from _distributed_job import timed_fit

    from keras_medseg import zoo
    from keras_medseg.training.distribute import launch

    settings = PRESETS[preset]
    one, two = [], []
    for _ in range(settings["repeats"]):
        one.append(timed_fit(settings))
        two.append(launch(timed_fit, settings, processes=2))
    unet3d = zoo.build("unet", spatial_dims=3, num_classes=2).count_params()
    print(json.dumps({"one": one, "two": two, "unet3d_params": int(unet3d), "load": os.getloadavg()}))


def run(preset="cpu", backends=BACKENDS):
    results = {}
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1",
                   TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
                   XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--driver", backend, preset], env=env,
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode:
            raise RuntimeError(f"{backend} driver failed:\n{proc.stderr[-3000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        rate = {k: [r["steps_per_s"] for r in out[k]] for k in ("one", "two")}
        results[backend] = {
            "one_min": min(rate["one"]), "one_median": float(np.median(rate["one"])),
            "two_min": min(rate["two"]), "two_median": float(np.median(rate["two"])),
            "ratio_median": float(np.median(rate["two"]) / np.median(rate["one"])), "limit_ratio": 2.0,
            "gradient_floats": out["one"][0]["gradient_floats"], "unet3d_params": out["unet3d_params"],
            "load_average": out["load"], "seconds": time.perf_counter() - started}
    params = next(iter(results.values()))["unet3d_params"]
    paper = []
    for workers in (2, 8):
        moved = 2 * (workers - 1) / workers * params * 4
        paper.append({"gpus": workers, "bytes_per_gpu": moved,
                      "ms": {name: 1e3 * moved / bw for name, bw in LINKS.items()}})
    return {"preset": preset, "settings": PRESETS[preset], "backends": results, "paper": paper,
            "unet3d_params": params}


def markdown(result):
    rows = [[b, f"{r['one_median']:.2f} ({r['one_min']:.2f})", f"{r['two_median']:.2f} ({r['two_min']:.2f})",
             f"{r['ratio_median']:.2f}", f"{r['limit_ratio']:.2f}", " / ".join(f"{v:.1f}" for v in r["load_average"])]
            for b, r in result["backends"].items()]
    s = result["settings"]
    table = markdown_table(["backend", "1 process: steps/s median (min)", "2 processes: steps/s median (min)",
                            "ratio 2/1", "limit (no communication)", "load average 1/5/15 min"], rows)
    params = result["unet3d_params"]
    paper = markdown_table(["GPUs (ring)", "MB through each GPU per step"] + list(LINKS),
                           [[p["gpus"], f"{p['bytes_per_gpu'] / 1e6:.1f}"] + [f"{v:.2f} ms" for v in p["ms"].values()]
                            for p in result["paper"]])
    return (f"2D UNet (depth 2, {s['filters']} filters, {s['size']}x{s['size']}), global batch {s['batch']}, "
            f"{s['steps']} timed steps after {s['warmup']}, {s['repeats']} interleaved repeats; "
            f"one thread per process, "
            f"1 process vs 2 (the limit of 2 is twice the rate of 1; the gap is the engine's all-reduce and "
            f"synchronisation on CPU; shared machine, load average in the table).\n\n{table}\n\n"
            f"On paper: the zoo's 3D UNet (defaults) has {params:,} parameters, {params * 4 / 1e6:.1f} MB of "
            f"float32 gradient all-reduced per step; ring all-reduce time per step over each link (nominal "
            f"one-direction bandwidth, latency ignored):\n\n{paper}")


def main(argv=None):
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--driver"]:
        _driver(argv[1], argv[2])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    args = p.parse_args(argv)
    result = run(args.preset, args.backends)
    if args.preset != "smoke":
        write_results(NAME, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
