"""Shared helpers for benchmark scripts: machine facts, JSON output, README tables.

Each benchmark writes `benchmarks/results/<name>.json` and replaces its own
block between `<!-- BEGIN <name> -->` and `<!-- END <name> -->` in
`benchmarks/README.md` (the block is appended if missing), so numbers in the
README always come from the last run of the script.
"""

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


def markdown_table(header, rows):
    """A GitHub markdown table from a header list and a list of row lists."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name, data, markdown):
    """Write `results/<name>.json` and update the `<name>` block of benchmarks/README.md."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    info = machine_info()
    payload = {"benchmark": name, "machine": info, "results": data}
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=float)
    os.replace(tmp, path)

    block = (
        f"<!-- BEGIN {name} -->\n{markdown.strip()}\n\n"
        f"_Produced by `{info['command']}` on {info['date']}, {info['cpu_count']} CPU cores, "
        f"Keras {info['keras']} ({info['backend']}); raw numbers in `benchmarks/results/{name}.json`._\n"
        f"<!-- END {name} -->"
    )
    text = open(README).read() if os.path.exists(README) else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = README + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, README)
    return path
