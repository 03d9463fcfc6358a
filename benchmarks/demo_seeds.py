"""`keras-medseg demo` with its default settings for 3 seeds: does IMEXnet stay >= 0.1 mean IoU ahead?

    python benchmarks/demo_seeds.py                  # --preset cpu: seeds 0, 1, 2, one process per seed
    python benchmarks/demo_seeds.py --preset smoke   # seconds; numbers meaningless (CI)

Each seed runs `keras_medseg.training.demo.qtips_demo` (exactly what
`keras-medseg demo --seed S` runs: data, weights and shuffling seeded by `S`)
in its own process, all seeds at once (`--sequential` runs them one after
the other). The table gives the mean IoU of both nets on the 3 rod classes,
the gap, and the wall and process CPU time of each demo; on a shared machine
the wall time is inflated by the load, so the CPU time (all threads) divided
by the number of cores is the better estimate of the time on idle cores.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import RESULTS_DIR, benchmark_main, markdown_table  # noqa: E402

NAME = "demo_seeds"
PRESETS = {"cpu": {"seeds": [0, 1, 2], "fast": False}, "smoke": {"seeds": [0], "fast": True}}
TARGET_GAP = 0.1
_CHILD = (
    "import json, os, sys; from keras_medseg.training.demo import qtips_demo; "
    "r = qtips_demo(out_dir=sys.argv[1], seed=int(sys.argv[2]), fast=sys.argv[3] == '1', verbose=0); "
    "r['nets'] = {n: {k: (v if k != 'table' else {t: [float(x) for x in v[t]] for t in ('iou', 'dice')}) "
    "for k, v in d.items()} for n, d in r['nets'].items()}; "
    "json.dump(r, open(os.path.join(sys.argv[1], 'result.json'), 'w'), default=float)"
)


def run(preset="cpu", out_dir=None, progress=True, sequential=False):
    """Run the demo for every seed of `preset`; returns the per-seed results and the summary."""
    import keras

    settings = PRESETS[preset]
    out_dir = out_dir or os.path.join(RESULTS_DIR, NAME)
    start = time.perf_counter()
    procs = []
    for seed in settings["seeds"]:
        folder = os.path.join(out_dir, f"seed{seed}")
        os.makedirs(folder, exist_ok=True)
        cmd = [sys.executable, "-c", _CHILD, folder, str(seed), "1" if settings["fast"] else "0"]
        proc = subprocess.Popen(cmd, stdout=None if progress else subprocess.DEVNULL)
        procs.append((seed, folder, proc))
        if sequential:
            proc.wait()
    seeds = []
    for seed, folder, proc in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"The demo for seed {seed} failed (exit code {proc.returncode}).")
        with open(os.path.join(folder, "result.json")) as f:
            r = json.load(f)
        seeds.append({"seed": seed, "gap": r["gap"], "sentence": r["sentence"], "settings": r["settings"],
                      "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"],
                      "nets": {n: {k: d[k] for k in ("mean_iou_rods", "params", "seconds", "cpu_seconds")}
                               | {"iou": d["table"]["iou"]} for n, d in r["nets"].items()}})
    return {"preset": preset, "backend": keras.backend.backend(), "seeds": seeds, "target_gap": TARGET_GAP,
            "all_met": all(s["gap"] >= TARGET_GAP for s in seeds), "parallel": not sequential,
            "load_average": list(os.getloadavg()), "cpu_count": os.cpu_count(),
            "seconds": float(time.perf_counter() - start)}


def markdown(result, fig_prefix=""):
    """The README block: one row per seed."""
    header = ["seed", "IMEXnet mean IoU (rods)", "ResNet mean IoU (rods)", "gap", ">= 0.1",
              "wall time (min)", "CPU time (min)", "CPU time / cores (min)"]
    rows = []
    cores = result["cpu_count"]
    for s in result["seeds"]:
        rows.append([s["seed"], s["nets"]["imexnet"]["mean_iou_rods"], s["nets"]["resnet_seg"]["mean_iou_rods"],
                     f"{s['gap']:+.3f}", "yes" if s["gap"] >= result["target_gap"] else "NO",
                     round(s["seconds"] / 60, 1), round(s["cpu_seconds"] / 60, 1),
                     round(s["cpu_seconds"] / 60 / cores, 1)])
    verdict = ("IMEXnet is ahead by at least 0.1 for every seed." if result["all_met"]
               else "The gap of 0.1 is NOT reached for every seed.")
    return "\n".join([
        f"`keras-medseg demo` default settings, {len(rows)} seeds ({result['backend']} backend, "
        f"{'seeds in parallel' if result['parallel'] else 'one seed at a time'}, load average at the end "
        f"{', '.join(f'{v:.1f}' for v in result['load_average'])} on {cores} cores). {verdict}",
        "",
        markdown_table(header, rows),
        "",
        "CPU time is the process time of all threads of one demo; divided by the cores it estimates the "
        "time on idle cores (the wall time here includes waiting for the other processes on the machine).",
    ])


def main(argv=None):
    return benchmark_main(sys.modules[__name__], argv, extra_arguments=[
        (("--sequential",), {"action": "store_true", "help": "one seed at a time"})])


if __name__ == "__main__":
    sys.exit(main())
