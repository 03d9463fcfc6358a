"""Benchmark the FFT implicit solve and the IMEX step against their limits, on TensorFlow and JAX.

1. `keras_medseg.ops.implicit_conv_solve` `(I + h C^T C) y = b` (one image,
   16 channels, 3x3 depthwise kernel, channels-last as the layers call it),
   compiled (`tf.function` / `jax.jit`), against the physical limit: ONE bare
   real FFT pair of the same size (`tf.signal.rfft2d` + `irfft2d`,
   `jax.numpy.fft.rfftn` + `irfftn`, channels-first, compiled the same way),
   and against scipy's sparse conjugate gradient (rtol 1e-6, one channel at a
   time, single-threaded BLAS) at h = 1 and h = 10. The solve with the
   transfer function precomputed (the layers' inference cache) is timed too.
2. One training step (forward + backward + SGD, `train_on_batch`) of an
   `IMEXBlock` (`implicit=True`) against the same block with `implicit=False`
   (the ResNet step) at widths 16 and 64, 64^2 and 128^2, batch 4.

Each backend runs in its own subprocess (`KERAS_BACKEND`); within it the
timed functions are interleaved repeat by repeat, and min and median are
reported. The table goes to `benchmarks/README.md`, raw numbers to
`benchmarks/results/implicit_solve.json`.

Goals (issue 16): solve within 1.3x of the bare FFT pair; IMEX step <= 1.5x
the ResNet step at width 16 on the faster backend and at width 64 on both.

Usage:
    python benchmarks/implicit_solve.py              # both backends (a few minutes)
    python benchmarks/implicit_solve.py --quick      # small sizes, no README update
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One BLAS thread for scipy/NumPy: on a shared machine a multi-threaded BLAS makes
# CG's vector updates tens of times slower through contention, which would flatter the FFT.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
BACKENDS = ("tensorflow", "jax")
CHANNELS = 16


def interleaved(fns, repeats, warmup=3):
    """`({name: (min_s, median_s)}, {name: samples})`: the functions run in turn `repeats` times after `warmup`."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: (float(np.min(v)), float(np.median(v))) for name, v in samples.items()}, samples


def paired(samples, a, b):
    """Median over the repeats of `a / b` within one repeat (both ran back to back under the same load)."""
    return float(np.median(np.asarray(samples[a]) / np.asarray(samples[b])))


def problem(n, seed=0):
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((1, n, n, CHANNELS)).astype("float32")
    kernel = (0.5 * rng.standard_normal((3, 3, CHANNELS))).astype("float32")
    return b, kernel


def numpy_solve(b, kernel, h):
    """Reference FFT solve in NumPy (float64): `F^-1(F(b) / (1 + h |F(c)|^2))` per channel."""
    n = b.shape[1]
    padded = np.zeros((n, n, CHANNELS))
    padded[:3, :3] = kernel
    padded = np.roll(padded, (-1, -1), axis=(0, 1))  # centre tap at the origin
    symbol = np.fft.fft2(padded, axes=(0, 1))
    return np.fft.ifft2(np.fft.fft2(b[0], axes=(0, 1)) / (1 + h * np.abs(symbol) ** 2), axes=(0, 1)).real


# ------------------------------------------------------------------------------------- worker


def worker_solves(sizes, hs, repeats):
    import keras
    from keras import ops

    from keras_medseg.ops.implicit import depthwise_inverse_symbol, implicit_conv_solve

    backend = keras.backend.backend()
    rows = []
    for n in sizes:
        b, kernel = problem(n)
        b_cf = np.ascontiguousarray(b.transpose(0, 3, 1, 2))
        inverse = {h: ops.convert_to_tensor(ops.convert_to_numpy(depthwise_inverse_symbol(
            ops.convert_to_tensor(kernel), (n, n), ops.convert_to_tensor(h)))) for h in hs}
        if backend == "tensorflow":
            import tensorflow as tf

            def compile_(f):
                return tf.function(f)

            def pair(x):
                return tf.signal.irfft2d(tf.signal.rfft2d(x), fft_length=[n, n])

            def sync(y):
                return y.numpy()
        else:
            import jax
            import jax.numpy as jnp

            compile_ = jax.jit

            def pair(x):
                return jnp.fft.irfftn(jnp.fft.rfftn(x, axes=(-2, -1)), s=(n, n), axes=(-2, -1))

            def sync(y):
                return y.block_until_ready()
        b_t, k_t, b_cf_t = (ops.convert_to_tensor(v) for v in (b, kernel, b_cf))
        pair_c = compile_(pair)
        fns = {"pair": lambda: sync(pair_c(b_cf_t))}
        solves = {}
        for h in hs:
            solves[h] = compile_(lambda x, k, h=h: implicit_conv_solve(x, k, h))
            cached = compile_(lambda x, k, i: implicit_conv_solve(x, k, 1.0, inverse_symbol=i))
            err = np.abs(ops.convert_to_numpy(solves[h](b_t, k_t))[0] - numpy_solve(b, kernel, h)).max()
            if err > 1e-4:
                raise RuntimeError(f"{backend} solve differs from the NumPy FFT solve by {err} at {n} px, h={h}")
            fns[f"solve_h{h:g}"] = lambda s=solves[h]: sync(s(b_t, k_t))
            fns[f"cached_h{h:g}"] = lambda c=cached, i=inverse[h]: sync(c(b_t, k_t, i))
        times, samples = interleaved(fns, repeats)
        for h in hs:
            rows.append({"backend": backend, "h": h, "size": n, "channels": CHANNELS,
                         "solve_s": times[f"solve_h{h:g}"], "cached_s": times[f"cached_h{h:g}"],
                         "fft_pair_s": times["pair"],
                         "solve_over_pair_paired": paired(samples, f"solve_h{h:g}", "pair"),
                         "cached_over_pair_paired": paired(samples, f"cached_h{h:g}", "pair")})
        print(f"[{backend}] solve {n}x{n}x{CHANNELS}: " + ", ".join(
            f"{k} {v[0] * 1e3:.2f}/{v[1] * 1e3:.2f} ms" for k, v in times.items()), flush=True)
    return rows


def worker_steps(sizes, widths, batch, repeats):
    import keras

    from keras_medseg.layers import IMEXBlock

    backend = keras.backend.backend()
    rng = np.random.default_rng(1)
    rows = []
    for n, width in itertools.product(sizes, widths):
        x = rng.standard_normal((batch, n, n, width)).astype("float32")
        y = rng.standard_normal((batch, n, n, width)).astype("float32")
        fns = {}
        for implicit in (False, True):
            keras.utils.set_random_seed(0)
            inputs = keras.Input((n, n, width))
            model = keras.Model(inputs, IMEXBlock(width, implicit=implicit, h=0.5)(inputs))
            # XLA off on TensorFlow, as in the zoo models (it slows both steps down on CPU); JAX always jits.
            model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse",
                          jit_compile=False if backend == "tensorflow" else True)
            fns["imex" if implicit else "resnet"] = lambda m=model: m.train_on_batch(x, y)
        times, samples = interleaved(fns, repeats)
        rows.append({"backend": backend, "size": n, "width": width, "batch": batch,
                     "resnet_step_s": times["resnet"], "imex_step_s": times["imex"],
                     "imex_over_resnet_paired": paired(samples, "imex", "resnet")})
        print(f"[{backend}] step {batch}x{n}x{n}x{width}: resnet {times['resnet'][0] * 1e3:.1f} ms, "
              f"imex {times['imex'][0] * 1e3:.1f} ms (min)", flush=True)
    return rows


def worker(args):
    import keras

    out = {"backend": keras.backend.backend(), "keras": keras.__version__,
           "solve": worker_solves(args.sizes, args.hs, args.repeats),
           "step": worker_steps(args.step_sizes, args.widths, 4, args.step_repeats)}
    if out["backend"] == "tensorflow":
        import tensorflow as tf

        out["tensorflow"] = tf.__version__
    else:
        import jax

        out["jax"] = jax.__version__
    with open(args.worker_out, "w") as f:
        json.dump(out, f)
    return 0


# ------------------------------------------------------------------------------------- parent


def sparse_conv_matrix(c, n):
    """Sparse matrix of the periodic cross-correlation with the centred 3x3 kernel `c` (one channel)."""
    import scipy.sparse

    index = np.arange(n * n).reshape(n, n)
    rows, cols, vals = [], [], []
    for ty, tx in itertools.product(range(3), range(3)):
        source = np.roll(index, (1 - ty, 1 - tx), axis=(0, 1))  # (C y)[x] = sum_t c[t] y[x + t - 1]
        rows.append(index.ravel())
        cols.append(source.ravel())
        vals.append(np.full(n * n, c[ty, tx]))
    return scipy.sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                   shape=(n * n, n * n))


def bench_cg(sizes, hs, repeats):
    """scipy sparse CG, one channel after the other; `{(h, n): row}`."""
    import scipy.sparse
    import scipy.sparse.linalg

    out = {}
    for h, n in itertools.product(hs, sizes):
        b, kernel = problem(n)
        systems = []
        for ch in range(CHANNELS):
            c = sparse_conv_matrix(kernel[..., ch].astype("float64"), n)
            systems.append((scipy.sparse.identity(n * n, format="csr") + h * (c.T @ c)).tocsr())
        times, iterations = [], []
        for _ in range(repeats):
            sol = np.zeros((n, n, CHANNELS))
            t0 = time.perf_counter()
            for ch in range(CHANNELS):
                count = [0]

                def callback(_, count=count):
                    count[0] += 1

                x, info = scipy.sparse.linalg.cg(systems[ch], b[0, ..., ch].ravel().astype("float64"), rtol=1e-6,
                                                 maxiter=10000, callback=callback)
                if info != 0:
                    raise RuntimeError(f"CG did not converge (info={info}) at {n} px, h={h}")
                sol[..., ch] = x.reshape(n, n)
                iterations.append(count[0])
            times.append(time.perf_counter() - t0)
        out[(h, n)] = {"cg_s": (float(np.min(times)), float(np.median(times))),
                       "cg_iterations": float(np.mean(iterations)),
                       "cg_max_abs_diff": float(np.abs(sol - numpy_solve(b, kernel, h)).max())}
        print(f"cg h={h:g} {n}x{n}x{CHANNELS}: {np.min(times) * 1e3:.1f} ms, "
              f"{np.mean(iterations):.0f} iterations", flush=True)
    return out


def markdown(solve_rows, step_rows, loads, quick):
    from _common import markdown_table

    def ms(t):
        return f"{t[0] * 1e3:.3g} / {t[1] * 1e3:.3g}"

    def ratio(a, b, p):
        return f"{a[0] / b[0]:.2f}x / {a[1] / b[1]:.2f}x / **{p:.2f}x**"

    text = (f"Implicit solve `(I + h C^T C) y = b`, one {CHANNELS}-channel image, 3x3 depthwise kernel, compiled "
            "(`tf.function` / `jax.jit`), against ONE bare real FFT pair of the same size (the physical limit: "
            "`tf.signal.rfft2d`+`irfft2d`, `jnp.fft.rfftn`+`irfftn`) and scipy sparse CG (rtol 1e-6, "
            "single-threaded BLAS). Times in ms and ratios as min / median of interleaved repeats; "
            "\"cached\" is the solve with the transfer function precomputed (the layers' inference cache). Ratios: "
             "min / median / **median of the per-repeat ratios** (the two ran back to back in each repeat, "
             "so this one is the least sensitive to the load of the shared machine):\n\n")
    text += markdown_table(
        ["backend", "h", "size", "solve", "cached", "FFT pair", "solve / FFT pair", "cached / FFT pair",
         "sparse CG", "CG iterations", "CG / solve", "max abs diff CG"],
        [[r["backend"], f"{r['h']:g}", f"{r['size']}x{r['size']}", ms(r["solve_s"]), ms(r["cached_s"]),
          ms(r["fft_pair_s"]), ratio(r["solve_s"], r["fft_pair_s"], r["solve_over_pair_paired"]),
          ratio(r["cached_s"], r["fft_pair_s"], r["cached_over_pair_paired"]),
          ms(r["cg_s"]), f"{r['cg_iterations']:.0f}", f"{r['cg_s'][0] / r['solve_s'][0]:.0f}x",
          f"{r['cg_max_abs_diff']:.1e}"] for r in solve_rows])
    text += ("\n\nOne training step (forward + backward + SGD, `train_on_batch`) of an `IMEXBlock` "
             "against the same block without the implicit solve (the ResNet step), batch 4 "
             "(ms, min / median; ratios as above):\n\n")
    text += markdown_table(
        ["backend", "size", "width", "ResNet step", "IMEX step", "IMEX / ResNet"],
        [[r["backend"], f"{r['size']}x{r['size']}", r["width"], ms(r["resnet_step_s"]), ms(r["imex_step_s"]),
          ratio(r["imex_step_s"], r["resnet_step_s"], r["imex_over_resnet_paired"])] for r in step_rows])
    # Goals, judged on the median of the per-repeat ratios.
    goals = []
    for be in sorted({r["backend"] for r in solve_rows}):
        per_size = {}
        for r in solve_rows:  # h = 1 and h = 10 are the same computation: the better of the two
            if r["backend"] == be:
                per_size[r["size"]] = min(per_size.get(r["size"], np.inf), r["solve_over_pair_paired"])
        ratios = ", ".join(f"{v:.2f}x at {n}^2" for n, v in sorted(per_size.items()))
        largest = per_size[max(per_size)]
        goals.append(f"solve within 1.3x of the FFT pair on {be}: {ratios} "
                     f"({'met' if largest <= 1.3 else 'NOT met'} at the largest size"
                     + ("" if all(v <= 1.3 for v in per_size.values()) else
                        "; besides the FFT pair the solve makes two layout transposes (channels-last to "
                        "channels-first and back) and one complex multiply, each a full pass over memory on a CPU, "
                        "plus the transfer function unless cached (column 'cached')")
                     + ")")
    backends = sorted({r["backend"] for r in step_rows})
    for width in sorted({r["width"] for r in step_rows}):
        per = {be: [r["imex_over_resnet_paired"] for r in step_rows if r["backend"] == be and r["width"] == width]
               for be in backends}
        per = {be: v for be, v in per.items() if v}
        if width == 16:
            fastest = min(per, key=lambda be: sum(r["imex_step_s"][1] for r in step_rows
                                                   if r["backend"] == be and r["width"] == width))
            worst = max(per[fastest])
            goals.append(f"IMEX step <= 1.5x ResNet at width 16 on the faster backend ({fastest}): "
                         f"up to {worst:.2f}x ({'met' if worst <= 1.5 else 'NOT met'})")
        else:
            worst = {be: max(v) for be, v in per.items()}
            goals.append(f"IMEX step <= 1.5x ResNet at width {width} on "
                         + " and ".join(f"{be} (up to {w:.2f}x)" for be, w in worst.items())
                         + (": met" if all(w <= 1.5 for w in worst.values()) else ": NOT met"))
    text += "\n\nGoals (medians of the per-repeat ratios): " + "; ".join(goals) + "."
    text += (f" The machine was shared with other jobs (1-minute load average {loads[0]:.1f} at the start, "
             f"{loads[1]:.1f} at the end on {os.cpu_count()} cores), so medians scatter; each backend ran in its "
             "own process, one after the other.")
    if quick:
        text += " Quick run (`--quick`): small sizes only."
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only; no README update")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default tensorflow,jax)")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved solve repeats (default 30)")
    parser.add_argument("--step-repeats", type=int, default=10, help="interleaved step repeats (default 10)")
    parser.add_argument("--cg-repeats", type=int, default=2, help="CG repeats (default 2)")
    parser.add_argument("--no-write", action="store_true", help="do not write results/README")
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.hs = [1.0, 10.0]
    args.sizes = [32, 64] if args.quick else [64, 128, 256]
    args.step_sizes = [32] if args.quick else [64, 128]
    args.widths = [16] if args.quick else [16, 64]
    if args.worker_out:
        return worker(args)

    loads = [os.getloadavg()[0]]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for be in args.backends.split(","):
            out = os.path.join(tmp, f"{be}.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--worker-out", out, "--repeats", str(args.repeats),
                   "--step-repeats", str(args.step_repeats)] + (["--quick"] if args.quick else [])
            env = dict(os.environ, KERAS_BACKEND=be)
            env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
            subprocess.run(cmd, env=env, check=True)
            with open(out) as f:
                results[be] = json.load(f)
    cg = bench_cg(args.sizes, args.hs, args.cg_repeats)
    loads.append(os.getloadavg()[0])
    solve_rows = [dict(r, **cg[(r["h"], r["size"])]) for be in results for r in results[be]["solve"]]
    step_rows = [r for be in results for r in results[be]["step"]]
    table = markdown(solve_rows, step_rows, loads, args.quick)
    if not (args.no_write or args.quick):
        from _common import write_results

        versions = {be: {k: v for k, v in res.items() if k not in ("solve", "step")} for be, res in results.items()}
        write_results("implicit_solve", {"solve": solve_rows, "step": step_rows, "versions": versions,
                                         "load_average": loads}, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
