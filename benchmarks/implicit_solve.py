"""Benchmark the FFT implicit solve and the IMEX step.

1. `keras_medseg.ops.implicit_conv_solve` (FFT; timed compiled, through an
   `ImplicitFFTConv` model's `predict_on_batch`) against scipy's sparse conjugate
   gradient on the sparse matrix of the same system `(I + h C^T C) y = b` and
   against a dense `numpy.linalg.solve` (only where the matrix fits: `--dense-max`, default 32 px),
   one image, 16 channels, 32..256 px. The CG and dense solutions are compared
   with the FFT one (max abs difference).
2. One `IMEXBlock` training step (forward + backward + SGD update through
   `train_on_batch`) with `implicit=True` against `implicit=False` (the ResNet
   step) at equal width.

Targets (issue 2): FFT >= 100x faster than sparse CG at 256x256x16; IMEX step
<= 1.5x the ResNet step.

Usage:
    python benchmarks/implicit_solve.py            # full run (a few minutes)
    python benchmarks/implicit_solve.py --quick    # small sizes, seconds
"""

import argparse
import itertools
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One BLAS thread for scipy/NumPy: on a shared machine a multi-threaded BLAS makes
# CG's vector updates and the dense solve tens of times slower through contention,
# which would flatter the FFT solve.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse  # noqa: E402
import scipy.sparse.linalg  # noqa: E402
from keras import ops  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import markdown_table, write_results  # noqa: E402

from keras_medseg.layers import IMEXBlock, ImplicitFFTConv  # noqa: E402
from keras_medseg.ops import implicit_conv_solve  # noqa: E402


def median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def sparse_conv_matrix(c, spatial):
    """Sparse matrix of the periodic cross-correlation with the centred kernel `c` (one channel)."""
    size = int(np.prod(spatial))
    index = np.arange(size).reshape(spatial)
    centre = [k // 2 for k in c.shape]
    rows, cols, vals = [], [], []
    for tap in itertools.product(*[range(k) for k in c.shape]):
        # (C y)[x] = sum_tap c[tap] y[x + tap - centre]
        shift = tuple(m - t for t, m in zip(tap, centre))
        source = np.roll(index, shift, axis=tuple(range(len(spatial))))
        rows.append(index.ravel())
        cols.append(source.ravel())
        vals.append(np.full(size, c[tap]))
    return scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size)
    )


def bench_solvers(sizes, channels, hs, dense_max, repeats):
    rows = []
    for h, n in itertools.product(hs, sizes):
        rng = np.random.default_rng(0)
        b = rng.standard_normal((1, n, n, channels)).astype("float32")
        kernel = (0.5 * rng.standard_normal((3, 3, channels))).astype("float32")
        b_t, k_t = ops.convert_to_tensor(b), ops.convert_to_tensor(kernel)
        y_fft = ops.convert_to_numpy(implicit_conv_solve(b_t, k_t, h))
        # Timed as a compiled function (an ImplicitFFTConv model holding the same
        # kernel and h, `predict_on_batch`), so Python dispatch is not measured.
        inputs = keras.Input((n, n, channels))
        layer = ImplicitFFTConv(kernel_size=3, h=h)
        model = keras.Model(inputs, layer(inputs))
        layer.kernel.assign(kernel)
        np.testing.assert_allclose(model.predict_on_batch(b), y_fft, atol=1e-5)
        t_fft = median_time(lambda: model.predict_on_batch(b), repeats, warmup=3)

        systems = []
        for ch in range(channels):
            c = sparse_conv_matrix(kernel[..., ch].astype("float64"), (n, n))
            systems.append((scipy.sparse.identity(n * n, format="csr") + h * (c.T @ c)).tocsr())

        iterations = []

        def run_cg():
            out = np.zeros((n, n, channels))
            for ch in range(channels):
                count = [0]

                def callback(_, count=count):
                    count[0] += 1

                sol, info = scipy.sparse.linalg.cg(systems[ch], b[0, ..., ch].ravel().astype("float64"),
                                                   rtol=1e-6, maxiter=10000, callback=callback)
                iterations.append(count[0])
                if info != 0:
                    raise RuntimeError(f"CG did not converge (info={info}) at {n} px")
                out[..., ch] = sol.reshape(n, n)
            return out

        t0 = time.perf_counter()
        y_cg = run_cg()
        t_cg = time.perf_counter() - t0
        row = {
            "h": h,
            "size": n,
            "channels": channels,
            "fft_s": t_fft,
            "cg_s": t_cg,
            "cg_over_fft": t_cg / t_fft,
            "cg_max_abs_diff": float(np.abs(y_cg - y_fft[0]).max()),
            "cg_mean_iterations": float(np.mean(iterations)),
            "dense_s": None,
            "dense_max_abs_diff": None,
        }
        if n <= dense_max:
            dense = [s.toarray() for s in systems]
            t0 = time.perf_counter()
            y_dense = np.stack(
                [np.linalg.solve(dense[ch], b[0, ..., ch].ravel().astype("float64")).reshape(n, n)
                 for ch in range(channels)],
                axis=-1,
            )
            row["dense_s"] = time.perf_counter() - t0
            row["dense_max_abs_diff"] = float(np.abs(y_dense - y_fft[0]).max())
        rows.append(row)
        print(f"solve h={h} {n}x{n}x{channels}: fft {t_fft * 1e3:.2f} ms, cg {t_cg * 1e3:.1f} ms "
              f"({np.mean(iterations):.0f} iterations) "
              f"({t_cg / t_fft:.0f}x), dense {row['dense_s']}", flush=True)
    return rows


def bench_steps(sizes, widths, batch, repeats):
    rng = np.random.default_rng(1)
    rows = []
    for n, width in itertools.product(sizes, widths):
        x = rng.standard_normal((batch, n, n, width)).astype("float32")
        y = rng.standard_normal((batch, n, n, width)).astype("float32")
        models = {}
        for implicit in (False, True):
            keras.utils.set_random_seed(0)
            inputs = keras.Input((n, n, width))
            model = keras.Model(inputs, IMEXBlock(width, implicit=implicit, h=0.5)(inputs))
            # XLA off on TensorFlow, as in the zoo models (it slows both steps down on CPU).
            jit = False if keras.backend.backend() == "tensorflow" else "auto"
            model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", jit_compile=jit)
            for _ in range(3):
                model.train_on_batch(x, y)
            models[implicit] = model
        # Interleaved measurements, so a change of machine load hits both alike.
        samples = {False: [], True: []}
        for _ in range(repeats):
            for implicit in (False, True):
                t0 = time.perf_counter()
                models[implicit].train_on_batch(x, y)
                samples[implicit].append(time.perf_counter() - t0)
        times = {k: float(np.median(v)) for k, v in samples.items()}
        rows.append({
            "size": n,
            "width": width,
            "batch": batch,
            "resnet_step_s": times[False],
            "imex_step_s": times[True],
            "imex_over_resnet": times[True] / times[False],
        })
        print(f"step {batch}x{n}x{n}x{width}: resnet {times[False] * 1e3:.1f} ms, "
              f"imex {times[True] * 1e3:.1f} ms ({times[True] / times[False]:.2f}x)", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (a few seconds)")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--h", default="1,10",
                        help="comma-separated step sizes; CG needs more iterations as h grows, the FFT does not")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dense-max", type=int, default=32,
                        help="largest image side for the dense solve (64 needs 16 4096x4096 LU solves)")
    parser.add_argument("--step-widths", default="16,64",
                        help="comma-separated block widths for the step timing (the paper uses 64..256)")
    parser.add_argument("--no-write", action="store_true", help="do not write results/README")
    args = parser.parse_args(argv)

    solve_sizes = [32, 64] if args.quick else [32, 64, 128, 256]
    step_sizes = [32] if args.quick else [64, 128]
    if args.quick:
        args.step_widths = args.step_widths.split(",")[0]
    solve_rows = bench_solvers(solve_sizes, args.channels, [float(v) for v in args.h.split(",")],
                               dense_max=args.dense_max,
                               repeats=args.repeats)
    step_rows = bench_steps(step_sizes, [int(w) for w in args.step_widths.split(",")], batch=4,
                            repeats=args.repeats)

    def ms(v):
        return "-" if v is None else f"{v * 1e3:.3g}"

    table = ("Implicit solve `(I + h C^T C) y = b`, one image, 3x3 depthwise kernel (0.5 x standard normal), "
             "single-threaded BLAS for scipy/NumPy (times in ms):\n\n")
    table += markdown_table(
        ["h", "size", "channels", "FFT", "sparse CG (rtol 1e-6)", "CG iterations / channel", "CG / FFT", "dense",
         "max abs diff CG", "max abs diff dense"],
        [[f"{r['h']:g}", f"{r['size']}x{r['size']}", r["channels"], ms(r["fft_s"]), ms(r["cg_s"]),
          f"{r['cg_mean_iterations']:.0f}",
          f"{r['cg_over_fft']:.0f}x",
          ms(r["dense_s"]), f"{r['cg_max_abs_diff']:.1e}",
          "-" if r["dense_max_abs_diff"] is None else f"{r['dense_max_abs_diff']:.1e}"] for r in solve_rows],
    )
    table += "\n\nOne training step (forward + backward + SGD, `train_on_batch`) of an `IMEXBlock`, batch 4 (ms):\n\n"
    table += markdown_table(
        ["size", "width", "ResNet step", "IMEX step", "IMEX / ResNet"],
        [[f"{r['size']}x{r['size']}", r["width"], ms(r["resnet_step_s"]), ms(r["imex_step_s"]),
          f"{r['imex_over_resnet']:.2f}x"] for r in step_rows],
    )
    big = [r for r in solve_rows if r["size"] == 256]
    table += "\n\nTargets: FFT >= 100x faster than sparse CG at 256x256x16"
    if big:
        table += " (measured " + ", ".join(f"{r['cg_over_fft']:.0f}x at h={r['h']:g}" for r in big) + ": " \
            + ("met" if all(r["cg_over_fft"] >= 100 for r in big) else "NOT met on this machine") + ")"
    for w in sorted({r["width"] for r in step_rows}):
        ratios = [r["imex_over_resnet"] for r in step_rows if r["width"] == w]
        table += (f"; IMEX step <= 1.5x the ResNet step: {min(ratios):.2f}x..{max(ratios):.2f}x at width {w} "
                  f"({'met' if max(ratios) <= 1.5 else 'NOT met'})")
    table += (". The FFT solve costs O(width) per pixel and the block convolutions O(width^2), so the "
              "ratio falls as the width grows. Times are medians of interleaved repeats; they vary with "
              f"machine load (1-minute load average when this table was written: {os.getloadavg()[0]:.1f}).")
    if args.quick:
        table += " Quick run (`--quick`): small sizes only."
    if not args.no_write:
        write_results("implicit_solve", {"solve": solve_rows, "step": step_rows, "quick": args.quick}, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
