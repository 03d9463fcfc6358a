"""Shared helpers for benchmark scripts: machine facts, JSON output, README tables.

Each benchmark writes `benchmarks/results/<name>.json` and replaces its own
block between `<!-- BEGIN <name> -->` and `<!-- END <name> -->` in
`benchmarks/README.md` (the block is appended if missing), so numbers in the
README always come from the last run of the script.
"""

import argparse
import datetime
import json
import os
import platform
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
README = os.path.join(HERE, "README.md")


def machine_info():
    import keras
    import numpy as np

    info = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "numpy": np.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    if info["backend"] == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["devices"] = [d.name for d in tf.config.list_logical_devices()]
    elif info["backend"] == "jax":
        import jax

        info["jax"] = jax.__version__
        info["devices"] = [str(d) for d in jax.devices()]
    return info


def preset_and_out_dir(presets, preset, name, out_dir=None):
    """`(presets[preset], out_dir)` with `out_dir` (default `results/<name>/`) created; a `preset` not in
    `presets` is refused in one line naming the choices."""
    if preset not in presets:
        raise ValueError(f"`preset` must be one of {sorted(presets)}. Received: preset={preset!r}")
    out_dir = os.path.join(RESULTS_DIR, name) if out_dir is None else str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    return presets[preset], out_dir


def dice(y_true, y_pred):
    """Dice of two binary masks pooled over all their pixels (1.0 when both are empty).

    Raises:
        ValueError: the masks have different sizes.
    """
    import numpy as np

    t = np.asarray(y_true).astype(bool).ravel()
    p = np.asarray(y_pred).astype(bool).ravel()
    if t.shape != p.shape:
        raise ValueError(f"`y_true` and `y_pred` must have the same size. Received: {t.size} and {p.size}")
    denom = t.sum() + p.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(t, p).sum() / denom)


def markdown_table(header, rows):
    """A GitHub markdown table from a header list and a list of row lists."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path, payload):
    """Write `payload` as JSON to `path` atomically (tmp file + os.replace)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=float)
    os.replace(tmp, path)
    return path


def replace_block(path, name, body, default=""):
    """Replace the text between `<!-- BEGIN name -->` and `<!-- END name -->` in `path`.

    The block is appended when missing; the file is rewritten atomically.
    """
    block = f"<!-- BEGIN {name} -->\n{body.strip()}\n<!-- END {name} -->"
    text = open(path).read() if os.path.exists(path) else default
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_results(name, data, markdown, results_dir=None, readme=README):
    """Write `<results_dir>/<name>.json` and update the `<name>` block of `readme`.

    `results_dir` defaults to `benchmarks/results`; `readme=None` skips the
    README block (used for throwaway runs, e.g. the smoke preset).
    """
    info = machine_info()
    payload = {"benchmark": name, "machine": info, "results": data}
    path = write_json(os.path.join(results_dir or RESULTS_DIR, f"{name}.json"), payload)
    if readme is None:
        return path

    body = (
        f"{markdown.strip()}\n\n"
        f"_Produced by `{info['command']}` on {info['date']}, {info['cpu_count']} CPU cores, "
        f"Keras {info['keras']} ({info['backend']}); raw numbers in `benchmarks/results/{name}.json`._"
    )
    replace_block(readme, name, body, default="# Benchmarks\n")
    return path


def benchmark_main(module, argv=None, extra_arguments=()):
    """The command line shared by the lecture-reproduction scripts (qtips, lse_vs_itk, ...).

    `--preset` (one of `module.PRESETS`, default cpu), `--out-dir`, `--quiet`
    and any `extra_arguments` (`(flags, add_argument kwargs)` pairs, passed on
    to `module.run` by their dest); runs `module.run`, then (except for the
    smoke preset) `write_results` with `module.markdown`, and prints the section.
    """
    p = argparse.ArgumentParser(description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(module.PRESETS), default="cpu")
    p.add_argument("--out-dir", default=None,
                   help=f"figures and models (default benchmarks/results/{module.NAME}/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    for flags, kwargs in extra_arguments:
        p.add_argument(*flags, **kwargs)
    args = vars(p.parse_args(argv))
    preset, out_dir, quiet = args.pop("preset"), args.pop("out_dir"), args.pop("quiet")
    result = module.run(preset, out_dir=out_dir, progress=not quiet, **args)
    if preset != "smoke":
        write_results(module.NAME, result, module.markdown(result, fig_prefix=f"results/{module.NAME}/"))
    print(module.markdown(result))
    return 0
