"""Reproduce the lectures' results with keras-medseg and regenerate `benchmarks/RESULTS.md`.

    python benchmarks/run_all.py --preset cpu        # everything, about 30 min on 2 CPU cores
    python benchmarks/run_all.py --preset paper      # the papers' sizes (meant for a GPU)
    python benchmarks/run_all.py --preset cpu --only qtips   # rerun one section, keep the others
    python benchmarks/run_all.py --preset smoke --results-dir /tmp/smoke   # seconds, for CI

Sections (each one a script in this folder that also runs on its own):

1. `qtips.py`        - IMEXnet vs ResNet on the Q-tips set (Haber, Lensink, Ruthotto, Treister,
                       "Semi-Implicit Convolutional Neural Networks").
2. `lse_vs_itk.py`   - the `lse` model against ITK's geodesic active contour.
3. `lse_lsn_unet.py` - LSE vs LSN vs UNet, 5-fold CV on the MNI152 template.
4. `kernels_unet.py` - kernel identification of the UNet trained in 3.
   (2-4: J. Actor, "Identification of Kernels in a Convolutional Neural Network".)

Every number on the results page comes from the JSON files this run writes
(`<results-dir>/<name>.json`); the page is rebuilt from those files, so a
section that was not rerun (`--only`) keeps the numbers, command and date of
the run that produced it. A section that fails is reported on the page with
its error, the other sections still run, and the exit status is 1.

With the default results directory (`benchmarks/results`) the run also
updates the per-benchmark blocks of `benchmarks/README.md` and the headline
block of the top-level `README.md`; with `--results-dir` elsewhere (or the
smoke preset) nothing in the repository is touched.
"""

import argparse
import datetime
import importlib
import inspect
import json
import os
import platform
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import README as BENCH_README  # noqa: E402
from _common import RESULTS_DIR, machine_info, markdown_table, replace_block, write_json, write_results  # noqa: E402

REPO = os.path.dirname(HERE)
TOP_README = os.path.join(REPO, "README.md")
PRESETS = ("smoke", "cpu", "paper")

#: The lectures the sections reproduce, by authors and title.
IMEXNET_TALK = 'Haber, Lensink, Ruthotto, Treister, "Semi-Implicit Convolutional Neural Networks" (CSE19)'
KERNELS_TALK = 'J. Actor, "Identification of Kernels in a Convolutional Neural Network"'
# (module name, section title, seed); order matters: kernels_unet reads the UNet of lse_lsn_unet.
SECTIONS = (
    ("qtips", "IMEXnet vs ResNet on Q-tips", f"{IMEXNET_TALK} (Q-tips table)"),
    ("lse_vs_itk", "Level-set equation (`lse`) vs ITK's geodesic active contour",
     f'{KERNELS_TALK} ("our LSE agrees with ITK-SNAP")'),
    ("lse_lsn_unet", "LSE vs LSN vs UNet, 5-fold cross-validation", f"{KERNELS_TALK} (per-fold DSC table)"),
    ("kernels_unet", "Kernel identification of the trained UNet",
     f"{KERNELS_TALK} (kernel clustering and SVD figures)"),
)
NAMES = tuple(name for name, _, _ in SECTIONS)


def _versions():
    """Versions of the packages the benchmarks depend on (missing ones are skipped)."""
    from importlib import metadata

    out = {}
    for dist in ("keras-medseg", "keras", "tensorflow", "jax", "numpy", "scipy", "scikit-learn",
                 "scikit-image", "itk", "nilearn", "nibabel", "pydicom", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus():
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    return []


def _load_module(name):
    return importlib.import_module(name)


def _run_section(name, preset, results_dir, progress):
    """Run one benchmark module; returns its result dict (raises on failure)."""
    module = _load_module(name)
    if preset not in module.PRESETS:
        raise ValueError(f"{name}.py has no preset {preset!r}; it has {sorted(module.PRESETS)}")
    kwargs = dict(out_dir=os.path.join(results_dir, name), progress=progress)
    if "model_path" in inspect.signature(module.run).parameters:
        # kernels_unet analyses the UNet that lse_lsn_unet trained in this results directory.
        upstream = _read_json(os.path.join(results_dir, "lse_lsn_unet.json"))
        if upstream and upstream.get("results", {}).get("unet_model"):
            kwargs["model_path"] = os.path.join(results_dir, "lse_lsn_unet", upstream["results"]["unet_model"])
    return module.run(preset, **kwargs)


def _read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _fmt_seconds(seconds):
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def _section_markdown(name, title, seed, payload, fig_prefix):
    """The RESULTS.md section of one benchmark, from its JSON payload (or its error)."""
    lines = [f"## {title}", "", f"_Reproduces {seed}; script `benchmarks/{name}.py`._", ""]
    if payload is None:
        lines.append(f"**Not run yet.** Run `python benchmarks/run_all.py --only {name}`.")
        return "\n".join(lines)
    if "error" in payload:
        lines += [f"**This section failed** in the run of {payload['machine']['date']} "
                  f"(`{payload['machine']['command']}`):", "", "```", payload["error"].strip(), "```"]
        return "\n".join(lines)
    module = _load_module(name)
    result = payload["results"]
    info = payload["machine"]
    lines.append(module.markdown(result, fig_prefix=fig_prefix).strip())
    lines += ["", f"_Preset `{result.get('preset', '?')}`, {_fmt_seconds(result.get('seconds', 0))} wall time; "
              f"produced by `{info['command']}` on {info['date']}; raw numbers in `{fig_prefix[:-1]}.json`._"]
    return "\n".join(lines)


def _headlines(payloads):
    """One line per section for the top of RESULTS.md and the README (from the modules' `headline`)."""
    out = []
    for name, title, _ in SECTIONS:
        payload = payloads.get(name)
        if not payload or "error" in payload:
            status = "failed" if payload else "not run"
            out.append(f"- **{title}**: {status} (see RESULTS.md).")
            continue
        module = _load_module(name)
        text = module.headline(payload["results"]) if hasattr(module, "headline") else ""
        out.append(f"- **{title}** (`{payload['results'].get('preset', '?')}` preset): {text}")
    return out


def build_results_page(results_dir, page_path, run_info):
    """Rebuild RESULTS.md from the JSON files in `results_dir`."""
    payloads = {name: _read_json(os.path.join(results_dir, f"{name}.json")) for name in NAMES}
    rel = os.path.relpath(results_dir, os.path.dirname(os.path.abspath(page_path)))
    machine = run_info["machine"]
    versions = run_info["versions"]
    lines = [
        "# keras-medseg: the lectures' results, reproduced",
        "",
        "This page is generated by `benchmarks/run_all.py`; do not edit it by hand. Every number below "
        "was produced by the run recorded under each section (command, date, wall time) and is stored in "
        f"the JSON files next to the figures in `{rel}/`.",
        "",
        "Regenerate with:",
        "",
        "```bash",
        "bash scripts/setup.sh",
        f".venv/bin/python benchmarks/run_all.py --preset {run_info['preset']}",
        "```",
        "",
        "## Headlines",
        "",
        *_headlines(payloads),
        "",
        "## Last run",
        "",
        markdown_table(["", ""], [
            ["command", f"`{run_info['command']}`"],
            ["sections run", ", ".join(run_info["sections"])],
            ["started", run_info["started"]],
            ["wall time", _fmt_seconds(run_info["seconds"])],
            ["machine", f"{machine['cpu_model']}, {machine['cpu_count']} CPU cores"],
            ["GPUs", ", ".join(machine["gpus"]) or "none"],
            ["Python", machine["python"]],
            ["Keras backend", machine["backend"]],
        ]),
        "",
        "Package versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "",
    ]
    for name, title, seed in SECTIONS:
        lines += [_section_markdown(name, title, seed, payloads[name], f"{rel}/{name}/"), ""]
    text = "\n".join(lines).rstrip() + "\n"
    tmp = page_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, page_path)
    return payloads


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", choices=PRESETS,
                   help="cpu (default; about 30 min on 2 cores), paper (the papers' sizes, for a GPU), "
                        "smoke (seconds; checks the pipeline, numbers meaningless)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of {','.join(NAMES)}; the other sections keep their last results")
    p.add_argument("--results-dir", default=None,
                   help="where JSON, figures and models go (default benchmarks/results; RESULTS.md goes next "
                        "to it when not the default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    only = NAMES if args.only is None else tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in NAMES]
    if unknown or not only:
        p.error(f"--only must name some of {', '.join(NAMES)}; received {args.only!r}")
    default_dir = args.results_dir is None
    results_dir = os.path.abspath(args.results_dir or RESULTS_DIR)
    if args.preset == "smoke" and default_dir:
        p.error("--preset smoke needs --results-dir (it must not overwrite the real results)")
    os.makedirs(results_dir, exist_ok=True)
    page = os.path.join(HERE, "RESULTS.md") if default_dir else os.path.join(results_dir, "RESULTS.md")

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    start = time.perf_counter()
    failed = []
    for name in (n for n in NAMES if n in only):
        print(f"== {name} ({args.preset}) ==", flush=True)
        t0 = time.perf_counter()
        try:
            result = _run_section(name, args.preset, results_dir, progress=not args.no_progress)
        except Exception:  # noqa: BLE001 - reported on the page, the other sections still run
            failed.append(name)
            err = traceback.format_exc()
            print(err, file=sys.stderr, flush=True)
            write_json(os.path.join(results_dir, f"{name}.json"),
                       {"benchmark": name, "machine": machine_info(), "error": err})
            continue
        module = _load_module(name)
        markdown = module.markdown(result, fig_prefix=f"results/{name}/")
        write_results(name, result, markdown, results_dir=results_dir,
                      readme=BENCH_README if default_dir else None)
        print(f"== {name}: done in {_fmt_seconds(time.perf_counter() - t0)} ==", flush=True)

    info = machine_info()
    info.update(cpu_model=_cpu_model(), gpus=_gpus())
    run_info = {
        "preset": args.preset,
        "command": "python benchmarks/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sections": [n for n in NAMES if n in only],
        "failed": failed,
        "started": started,
        "seconds": time.perf_counter() - start,
        "machine": info,
        "versions": _versions(),
    }
    write_json(os.path.join(results_dir, "run_all.json"), run_info)
    payloads = build_results_page(results_dir, page, run_info)
    if default_dir:
        body = ("Headline numbers of the last `benchmarks/run_all.py` run "
                f"(`--preset {args.preset}`, {info['cpu_model']}, {info['cpu_count']} CPU cores, "
                f"{run_info['started']}); details, figures and the lectures' numbers in "
                "[benchmarks/RESULTS.md](benchmarks/RESULTS.md):\n\n" + "\n".join(_headlines(payloads)))
        replace_block(TOP_README, "results-headline", body)
    print(f"wrote {page} ({_fmt_seconds(run_info['seconds'])}"
          + (f"; FAILED: {', '.join(failed)})" if failed else ")"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
