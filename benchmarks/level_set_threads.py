"""`lse` on TensorFlow per process: the default thread pools against an inter-op or an intra-op pool of one thread.

Issue 32's speed row (a batch of 16 to convergence at or below ITK's time) is met on JAX and not on
TensorFlow, and TensorFlow's times vary from process to process while they are steady within one. This
script starts fresh processes in turn (interleaved), each building the zoo `lse` for 256 x 256 images
(the coin of `benchmarks/level_set_speed.py`, 200 steps, no tolerance) and timing `model.predict` of the
windowed and the dense (`front_window=False`) evolution on one image and on a batch of 16 (min and
median of 5 calls after a first), with TensorFlow's default thread pools, with
`TF_NUM_INTEROP_THREADS=1` or with `TF_NUM_INTRAOP_THREADS=1`; JAX in a process of its own is the reference. It writes
`benchmarks/results/level_set_threads.json` and its block in `benchmarks/README.md`.

    python benchmarks/level_set_threads.py [--processes 3]
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = {"tensorflow, default pools": {"KERAS_BACKEND": "tensorflow"},
            "tensorflow, inter-op pool of 1": {"KERAS_BACKEND": "tensorflow", "TF_NUM_INTEROP_THREADS": "1"},
            "tensorflow, intra-op pool of 1": {"KERAS_BACKEND": "tensorflow", "TF_NUM_INTRAOP_THREADS": "1"},
            "jax": {"KERAS_BACKEND": "jax"}}
CASES = [(1, "window"), (1, "dense"), (16, "window"), (16, "dense")]


def child():
    """One process: the four timings of `CASES` as JSON on the last line of stdout."""
    import numpy as np
    from skimage import data

    sys.path.insert(0, HERE)
    import level_set_speed

    img = data.coins()[:256, :256].astype("float32") / 255.0
    edge, window, dense = level_set_speed.lse_solver((256, 256), 200, None)
    yy, xx = np.mgrid[:256, :256]
    u0 = (np.sqrt((yy - 60.0) ** 2 + (xx - 60.0) ** 2) - 8.0).astype("float32")[None, ..., None]
    g = np.asarray(edge.predict([img[None, ..., None], u0], verbose=0))
    out = {}
    for n, name in CASES:
        model = window if name == "window" else dense
        gb, ub = np.repeat(g, n, 0), np.repeat(u0, n, 0)
        model.predict([gb, ub], verbose=0)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            model.predict([gb, ub], verbose=0)
            times.append(time.perf_counter() - t)
        out[f"batch {n} {name}"] = {"min": min(times), "median": float(np.median(times))}
    print("RESULT " + json.dumps(out))


def run(processes):
    rows = []
    for round_ in range(processes):
        for setting, env in SETTINGS.items():
            if setting == "jax" and round_:
                continue  # JAX's times do not vary by process here: one is the reference
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"],
                                  env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env), capture_output=True,
                                  text=True, timeout=900)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                raise RuntimeError(f"{setting}: the child failed:\n{proc.stderr[-2000:]}")
            rows.append({"setting": setting, "round": round_, "times": json.loads(lines[-1][7:]),
                         "load": os.getloadavg()[0]})
            print(setting, round_, {k: round(v["min"], 3) for k, v in rows[-1]["times"].items()}, flush=True)
    return rows


def markdown(rows):
    from _common import markdown_table

    keys = [f"batch {n} {name}" for n, name in CASES]
    table = [[r["setting"], str(r["round"] + 1)] + [f"{r['times'][k]['min']:.3f} / {r['times'][k]['median']:.3f}"
                                                    for k in keys] + [f"{r['load']:.1f}"] for r in rows]
    loads = [r["load"] for r in rows]
    return ("### `lse` on TensorFlow per process: default thread pools against an inter-op or an intra-op pool of one "
            "thread "
            "(issue 32)\n\n"
            + markdown_table(["setting", "process", *(f"{k} min / median (s)" for k in keys), "load"], table)
            + "\n\nEach row a fresh process (settings interleaved): the zoo `lse` on the 256 x 256 coin of "
            "`level_set_speed.py`, 200 steps, `model.predict` of the windowed and the dense (`front_window=False`) "
            "evolution, min / median of 5 calls after a first; 'load' the 1-minute load average after the process "
            f"({min(loads):.1f}-{max(loads):.1f}).")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=3, help="processes per TensorFlow setting (default 3)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child()
        return 0
    sys.path.insert(0, HERE)
    from _common import write_results

    rows = run(args.processes)
    write_results("level_set_threads", rows, markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
