"""Training speed of the zoo GANs: images/s of one `fit()` training step.

For `cgan`, `pix2pix` and `cyclegan` (zoo defaults except the image size) at
64x64 and 128x128, batch size `--batch-size`: one warm-up step (graph tracing,
not timed), then `--steps` timed `train_on_batch` calls. A step updates every
sub-network once (cgan/pix2pix: one generator + one discriminator; cyclegan:
two of each). Images/s = batch size / median step time.

Usage:
    python benchmarks/gan_speed.py [--steps 3] [--batch-size 4] [--sizes 64 128]

Writes `benchmarks/results/gan_speed.json` and the `gan_speed` block of
`benchmarks/README.md` (`gan_speed_jax` with `KERAS_BACKEND=jax`). No GPU was lent to the session that ran it; the
CPU numbers come from a 2-core machine shared with other jobs, so they are a
lower bound.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from _common import markdown_table, write_results  # noqa: E402


def _batch(name, size, batch_size, model):
    rng = np.random.default_rng(0)
    if name == "cgan":
        x = rng.uniform(-1, 1, size=(batch_size, size, size, 1)).astype("float32")
        y = rng.integers(0, model.num_classes, size=(batch_size,)).astype("int32")
        return x, y
    a = rng.uniform(-1, 1, size=(batch_size, size, size, 1)).astype("float32")
    b = rng.uniform(-1, 1, size=(batch_size, size, size, 1)).astype("float32")
    return a, b


def measure(name, size, batch_size, steps):
    import keras

    from keras_medseg import zoo

    kwargs = {"image_size": size} if name == "cgan" else {}
    model = zoo.build(name, **kwargs)
    x, y = _batch(name, size, batch_size, model)
    t0 = time.perf_counter()
    model.train_on_batch(x, y)
    warmup = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t0)
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    keras.backend.clear_session()
    step = float(np.median(times))
    return {"model": name, "size": size, "batch_size": batch_size, "step_s": step,
            "images_per_s": batch_size / step, "warmup_s": warmup, "params": params}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--models", nargs="+", default=["cgan", "pix2pix", "cyclegan"])
    args = parser.parse_args(argv)
    rows, data = [], []
    for name in args.models:
        for size in args.sizes:
            r = measure(name, size, args.batch_size, args.steps)
            data.append(r)
            rows.append([name, f"{size}x{size}", r["batch_size"], f"{r['params']:,}", r["step_s"],
                         r["images_per_s"], r["warmup_s"]])
            print(rows[-1], flush=True)
    table = markdown_table(
        ["model (zoo defaults)", "image", "batch", "trainable params", "s / step", "images/s (CPU)",
         "first step incl. tracing (s)"],
        rows,
    )
    note = (f"\n\nOne training step = one update of every sub-network (`fit()` step, graph mode); "
            f"median of {args.steps} steps after one warm-up step. CPU only (no GPU was available to "
            "this run), 2 cores shared with other jobs: treat as lower bounds.")
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        note = note.replace("graph mode", f"{backend}: one jitted pure step")
    write_results("gan_speed" if backend == "tensorflow" else f"gan_speed_{backend}", data, table + note)


if __name__ == "__main__":
    main()
