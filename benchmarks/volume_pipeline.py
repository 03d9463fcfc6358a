"""Patches per second of a 3D training pipeline on TensorFlow, JAX and torch: against MONAI and two limits.

    python benchmarks/volume_pipeline.py                          # cpu preset, the three backends in turn
    python benchmarks/volume_pipeline.py --backends jax torch     # some backends
    python benchmarks/volume_pipeline.py --preset smoke           # seconds, no README update

Every pipeline starts from the same NIfTI volumes (different shapes, written
by the script) and does the same work per patch: cached, z-scored volume ->
positive/negative crop (1:1, a positive centred on a foreground voxel) ->
random affine (rotation, scaling; linear image, nearest labels) -> elastic
deformation -> intensity scale and shift.

* keras-medseg: `VolumeDataset` with `augment.Compose([RandomAffine,
  RandomElastic, RandomIntensityScaleShift])`: the warp's parameters are
  drawn first, with the bounding box of its sampling points (exact, from the
  points at the elastic control nodes), then only that box (rounded up to a
  multiple of 16 voxels) is cropped from the cached volume, and one program
  composes the points at the patch's voxels, samples the box once (linear
  image, nearest labels) and applies the intensity transform
  (`keras_medseg.data.augment.window`); both programs run compiled (`jit_compile="auto"`: XLA on TensorFlow,
  `jax.jit` on JAX, eager torch). The other setting is measured beside it
  (TensorFlow and JAX uncompiled; torch with `torch.compile` of the sampling),
  which says whether compiling helps.
* MONAI (the anchor, CPU torch): `CacheDataset` + `RandCropByPosNegLabeld` +
  `RandAffined` + `Rand3DElasticd` + `RandScaleIntensityd` +
  `RandShiftIntensityd`.
* Floor: the crop alone (`VolumeDataset` without augmentation): no pipeline
  that crops can be faster.
* Crop + margin: the crop of the worst-case margin every draw of the warp
  may reach (`Compose.margin`) and its move to the backend: the floor of the
  design before the box crop (kept for comparison).
* Warp limit: a bare compiled trilinear gather (`keras_medseg.ops.map_coordinates`
  under XLA / `jax.jit` / `torch.compile`) of one patch, at precomputed
  coordinates (one draw of the same affine + elastic warp) from an array of
  the size of the box keras-medseg crops for that draw: the interpolation
  alone, without crop, draws, coordinates, labels or intensity. Goals:
  keras-medseg >= 0.5x this limit, >= 10x MONAI.
* scipy: `scipy.ndimage.map_coordinates` of the image (order 1) and labels
  (order 0) at the same coordinates, single-threaded, for scale.

Each backend runs in its own process (Keras fixes the backend per process),
one data-loading worker with one thread for every pipeline (`--threads`,
torch's intra-op threads and the backends' thread pools). Within a process
the repeats are interleaved (every pipeline once per repeat) and the min and
median time per repeat are reported, and the CPU time per patch of each of
keras-medseg's stages (`stage_times`) after them; each process records the load average
(the machine may be shared). The elastic warps differ in construction (ours:
linear interpolation of random control-point offsets; MONAI: Gaussian-smoothed
dense noise on a coarse grid), so the comparison is of pipelines that do the
same job, not of identical arithmetic.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import benchmark_main, markdown_table

NAME = "volume_pipeline"
PRESETS = {
    "smoke": {"shapes": [(40, 44, 36), (48, 40, 32)], "patch": 24, "patches": 4, "repeats": 2},
    "cpu": {"shapes": [(128, 128, 80), (144, 112, 72), (112, 136, 96), (128, 120, 64)], "patch": 64,
            "patches": 16, "repeats": 5},
}
BACKENDS = ("tensorflow", "jax", "torch")
ROTATION = 0.26  # radians (15 degrees) about every axis
SCALING = 0.1
ELASTIC_SPACING = 16  # voxels between control points (ours); MONAI's magnitude/sigma below
ELASTIC_MAGNITUDE = (2.0, 4.0)
SCALE, SHIFT = 0.1, 0.1
GOAL_LIMIT, GOAL_MONAI = 0.5, 10.0


def write_volumes(root, shapes, seed=0):
    """NIfTI image/label pairs: noise plus two bright ellipsoids labelled 1 and 2 (2 x 1 x 1 mm voxels)."""
    import nibabel as nib
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "labels"))
    pairs = []
    for i, shape in enumerate(shapes):
        grid = np.indices(shape, dtype=np.float32)
        labels = np.zeros(shape, np.uint8)
        for cls in (1, 2):
            centre = [rng.uniform(0.3, 0.7) * s for s in shape]
            radii = [rng.uniform(0.08, 0.15) * s for s in shape]
            labels[sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1] = cls
        image = rng.normal(0, 20, shape).astype(np.float32) + 60 * labels
        affine = np.diag([2.0, 1.0, 1.0, 1.0])
        paths = (os.path.join(root, "images", f"case{i}.nii.gz"), os.path.join(root, "labels", f"case{i}.nii.gz"))
        nib.save(nib.Nifti1Image(image, affine), paths[0])
        nib.save(nib.Nifti1Image(labels, affine), paths[1])
        pairs.append(paths)
    return pairs


def augmentation(jit_compile):
    from keras_medseg.data import augment as A
    return A.Compose([
        A.RandomAffine(rotation=ROTATION, scaling=SCALING, seed=1),
        A.RandomElastic(magnitude=ELASTIC_MAGNITUDE, spacing=ELASTIC_SPACING, seed=2),
        A.RandomIntensityScaleShift(SCALE, SHIFT, seed=3),
    ], jit_compile=jit_compile)


def _epoch(ds, patches):
    def run():
        for i in range(patches):
            x, y = ds[i]
        ds.on_epoch_end()
        return x.shape
    return run


def ours(root, patch, patches, jit_compile):
    """keras-medseg's pipeline; returns `(run, seconds of the first batch: tracing and compiling included)`."""
    from keras_medseg.data import VolumeDataset
    ds = VolumeDataset(root, patch_size=patch, batch_size=1, pos_fraction=0.5, augment=augmentation(jit_compile),
                       steps_per_epoch=patches, intensity={"preset": "zscore"})
    for i in range(len(ds.cases)):  # fill the cache (as CacheDataset does at construction)
        ds.load_case(i)
    t0 = time.perf_counter()
    ds[0]
    return _epoch(ds, patches), time.perf_counter() - t0


def stage_times(root, patch, patches, repeats=2):
    """CPU ms per patch of each stage of keras-medseg's pipeline (`jit_compile="auto"`), each stage finished
    before the next starts (JAX dispatches asynchronously): the draws and the box (`draw`: the first compiled
    program, parameters and the extremes of the points at a few nodes), `crop` (the box out of the cached
    volume), `transfer` (to the backend), `sample` (the second program: the points, the image's linear and the
    labels' nearest gathers, intensity) and `other` (Python, the patch back to NumPy, the batch's finish)."""
    from keras import ops

    import keras_medseg.data.scans.volume_dataset as vd
    from keras_medseg.data.augment import warp, window
    spent = {}

    def finished(x):
        for v in x if isinstance(x, (tuple, list)) else [x]:
            if isinstance(v, (tuple, list)):
                finished(v)
            elif hasattr(v, "shape") and not isinstance(v, np.ndarray):
                ops.convert_to_numpy(ops.reshape(v, (-1,))[:1])
        return x

    def timed(name, fn, key=None):
        def wrapper(*args, **kwargs):
            c0 = time.process_time()
            out = finished(fn(*args, **kwargs))
            stage = key(args) if key else name
            spent[stage] = spent.get(stage, 0.0) + time.process_time() - c0
            return out
        return wrapper

    saved = (window._run, warp.to_tensor, vd._crop)
    names = {"draw": "draw", "points": "draw", "sample": "sample"}
    window._run = timed(None, window._run, key=lambda a: names.get(a[3][0], a[3][0]))
    warp.to_tensor, vd._crop = timed("transfer", warp.to_tensor), timed("crop", vd._crop)
    try:
        run, _ = ours(root, patch, patches, "auto")
        run()
        spent.clear()
        c0 = time.process_time()
        for _ in range(repeats):
            run()
        total = time.process_time() - c0
    finally:
        window._run, warp.to_tensor, vd._crop = saved
    out = {k: 1e3 * v / (repeats * patches) for k, v in spent.items()}
    out["other"] = 1e3 * total / (repeats * patches) - sum(out.values())
    out["total"] = 1e3 * total / (repeats * patches)
    return out


def crop_only(root, patch, patches):
    from keras_medseg.data import VolumeDataset
    plain = VolumeDataset(root, patch_size=patch, batch_size=1, pos_fraction=0.5, steps_per_epoch=patches)
    for i in range(len(plain.cases)):
        plain.load_case(i)
    plain[0]
    return _epoch(plain, patches)


def crop_with_margin(root, patch, patches, margin):
    """The floor of the crop-plus-margin design: `VolumeDataset` crops the patch with the margin and moves it
    to the backend as the pipeline does (no draws, no warp; the centre patch comes back as it went in)."""
    import keras
    from keras import ops

    from keras_medseg.data import VolumeDataset
    from keras_medseg.data.augment.warp import to_tensor

    class CropOnly(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self._convert_input_args = False
            self._allow_non_tensor_positional_args = True
            self.built = True

        def margin(self, patch_size):
            return tuple(margin)

        def call(self, inputs, training=True, output_size=None):
            for value in inputs.values():  # the move to the backend, finished (JAX copies asynchronously)
                moved = to_tensor(value, "float32")
                ops.convert_to_numpy(moved[(0,) * len(moved.shape)])
            index = (slice(None),) + tuple(slice(m, m + p) for m, p in zip(margin, output_size))
            return {k: v[index] for k, v in inputs.items()}

    ds = VolumeDataset(root, patch_size=patch, batch_size=1, pos_fraction=0.5, augment=CropOnly(),
                       steps_per_epoch=patches)
    for i in range(len(ds.cases)):
        ds.load_case(i)
    ds[0]
    return _epoch(ds, patches)


def _compiled(fn):
    """`fn` compiled by the active backend's compiler: XLA, `jax.jit` or `torch.compile`."""
    import keras
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.function(fn, jit_compile=True)
    import torch
    return torch.compile(fn, dynamic=False)


def warp_limits(patch, patches):
    """The bare compiled trilinear gather of one patch and scipy's, at one precomputed draw of the warp.

    Returns `(run_gather, run_scipy, facts)`.
    """
    import scipy.ndimage as ndi
    from keras import ops

    from keras_medseg.data.augment import warp, window
    from keras_medseg.ops import map_coordinates
    pipeline = augmentation(False)
    size = (patch,) * 3
    margin = pipeline.margin(size)
    region = tuple(p + 2 * m for p, m in zip(size, margin))
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(1,) + region + (1,)).astype(np.float32)
    labels = (volume[..., 0] > 1.0).astype(np.int32)
    coords = ops.convert_to_numpy(warp.group_coordinates(pipeline.transforms[:2], 1, size))
    coords = (coords + np.reshape(margin, (1, 3, 1, 1, 1))).astype(np.float32)  # in the worst-case crop
    start = np.maximum(np.floor(coords.reshape(3, -1).min(axis=1)), 0)  # the box the pipeline crops
    box = window.box_size(start[None], coords.reshape(1, 3, -1).max(axis=2), region)
    coords = (coords - np.reshape(start, (1, 3, 1, 1, 1))).astype(np.float32)
    volume, labels = volume[(slice(None),) + tuple(slice(0, b) for b in box)], labels[(slice(None),) + tuple(
        slice(0, b) for b in box)]
    volume, labels = np.ascontiguousarray(volume), np.ascontiguousarray(labels)
    v, c = ops.convert_to_tensor(volume), ops.convert_to_tensor(coords)
    gather = _compiled(lambda a, b: map_coordinates(a, b, order=1, padding_mode="nearest"))
    t0 = time.perf_counter()
    ops.convert_to_numpy(gather(v, c))
    compile_s = time.perf_counter() - t0

    def run_gather():
        for _ in range(patches):
            out = ops.convert_to_numpy(gather(v, c))
        return out.shape

    def run_scipy():
        for _ in range(patches):
            ndi.map_coordinates(volume[0, ..., 0], coords[0], order=1, mode="nearest")
            ndi.map_coordinates(labels[0], coords[0], order=0, mode="nearest")
    return run_gather, run_scipy, {"margin": list(margin), "region": list(region), "box": list(box),
                                   "gather_compile_s": compile_s}


def monai_pipeline(pairs, patch, patches):
    import monai.transforms as T
    import torch
    from monai.data import CacheDataset
    keys = ("image", "label")
    deterministic = [T.LoadImaged(keys), T.EnsureChannelFirstd(keys), T.NormalizeIntensityd("image")]
    random = [
        T.RandCropByPosNegLabeld(keys, "label", spatial_size=(patch,) * 3, pos=1, neg=1, num_samples=1),
        T.RandAffined(keys, prob=1.0, rotate_range=(ROTATION,) * 3, scale_range=(SCALING,) * 3,
                      mode=("bilinear", "nearest"), padding_mode="zeros"),
        T.Rand3DElasticd(keys, sigma_range=(5, 7), magnitude_range=(50, 100), prob=1.0,
                         mode=("bilinear", "nearest"), padding_mode="border"),
        T.RandScaleIntensityd("image", factors=SCALE, prob=1.0),
        T.RandShiftIntensityd("image", offsets=SHIFT, prob=1.0),
    ]
    data = [{"image": i, "label": lab} for i, lab in pairs]
    transform = T.Compose(deterministic + random)
    transform.set_random_state(seed=0)
    ds = CacheDataset(data, transform=transform, cache_rate=1.0, num_workers=0, progress=False)
    torch.manual_seed(0)
    ds[0]

    def run_monai():
        for i in range(patches):
            out = ds[i % len(ds)]
        return tuple(out[0]["image"].shape)
    return run_monai


def measure(preset, threads=1, progress=True):
    """One backend (this process's): every pipeline and limit, repeats interleaved."""
    import keras
    import torch
    s = PRESETS[preset]
    backend = keras.backend.backend()
    torch.set_num_threads(threads)  # MONAI's transforms, and keras-medseg on torch
    load_before = os.getloadavg()
    other = True if backend == "torch" else False
    with tempfile.TemporaryDirectory() as root:
        pairs = write_volumes(root, s["shapes"])
        runs, first_batch_s = {}, {}
        runs["keras_medseg"], first_batch_s["keras_medseg"] = ours(root, s["patch"], s["patches"], "auto")
        runs["keras_medseg_other"], first_batch_s["keras_medseg_other"] = ours(root, s["patch"], s["patches"], other)
        runs["warp_limit"], runs["scipy_map_coordinates"], facts = warp_limits(s["patch"], s["patches"])
        runs["crop_only"] = crop_only(root, s["patch"], s["patches"])
        runs["crop_with_margin"] = crop_with_margin(root, s["patch"], s["patches"], facts["margin"])
        runs["monai"] = monai_pipeline(pairs, s["patch"], s["patches"])
        times = {name: [] for name in runs}
        cpu = {name: [] for name in runs}
        for r in range(s["repeats"]):
            for name, fn in runs.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
            if progress:
                print(f"{backend} repeat {r + 1}/{s['repeats']}: "
                      + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), file=sys.stderr)
        stages = stage_times(root, s["patch"], s["patches"])
    rates = {k: {"min_s": min(v), "median_s": float(np.median(v)), "patches_per_s_best": s["patches"] / min(v),
                 "patches_per_s_median": s["patches"] / float(np.median(v)),
                 "cpu_s_median": float(np.median(cpu[k])),
                 "patches_per_cpu_s_median": s["patches"] / float(np.median(cpu[k]))} for k, v in times.items()}

    def ratio(a, b):
        return {"median": rates[a]["patches_per_s_median"] / rates[b]["patches_per_s_median"],
                "best": rates[a]["patches_per_s_best"] / rates[b]["patches_per_s_best"],
                "cpu_median": rates[a]["patches_per_cpu_s_median"] / rates[b]["patches_per_cpu_s_median"]}
    return {"backend": backend, "preset": preset, "settings": dict(s), "threads": threads,
            "other_setting": {"jit_compile": other}, "facts": facts, "first_batch_s": first_batch_s,
            "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
            "times_s": times, "cpu_times_s": cpu, "rates": rates, "stages_cpu_ms": stages,
            "ratios": {"vs_warp_limit": ratio("keras_medseg", "warp_limit"),
                       "vs_monai": ratio("keras_medseg", "monai"),
                       "vs_crop_only": ratio("keras_medseg", "crop_only"),
                       "vs_crop_with_margin": ratio("keras_medseg", "crop_with_margin"),
                       "other_vs_monai": ratio("keras_medseg_other", "monai"),
                       "other_vs_warp_limit": ratio("keras_medseg_other", "warp_limit"),
                       "warp_limit_vs_scipy": ratio("warp_limit", "scipy_map_coordinates")}}


def run(preset, out_dir=None, progress=True, threads=1, backends=BACKENDS):
    """Each backend in its own process (`measure`), one after the other; their results side by side."""
    results = {}
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.json")
            env = dict(os.environ, KERAS_BACKEND=backend, OMP_NUM_THREADS=str(threads),
                       TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1",
                       XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                  f"intra_op_parallelism_threads={threads}").strip(),
                       TF_CPP_MIN_LOG_LEVEL="2")
            command = [sys.executable, os.path.abspath(__file__), "--child", out, "--preset", preset,
                       "--threads", str(threads)] + ([] if progress else ["--quiet"])
            subprocess.run(command, env=env, check=True)
            with open(out) as f:
                results[backend] = json.load(f)
    return {"preset": preset, "threads": threads, "backends": results}


def markdown(result, fig_prefix=""):
    rows = []
    for backend, r in result["backends"].items():
        rate = {k: v["patches_per_s_median"] for k, v in r["rates"].items()}
        cpu_ms = {k: 1e3 / v["patches_per_cpu_s_median"] for k, v in r["rates"].items()}
        other = "torch.compile" if r["other_setting"]["jit_compile"] is True else "uncompiled"
        q = r["ratios"]

        def goal(name, target):
            wall, cpu = q[name]["median"], q[name]["cpu_median"]
            return f"**{wall:.2f}x** / {cpu:.2f}x ({'met' if min(wall, cpu) >= target else 'not met'})"
        rows.append([backend, f"{rate['keras_medseg']:.1f} ({cpu_ms['keras_medseg']:.0f} ms)",
                     f"{rate['keras_medseg_other']:.1f} ({other}, {cpu_ms['keras_medseg_other']:.0f} ms)",
                     f"{rate['monai']:.2f} ({cpu_ms['monai']:.0f} ms)", f"{rate['crop_only']:.0f}",
                     f"{rate['crop_with_margin']:.1f} ({cpu_ms['crop_with_margin']:.0f} ms)",
                     f"{rate['warp_limit']:.0f} ({cpu_ms['warp_limit']:.1f} ms)",
                     f"{rate['scipy_map_coordinates']:.1f}",
                     goal("vs_warp_limit", GOAL_LIMIT), goal("vs_monai", GOAL_MONAI),
                     f"{r['first_batch_s']['keras_medseg']:.0f} s",
                     " / ".join(f"{a:.1f}" for a in r["load_average_before"][:1] + r["load_average_after"][:1])])
    table = markdown_table(["backend", "keras-medseg", "other setting", "MONAI", "crop (floor)",
                            "crop + worst-case margin (old design's floor)", "warp limit", "scipy warp",
                            "vs warp limit, wall / CPU (goal 0.5x)", "vs MONAI, wall / CPU (goal 10x)",
                            "first batch", "load before / after"], rows)
    any_r = next(iter(result["backends"].values()))
    s, facts = any_r["settings"], any_r["facts"]
    return (f"### Volume pipeline: pos/neg crop + affine + elastic + intensity, one worker, "
            f"{result['threads']} thread ({s['patch']}^3 patches, {len(s['shapes'])} cached volumes)\n\n"
            f"Patches per second, median of {s['repeats']} interleaved repeats of {s['patches']} patches (in "
            "brackets: CPU time per patch, which the other processes on a shared machine do not inflate); each "
            "backend in its own process, MONAI on CPU torch in each, every pipeline on one thread:\n\n"
            f"{table}\n\n"
            "keras-medseg draws the warp and the bounding box of its sampling points (exact, from the points at "
            "the elastic control nodes) in one compiled program, crops only that box (rounded up to a multiple of "
            f"16 voxels; {'x'.join(map(str, facts['box']))} for the warp limit's draw, "
            f"{_factor(facts['box'], s):.1f}x the patch's voxels), and in a second program composes the points "
            "at the patch's voxels, samples the box once (linear image, nearest labels) and applies the intensity "
            "transform (`keras_medseg.data.augment.window`; the same patches as sampling the worst-case crop, "
            "tested). "
            f"The worst-case crop, the design before, is {'x'.join(map(str, facts['region']))} "
            f"({facts['margin']} voxels each side, {_factor(facts['region'], s):.0f}x the patch's voxels): "
            "'crop + worst-case margin' is that crop and its move to the backend alone, the floor of that design. "
            "The warp limit is the compiled trilinear gather of one patch from an array of the box's size at "
            "precomputed coordinates (interpolation only: no crop, draws, coordinates, labels or intensity). "
            "'Other setting': jit_compile=False on TensorFlow and JAX, jit_compile=True (torch.compile of the "
            "sampling, one compile per box size) on torch. "
            "'First batch' includes tracing and compiling. 1 and 2 worker processes: "
            "`benchmarks/volume_workers.py` (below).\n\n"
            f"{_stages(result)}")


def _stages(result):
    """The per-stage line: where keras-medseg's CPU time per patch goes, against the warp limit's."""
    parts = []
    for backend, r in result["backends"].items():
        st = r.get("stages_cpu_ms")
        if not st:
            continue
        limit = 1e3 / r["rates"]["warp_limit"]["patches_per_cpu_s_median"]
        parts.append(f"{backend} {st['total']:.1f} ms = draw {st.get('draw', 0):.1f} + crop {st.get('crop', 0):.1f} + "
                     f"transfer {st.get('transfer', 0):.1f} + sample {st.get('sample', 0):.1f} + other "
                     f"{st.get('other', 0):.1f} (warp limit {limit:.1f} ms)")
    return ("Where keras-medseg's CPU time per patch goes (`stages_cpu_ms` in the JSON; each stage finished "
            "before the next): " + "; ".join(parts) + ". 'Draw' is the first compiled program (the warp's "
            "parameters and the extremes of its points at a few nodes, which give the box exactly), 'sample' the "
            "second (the points from the parameters, the image's trilinear gather, which alone is the warp limit, "
            "the labels' nearest gather and the intensity transforms), 'other' Python and the patch back to NumPy. "
            "What keeps the pipeline under 0.5x of the limit is measured there: beside the image gather, the "
            "labels' gather, the crop of a box about 3-5x the patch's voxels and its transfer, the points and each "
            "compiled call's fixed cost (about 1 ms on TensorFlow); on torch every stage runs eagerly "
            "(`torch.compile` of the sampling program, the other setting, costs about 20 s per box size). "
            "The dataset keeps the volumes it reads C-contiguous (NIfTI arrays come column-major, which made "
            "every box's crop a transposing copy: 2.5-2.8 ms of CPU per patch for the crop in the run before "
            "that change, 10:54 UTC)." + _torch_against_monai(result))


def _torch_against_monai(result):
    """A sentence on torch's eager pipeline and its `torch.compile` setting against MONAI, in CPU per patch."""
    r = result["backends"].get("torch")
    if not r:
        return ""
    cpu = {k: 1e3 / v["patches_per_cpu_s_median"] for k, v in r["rates"].items()}
    vs = r["ratios"]["vs_monai"]["median"]
    return (f" Torch against MONAI: MONAI's pipeline took {cpu['monai']:.0f} ms of CPU per patch in this run, torch's "
            f"eager pipeline {cpu['keras_medseg']:.0f} ms ({vs:.1f}x in wall time; goal 10x: "
            f"{'met' if vs >= GOAL_MONAI else 'not met'}), its `torch.compile` setting "
            f"{cpu['keras_medseg_other']:.0f} ms ({cpu['monai'] / cpu['keras_medseg_other']:.1f}x in CPU time).")


def _factor(shape, settings):
    return float(np.prod(shape)) / settings["patch"] ** 3


def _child(argv):
    """`--child OUT.json --preset P --threads T [--quiet]`: `measure` this process's backend into OUT.json."""
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--child")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    result = measure(args.preset, threads=args.threads, progress=not args.quiet)
    with open(args.child, "w") as f:
        json.dump(result, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(_child(sys.argv[1:]))
    sys.exit(benchmark_main(sys.modules[__name__], extra_arguments=[
        (("--threads",), {"type": int, "default": 1,
                          "help": "threads per pipeline: torch intra-op, TF intra-op, XLA (default 1)"}),
        (("--backends",), {"nargs": "+", "choices": BACKENDS, "default": list(BACKENDS),
                           "help": "Keras backends to measure, each in its own process (default: all three)"})]))
