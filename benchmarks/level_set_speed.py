"""Speed of the `lse` level set against ITK and scikit-image, side by side in one process (issue 15).

    KERAS_BACKEND=tensorflow python benchmarks/level_set_speed.py      # block `level_set_speed`
    KERAS_BACKEND=jax python benchmarks/level_set_speed.py             # block `level_set_speed_jax`
    python benchmarks/level_set_speed.py --preset smoke                # tiny sizes, nothing written

Solvers, all on the SAME inputs (image, edge indicator g, initial level set):

* `lse`: `keras_medseg.zoo.build("lse")` (compiled loop, front window on,
  balloon gated by the automatic edge threshold and the seeded region test),
  its evolution layer called through a compiled Keras model on `[g, u0]`
  (`g`: the edge indicator and the gated balloon image the model computes).
  First call (tracing + compilation) reported apart from the steady state.
* `lse` dense: the same layer with `front_window=False` (every voxel is
  stepped), to show what the window buys and how far the dense step is from
  the memory floor.
* ITK `GeodesicActiveContourLevelSetImageFilter` (sparse field, narrow band,
  its own time step), feature image g (the edge indicator channel), PropagationScaling = -alpha,
  CurvatureScaling = beta, AdvectionScaling = gamma (mapping checked in
  `benchmarks/lse_vs_itk.py`). Inputs one by one (a batch = a Python loop).
* scikit-image `morphological_geodesic_active_contour` (morphological
  operators, not a PDE: one iteration is not one time step), gimage g,
  balloon 1, smoothing 1, threshold 'auto', one by one.

Cases: one 256 x 256 crop of scikit-image's `coins` (seed inside one coin),
a batch of 16 copies of it (same seed), one 128^3 volume (nilearn's MNI152
T1 template resampled to 128^3, seed a sphere in the brain; the brain /
background border is the closed edge). Two regimes: equal iteration counts
(`lse` steps = ITK iterations = scikit-image iterations, no early stop) and
to convergence for the single image and the batch (`lse` default stop, at
most 2000 steps; ITK timed at the fewest iterations that give its converged
segmentation, `itk_converged`; scikit-image has no stopping rule and is left
out). The 128^3 volume runs at equal iterations only: on it neither solver
converges within 2000 iterations (measured once, with the defaults before
issue 32: lse ran all 2000 steps,
about 48 s, ITK 2000 iterations about 85 s, the two fronts leaking
differently, Dice 0.58), which would take minutes per repeat and time
nothing useful. Dice of each result against ITK's on the same input is in
the table (inside = level set < 0), and Dice of `lse` against `lse` dense.

Timing: every repeat runs the solvers one after the other (interleaved),
min and median over repeats (3 for the 2D rows, 2 for the volume). The
batch rows also report the CPU time of `lse` and of ITK (all threads of the
process), which another job on the machine inflates far less than the wall
time of a 2-thread run. Ratios against ITK (the anchor) and, for the
dense step, against a floor: the time to stream the arrays a dense explicit
step must touch at least once (read u and g, write u: 4 bytes each per voxel
per step, g with its balloon channel: 16 bytes) at the copy bandwidth NumPy measures in this process, times the number
of steps.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from _common import benchmark_main, dice, markdown_table  # noqa: E402

ALPHA, BETA, GAMMA = -0.5, 0.2, 1.0
#: results name (`benchmarks/results/<NAME>.json`, README block); `run` adds the backend suffix off TensorFlow
NAME = "level_set_speed"
PRESETS = {
    "cpu": {"size2": 256, "size3": 128, "steps2": 200, "steps3": 50, "limit": 2000},
    "smoke": {"size2": 64, "size3": 32, "steps2": 20, "steps3": 10, "limit": 100},
}


# ----------------------------------------------------------------------------------------------- data
def coins_case(size=256):
    """A `size` x `size` crop of scikit-image's coins (float32, raw 0-255 units) and a seed inside one coin."""
    import skimage.data

    from keras_medseg.zoo.level_set import signed_distance_to_sphere

    image = skimage.data.coins()[:size, :size].astype("float32")
    centre = (130 * size / 256, 50 * size / 256)
    return image, signed_distance_to_sphere(image.shape, centre, 6.0 * size / 256).astype("float32")


def brain_case(size=128):
    """nilearn's MNI152 T1 template resampled to `size`^3 (float32) and a sphere seed inside the brain."""
    from nilearn.datasets import load_mni152_template
    from scipy import ndimage

    from keras_medseg.zoo.level_set import signed_distance_to_sphere

    volume = np.asarray(load_mni152_template(resolution=2).get_fdata(), dtype="float32")
    volume = ndimage.zoom(volume, [size / s for s in volume.shape], order=1).astype("float32")
    centre = tuple(s / 2 for s in volume.shape)
    return volume, signed_distance_to_sphere(volume.shape, centre, size / 10).astype("float32")


# --------------------------------------------------------------------------------------------- solvers
def default_tolerance():
    """The convergence tolerance of `zoo.build("lse")` (its default argument)."""
    import inspect

    from keras_medseg.zoo.level_set import lse

    return inspect.signature(lse).parameters["tolerance"].default


def lse_solver(shape, steps, tolerance):
    """`[image, u0] -> g` model and compiled `[g, u0] -> [u, steps taken]` models of the zoo `lse` (defaults).

    `g` is what the evolution receives: the edge indicator and the balloon's
    propagation image (gated by the automatic edge threshold and the seeded
    region test), `(N, *S, 2)`. Returns `(edge, evolution, dense)`:
    `evolution` is the default (front window on), `dense` the same layer with
    `front_window=False` (every voxel stepped), for the 'lse dense' column.
    """
    import keras

    from keras_medseg import zoo
    from keras_medseg.layers import LevelSetEvolution

    model = zoo.build("lse", spatial_dims=len(shape), steps=steps, tolerance=tolerance, input_size=tuple(shape))
    names = [layer.name for layer in model.layers]
    edge = keras.Model(model.inputs, model.get_layer("lse_region" if "lse_region" in names else "lse_edge").output)
    channels = int(edge.output.shape[-1])
    layer = model.get_layer("lse_evolution")
    evolutions = []
    for front_window in (layer.front_window, False):
        counting = LevelSetEvolution.from_config({**layer.get_config(), "return_steps": True,
                                                  "front_window": front_window})
        g_in, u_in = keras.Input(tuple(shape) + (channels,)), keras.Input(tuple(shape) + (1,))
        evolutions.append(keras.Model([g_in, u_in], counting([u_in, g_in])))
        counting.set_weights(layer.get_weights())
    return edge, evolutions[0], evolutions[1]


def run_itk(g, u0, iterations, rms):
    import itk

    image_type = itk.Image[itk.F, g.ndim]
    gac = itk.GeodesicActiveContourLevelSetImageFilter[image_type, image_type, itk.F].New()
    gac.SetInput(itk.image_from_array(np.ascontiguousarray(u0, dtype="float32")))
    gac.SetFeatureImage(itk.image_from_array(np.ascontiguousarray(g, dtype="float32")))
    gac.SetPropagationScaling(-ALPHA)
    gac.SetCurvatureScaling(BETA)
    gac.SetAdvectionScaling(GAMMA)
    gac.SetDerivativeSigma(0.0)
    gac.SetMaximumRMSError(float(rms))
    gac.SetNumberOfIterations(int(iterations))
    gac.Update()
    return itk.array_from_image(gac.GetOutput()) < 0, int(gac.GetElapsedIterations())


#: iteration counts tried when looking for ITK's convergence (its RMS-change stop rarely fires, see `itk_converged`)
ITK_LADDER = (50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1200, 1500, 2000)


def itk_converged(g, u0, limit, rms):
    """Fewest ITK iterations (from `ITK_LADDER`) whose segmentation has Dice >= 0.999 with `limit` iterations.

    ITK's `MaximumRMSError` stop (`rms`) did not fire on the coin: the RMS
    change of its active layer stays above 0.002 after the front has
    stopped, so ITK ran to its limit of 2000 iterations although its
    segmentation stopped changing at about 400. Timing ITK at that limit
    would flatter `lse`; instead ITK is timed at the smallest count that
    already gives the converged segmentation (an oracle ITK would not have).
    Untimed. Returns `(iterations, iterations run by the RMS-stopped call)`.
    """
    final, elapsed = run_itk(g, u0, limit, rms)
    for n in ITK_LADDER:
        if n >= elapsed:
            break
        if dice(run_itk(g, u0, n, 0.0)[0], final) >= 0.999:
            return n, elapsed
    return elapsed, elapsed


def run_skimage(g, u0, iterations):
    from skimage.segmentation import morphological_geodesic_active_contour

    return morphological_geodesic_active_contour(g, iterations, init_level_set=(u0 < 0).astype(np.int8),
                                                 smoothing=1, balloon=1, threshold="auto").astype(bool)


def copy_bandwidth():
    """Bytes per second of a large NumPy copy (read + write), best of 5."""
    a = np.ones(16 * 2**20, "float32")
    b = np.empty_like(a)
    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best


# ----------------------------------------------------------------------------------------------- cases
def measure(case, image, u0, batch, steps, tolerance, repeats, with_skimage, bandwidth):
    """One table row: times (first call, min/median steady) and Dice vs ITK of every solver.

    Equal iterations (`tolerance` None): `lse`, `lse` dense, ITK and
    scikit-image all run `steps`. To convergence: `lse` stops by its own
    rule (at most `steps`), ITK is timed at the fewest iterations that give
    its converged segmentation (`itk_converged`, limit `steps`).
    """
    edge, evolution, dense = lse_solver(image.shape, steps, tolerance)
    x = np.repeat(image[None, ..., None], batch, axis=0)
    u = np.repeat(u0[None, ..., None], batch, axis=0)
    g = np.asarray(edge.predict_on_batch([x, u]))
    t0 = time.perf_counter()
    evolution.predict_on_batch([g, u])
    first = time.perf_counter() - t0
    dense.predict_on_batch([g, u])
    its, rms_its = (steps, None) if tolerance is None else itk_converged(g[0, ..., 0], u0, steps, 0.002)
    times = {"lse": [], "dense": [], "itk": [], "skimage": []}
    cpu = {"lse": [], "itk": []}  # CPU seconds of this process (all threads): less sensitive to other jobs' load
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        u_lse, taken = evolution.predict_on_batch([g, u])
        times["lse"].append(time.perf_counter() - t0)
        cpu["lse"].append(time.process_time() - c0)
        t0 = time.perf_counter()
        u_dense, _ = dense.predict_on_batch([g, u])
        times["dense"].append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        itk_out = [run_itk(g[i, ..., 0], u0, its, 0.0) for i in range(batch)]
        times["itk"].append(time.perf_counter() - t0)
        cpu["itk"].append(time.process_time() - c0)
        if with_skimage:
            t0 = time.perf_counter()
            sk = [run_skimage(g[i, ..., 0], u0, steps) for i in range(batch)]
            times["skimage"].append(time.perf_counter() - t0)
    lse_inside = np.asarray(u_lse)[..., 0] < 0
    dense_inside = np.asarray(u_dense)[..., 0] < 0
    itk_inside = np.stack([o[0] for o in itk_out])
    taken = np.asarray(taken)
    voxels = int(np.prod(image.shape)) * batch
    stream = 4 * (2 + g.shape[-1])  # bytes per voxel per step: read u and g (every channel), write u
    floor = float(taken.max()) * stream * voxels / bandwidth
    row = {
        "case": case, "shape": list(image.shape), "batch": batch,
        "regime": "equal iterations" if tolerance is None else "to convergence",
        "lse_steps": int(taken.max()), "itk_iterations": max(o[1] for o in itk_out),
        "lse_first_call_s": first,
        "lse_min_s": float(min(times["lse"])), "lse_median_s": float(np.median(times["lse"])),
        "dense_min_s": float(min(times["dense"])), "dense_median_s": float(np.median(times["dense"])),
        "itk_min_s": float(min(times["itk"])), "itk_median_s": float(np.median(times["itk"])),
        "lse_cpu_min_s": float(min(cpu["lse"])), "itk_cpu_min_s": float(min(cpu["itk"])),
        "floor_s": floor, "floor_bytes_per_voxel": stream,
        "dice_lse_vs_itk": float(np.mean([dice(a, b) for a, b in zip(lse_inside, itk_inside)])),
        "dice_lse_vs_dense": float(np.mean([dice(a, b) for a, b in zip(lse_inside, dense_inside)])),
        "lse_voxels_inside": int(lse_inside[0].sum()), "itk_voxels_inside": int(itk_inside[0].sum()),
        "itk_rms_stop_iterations": rms_its,
    }
    if with_skimage:
        row.update({"skimage_min_s": float(min(times["skimage"])),
                    "skimage_median_s": float(np.median(times["skimage"])),
                    "dice_skimage_vs_itk": float(np.mean([dice(a, b) for a, b in zip(sk, itk_inside)]))})
    return row


def run(preset="cpu", out_dir=None, progress=True, repeats=3):
    """All rows of the table for `preset` (`PRESETS`); `out_dir` is unused (no figures)."""
    global NAME
    import keras

    NAME = "level_set_speed" + ("" if keras.backend.backend() == "tensorflow" else f"_{keras.backend.backend()}")
    quick = preset == "smoke"
    load_before = os.getloadavg()[0]
    size2, size3, steps2, steps3 = (PRESETS[preset][k] for k in ("size2", "size3", "steps2", "steps3"))
    coins, coins_u0 = coins_case(size2)
    brain, brain_u0 = brain_case(size3)
    bandwidth = copy_bandwidth()
    for d in (2, 3):  # ITK loads its wrappers on first use (tens of seconds): not part of any timing
        tiny = np.ones((8,) * d, "float32")
        run_itk(tiny, tiny - 2.0, 1, 0.0)
        run_skimage(tiny, tiny - 2.0, 1)
    limit = PRESETS[preset]["limit"]
    tol = default_tolerance()
    plan = [
        ("coins 1 image", coins, coins_u0, 1, steps2, None, True),
        ("coins 1 image", coins, coins_u0, 1, limit, tol, False),
        ("coins batch of 16", coins, coins_u0, 16, steps2, None, True),
        ("coins batch of 16", coins, coins_u0, 16, limit, tol, False),
        ("MNI152 volume", brain, brain_u0, 1, steps3, None, True),
    ]
    rows = []
    start = time.perf_counter()
    for case, image, u0, batch, steps, stop, sk in plan:
        # the 2D rows get every repeat (a batch row's min over 2 repeats was at the mercy of one busy moment);
        # the 3D row, the slowest, one fewer
        row = measure(case, image, u0, batch, steps, stop, max(1, repeats if image.ndim == 2 else repeats - 1), sk,
                      bandwidth)
        rows.append(row)
        if progress:
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        keras.backend.clear_session()
    return {"backend": keras.backend.backend(), "preset": preset, "quick": quick, "repeats": repeats, "tolerance": tol,
            "alpha": ALPHA, "beta": BETA, "gamma": GAMMA, "copy_bandwidth_GBs": bandwidth / 1e9, "rows": rows,
            "load_average_1min": [load_before, os.getloadavg()[0]], "seconds": time.perf_counter() - start}


def markdown(result, fig_prefix=""):
    rows = result["rows"]
    table = markdown_table(
        ["case", "size", "regime", "lse steps / ITK its", "lse first call (s)", "lse steady min / median (s)",
         "lse dense min / median (s)", "ITK min / median (s)", "skimage min / median (s)", "lse / ITK",
         "lse dense / ITK", "lse dense / floor", "Dice lse vs ITK", "Dice lse vs dense", "Dice skimage vs ITK"],
        [[r["case"], "x".join(str(s) for s in r["shape"]), r["regime"], f"{r['lse_steps']} / {r['itk_iterations']}",
          round(r["lse_first_call_s"], 2), f"{r['lse_min_s']:.3g} / {r['lse_median_s']:.3g}",
          f"{r['dense_min_s']:.3g} / {r['dense_median_s']:.3g}",
          f"{r['itk_min_s']:.3g} / {r['itk_median_s']:.3g}",
          f"{r['skimage_min_s']:.3g} / {r['skimage_median_s']:.3g}" if "skimage_min_s" in r else "-",
          f"{r['lse_min_s'] / r['itk_min_s']:.2f}", f"{r['dense_min_s'] / r['itk_min_s']:.2f}",
          f"{r['dense_min_s'] / r['floor_s']:.1f}", round(r["dice_lse_vs_itk"], 4), round(r["dice_lse_vs_dense"], 4),
          round(r["dice_skimage_vs_itk"], 4) if "dice_skimage_vs_itk" in r else "-"] for r in rows])
    first = max(r["lse_first_call_s"] - r["lse_median_s"] for r in rows)
    load = result.get("load_average_1min")
    rms = " / ".join(str(r["itk_rms_stop_iterations"]) for r in rows if r.get("itk_rms_stop_iterations"))
    text = (f"Backend {result['backend']}; alpha {result['alpha']}, beta {result['beta']}, gamma {result['gamma']}, "
            f"the lse defaults (adaptive edge scale, Gaussian sigma 1, dt 0.2, front window on, the balloon "
            f"gated by the automatic edge threshold and the seeded region test); the same edge indicator g and "
            f"seed for every solver (ITK and scikit-image get g without the lse's gated balloon image: their "
            f"own equations, so the Dice columns compare two stopping rules, not two solvers of one equation; "
            f"`benchmarks/lse_vs_itk.py` does that). 'lse' steps only a window around the front "
            f"(`front_window=True`, the default of `zoo.build('lse')`), 'lse dense' every voxel "
            f"(`front_window=False`), same steps. 'lse first "
            f"call' includes tracing and compilation (largest first-call overhead over the steady state: "
            f"{first:.1f} s); ITK and scikit-image process a batch one image at a time. To convergence: lse stops "
            f"by its own rule (the front's mean speed below {result.get('tolerance', 5e-4):g} voxels per step, "
            f"checked every 25 steps), ITK is timed at the fewest "
            f"iterations of {list(ITK_LADDER)} whose segmentation has Dice >= 0.999 with its 2000-iteration result "
            f"(with its RMS-change stop at 0.002 it ran {rms} iterations). 'lse dense / floor': the dense time "
            f"over the time to stream {rows[0].get('floor_bytes_per_voxel', 12)} bytes per voxel per step (read u "
            f"and both channels of g, write u) at the measured copy bandwidth "
            f"({result['copy_bandwidth_GBs']:.1f} GB/s). scikit-image's morphological snake is a different "
            f"algorithm (one iteration is not a time step), shown at the same iteration count. Interleaved "
            f"repeats, min / median on 2 CPU cores" + (f" (1-minute load average {load[0]:.1f} before, "
                                                        f"{load[1]:.1f} after the run)" if load else "") + ".")
    return table + "\n\n" + text + "\n\n" + goals(rows) + "\n"


def goals(rows):
    """The issue's speed goals, each with the measured ratio (met / not met), in every regime measured."""
    lines = []
    for r in rows:
        ratio = r["lse_min_s"] / r["itk_min_s"]
        if r["case"] == "coins batch of 16":
            cpu = (f"; CPU time, all threads: lse {r['lse_cpu_min_s']:.3g} s, ITK {r['itk_cpu_min_s']:.3g} s"
                   if "lse_cpu_min_s" in r else "")
            lines.append(f"- lse on a batch of 16 faster than ITK one by one ({r['regime']}): lse / ITK = "
                         f"{ratio:.2f} ({'met' if ratio < 1 else 'not met'}{cpu}).")
        elif r["case"] == "coins 1 image":
            lines.append(f"- one 256 x 256 image within 3x of ITK ({r['regime']}): lse / ITK = {ratio:.2f} "
                         f"({'met' if ratio <= 3 else 'not met'}).")
    overhead = max(r["lse_first_call_s"] - r["lse_median_s"] for r in rows)
    first = max(r["lse_first_call_s"] for r in rows)
    lines.append(f"- first call's compile under 10 s: largest first-call overhead (first call minus steady "
                 f"median) {overhead:.1f} s ({'met' if overhead < 10 else 'not met'}); largest first call "
                 f"including its run {first:.1f} s.")
    return "Goals (issue 15):\n" + "\n".join(lines)


def main(argv=None):
    return benchmark_main(sys.modules[__name__], argv, extra_arguments=[
        (("--repeats",), {"type": int, "default": 3, "help": "interleaved repeats (default 3)"})])


if __name__ == "__main__":
    sys.exit(main())
