"""Volume segmenters side by side on one real volume task (issue 30): Dice, s/step, peak memory on the CPU.

    python benchmarks/zoo3d.py                   # cpu preset: the table in benchmarks/README.md
    python benchmarks/zoo3d.py --preset smoke    # seconds, nothing written
    python benchmarks/zoo3d.py --counts          # parameter counts vs MONAI (the table in docs/zoo.md)

Task: the tissue classes of nilearn's MNI152 T1 template at 2 mm (99 x 117 x
95 voxels, shipped with nilearn, no download): background, grey matter, white
matter and CSF, the CSF being the brain-mask voxels where `1 - p_GM - p_WM`
beats nilearn's grey- and white-matter probability maps. Training sees random
32^3 patches of the left hemisphere (x < 49) only, with intensity noise;
Dice per tissue is reported on the right hemisphere (x >= 50), predicted with
keras-medseg's Gaussian-blended sliding window (32^3, overlap 0.5).

Models: the zoo's 3D `unet` at its defaults (1.40 M parameters, the anchor)
and the others configured to about its size: `imexnet` (3D defaults, 1.32 M)
and its explicit twin `resnet_seg`, `segresnet` (MONAI's default width 8,
1.18 M), `dynunet` (4 levels, widths 16-128, 1.40 M), `unetr` (hidden 96,
4 blocks, 1.40 M; only 2^3 tokens on a 32^3 patch) and `swin_unetr`
(feature size 7, heads 1-8, window 4, 1.33 M). Same budget for all: the same
patches in the same order, the same number of Adam steps (lr 1e-3), batch 2,
the same loss (Dice + cross-entropy).

Timing: one training step of each model in turn (round robin, so changes in
the machine's load hit every model alike); s/step is the median (and min) over
the steps after the first 3 (the first includes tracing). The physical limit:
the step's floating-point work (3 x the forward multiply-adds of convolutions,
dense layers and attention, counted from the layers; FFTs of the IMEX solves
as 5 N log2 N) at the machine's float32 matrix-product rate measured in the
same process, so `limit / step` is the fraction of peak the step reaches.
Peak memory: each model in a fresh subprocess, the peak resident memory while
it builds and trains 3 steps minus the resident memory before it is built, and
that minus the same for a one-convolution model (the runtime's own share).
"""

import argparse
import math
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
from _common import markdown_table, replace_block, write_results  # noqa: E402

NAME = "zoo3d"
ZOO_DOCS = os.path.join(os.path.dirname(HERE), "docs", "zoo.md")  # the docs' Model zoo page
CLASSES = ("background", "grey matter", "white matter", "CSF")
PRESETS = {
    "smoke": {"steps": 2, "batch": 1, "patch": 32, "overlap": 0.0, "warmup": 1, "memory": False,
              "models": ("unet", "segresnet")},
    "cpu": {"steps": 400, "batch": 2, "patch": 32, "overlap": 0.5, "warmup": 3, "memory": True,
            "models": ("unet", "imexnet", "resnet_seg", "segresnet", "dynunet", "unetr", "swin_unetr")},
}
CONFIGS = {
    "unet": {"spatial_dims": 3},
    "imexnet": {"spatial_dims": 3},
    "resnet_seg": {"spatial_dims": 3},
    "segresnet": {},
    "dynunet": {"kernel_size": (3, 3, 3, 3), "strides": (1, 2, 2, 2), "filters": (16, 32, 64, 128)},
    "unetr": {"hidden_size": 96, "mlp_dim": 192, "num_heads": 4, "feature_size": 8, "num_layers": 4},
    "swin_unetr": {"feature_size": 7, "num_heads": (1, 2, 4, 8), "window_size": 4},
}
SPLIT = 49  # x < 49: training hemisphere; x >= 50: held-out hemisphere (the midline slice is left out)


def tissue_volume():
    """`(image (99, 117, 95) float32 z-scored in the brain, labels (99, 117, 95) int32 in 0..3)` from nilearn."""
    from nilearn import datasets

    image = datasets.load_mni152_template(resolution=2).get_fdata().astype("float32")
    grey = datasets.load_mni152_gm_template(resolution=2).get_fdata()
    white = datasets.load_mni152_wm_template(resolution=2).get_fdata()
    brain = datasets.load_mni152_brain_mask(resolution=2).get_fdata() > 0.5
    csf = np.clip(1.0 - grey - white, 0.0, 1.0)
    labels = np.where(brain, 1 + np.argmax(np.stack([grey, white, csf]), axis=0), 0).astype("int32")
    image = (image - image[brain].mean()) / image[brain].std()
    return image, labels


def hemispheres(image, labels):
    """`((x_left, y_left), (x_right, y_right))`: the training and the held-out half along the first axis."""
    return (image[:SPLIT], labels[:SPLIT]), (image[SPLIT + 1:], labels[SPLIT + 1:])


def patch_batches(image, labels, steps, batch, patch, seed=0, noise=0.1):
    """`steps` batches `(x (B, p, p, p, 1), y (B, p, p, p))` of random patches with Gaussian intensity noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(batch):
            corner = [int(rng.integers(0, s - patch + 1)) for s in image.shape]
            sl = tuple(slice(c, c + patch) for c in corner)
            xs.append(image[sl] + rng.normal(0.0, noise, (patch,) * 3).astype("float32"))
            ys.append(labels[sl])
        out.append((np.stack(xs)[..., None].astype("float32"), np.stack(ys)))
    return out


def build(name, patch, num_classes=len(CLASSES)):
    """The zoo model of `CONFIGS[name]` for `patch`^3 inputs, compiled with Adam(1e-3) and Dice + CE."""
    import keras

    from keras_medseg import zoo
    from keras_medseg.losses import DiceCELoss
    from keras_medseg.metrics import segmentation_metrics

    kwargs = {**CONFIGS[name], "input_size": patch}
    model = zoo.build(name, num_classes=num_classes, **kwargs)
    jit = model.jit_compile  # the zoo's choice (IMEXnet turns XLA off on TensorFlow)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=DiceCELoss(), metrics=segmentation_metrics(num_classes),
                  jit_compile=jit)
    return model


def forward_flops(model, patch):
    """Multiply-adds x 2 of one forward pass of one `patch`^3 sample (convolutions, dense, attention, FFTs)."""
    from keras_medseg.layers import IMEXBlock, WindowAttention

    total = 0.0
    for layer in model.layers:
        kind = type(layer).__name__
        out = layer.output.shape
        voxels = math.prod(s for s in out[1:-1] if s is not None)
        if kind.startswith("Conv") and "Transpose" not in kind:
            k = math.prod(layer.kernel.shape[:-1])
            total += 2.0 * k * out[-1] * voxels
        elif "Transpose" in kind:
            inp = layer.input.shape
            total += 2.0 * math.prod(layer.kernel.shape) * math.prod(inp[1:-1])
        elif kind == "Dense":
            total += 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1] * voxels
        elif isinstance(layer, WindowAttention):
            c = out[-1]
            window = math.prod(layer.window_size * (len(out) - 2) if len(layer.window_size) == 1
                               else layer.window_size) if layer.window_size else voxels
            window = min(window, voxels)
            total += 2.0 * voxels * c * 4 * c + 4.0 * voxels * window * c
        elif isinstance(layer, IMEXBlock):
            k = math.prod(layer.kernel_1.shape[:-1])
            total += 2 * 2.0 * k * layer.filters * voxels
            if layer.implicit:
                total += 2 * 5.0 * voxels * math.log2(max(voxels, 2)) * layer.filters
    return total


def matmul_rate(repeats=5, n=1024):
    """The float32 matrix-product rate of the active backend (FLOP/s, best of `repeats`)."""
    import keras

    a = keras.ops.convert_to_tensor(np.random.default_rng(0).standard_normal((n, n)).astype("float32"))
    best = math.inf
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, a))
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def dice_per_class(labels, prediction, num_classes=len(CLASSES)):
    """Dice of each foreground class (1 .. K-1) pooled over the volume."""
    out = []
    for c in range(1, num_classes):
        t, p = labels == c, prediction == c
        denom = t.sum() + p.sum()
        out.append(1.0 if denom == 0 else float(2.0 * np.logical_and(t, p).sum() / denom))
    return out


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _null_model(patch):
    """One 1x1x1 convolution to the classes, compiled like the others: the runtime's own share of the memory."""
    import keras

    from keras_medseg.losses import DiceCELoss

    inputs = keras.Input((patch,) * 3 + (1,))
    outputs = keras.layers.Conv3D(len(CLASSES), 1, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=DiceCELoss())
    return model


def memory_probe(name, patch, batch, steps=3):
    """Run in a fresh process: build `name` ("null": one 1x1x1 convolution), train `steps` steps.

    Returns the peak resident memory minus the resident memory before building (bytes).
    """
    image, labels = tissue_volume()
    (xl, yl), _ = hemispheres(image, labels)
    batches = patch_batches(xl, yl, steps, batch, patch, seed=1)
    before = _rss_bytes()
    # the lifetime peak (ru_maxrss) is set by loading and resampling the template, the same for every model:
    # reset the process's high-water mark here (Linux >= 4.0: "5" to clear_refs) and read VmHWM afterwards
    reset = _reset_peak()
    model = _null_model(patch) if name == "null" else build(name, patch)
    for x, y in batches:
        model.train_on_batch(x, y)
    peak = _peak_bytes() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return peak - before


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def run(preset, progress=True):
    import keras

    from keras_medseg.inference import sliding_window

    s = PRESETS[preset]
    image, labels = tissue_volume()
    (xl, yl), (xr, yr) = hemispheres(image, labels)
    batches = patch_batches(xl, yl, s["steps"], s["batch"], s["patch"])
    models = {n: build(n, s["patch"]) for n in s["models"]}
    params = {n: int(m.count_params()) for n, m in models.items()}
    flops = {n: 3.0 * s["batch"] * forward_flops(m, s["patch"]) for n, m in models.items()}
    times = {n: [] for n in models}
    losses = {n: [] for n in models}
    for step, (x, y) in enumerate(batches):
        for n, m in models.items():
            t0 = time.perf_counter()
            logs = m.train_on_batch(x, y, return_dict=True)
            times[n].append(time.perf_counter() - t0)
            losses[n].append(float(logs["loss"]))
        if progress:
            print(f"step {step + 1}/{s['steps']}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in models),
                  file=sys.stderr, flush=True)
    rate = matmul_rate()
    results = {}
    for n, m in models.items():
        t0 = time.perf_counter()
        probs = sliding_window(m, xr[..., None], patch=(s["patch"],) * 3, overlap=s["overlap"], batch_size=4)
        predict_s = time.perf_counter() - t0
        dice = dice_per_class(yr, np.argmax(probs, axis=-1))
        steady = times[n][s["warmup"]:] or times[n]
        k = max(1, min(10, len(losses[n]) // 4))
        results[n] = {
            "params": params[n], "config": {k2: list(v) if isinstance(v, tuple) else v
                                            for k2, v in CONFIGS[n].items()},
            "dice": dict(zip(CLASSES[1:], dice)), "mean_dice": float(np.mean(dice)),
            "step_s_median": float(np.median(steady)), "step_s_min": float(np.min(steady)),
            "first_step_s": times[n][0], "train_flops_per_step": flops[n],
            "limit_s": flops[n] / rate, "loss_first": float(np.mean(losses[n][:k])),
            "loss_last": float(np.mean(losses[n][-k:])), "predict_s": predict_s, "losses": losses[n],
        }
    anchor = results.get("unet", next(iter(results.values())))
    for r in results.values():
        r["step_vs_unet_median"] = r["step_s_median"] / anchor["step_s_median"]
    if s["memory"]:
        for n in ("null", *models):
            out = subprocess.run([sys.executable, __file__, "--memory-probe", n, "--patch", str(s["patch"]),
                                  "--batch", str(s["batch"])], capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                     [os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])})
            peak = int(out.stdout.strip().splitlines()[-1])
            if n == "null":
                null_peak = peak
            else:
                results[n]["peak_memory_bytes"] = peak
                results[n]["peak_memory_above_null_bytes"] = peak - null_peak
            if progress:
                print(f"memory {n}: {peak / 2**20:.0f} MiB", file=sys.stderr, flush=True)
    return {"preset": preset, "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()},
            "backend": keras.backend.backend(), "matmul_flops_per_s": rate, "load_average": os.getloadavg(),
            "train_voxels": int(yl.size), "test_voxels": int(yr.size),
            "class_voxels_test": {c: int((yr == i).sum()) for i, c in enumerate(CLASSES)}, "models": results}


def markdown(result, fig_prefix=""):
    s, res = result["settings"], result["models"]
    rows = []
    for n, r in res.items():
        mem = (f"{r['peak_memory_bytes'] / 2**20:,.0f} ({r['peak_memory_above_null_bytes'] / 2**20:,.0f})"
               if "peak_memory_bytes" in r else "-")
        d = r["dice"]
        rows.append([f"`{n}`", f"{r['params']:,}", f"{d['grey matter']:.3f}", f"{d['white matter']:.3f}",
                     f"{d['CSF']:.3f}", f"{r['mean_dice']:.3f}", f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}",
                     f"{r['step_s_median']:.2f} / {r['step_s_min']:.2f}", f"{r['step_vs_unet_median']:.2f}x",
                     f"{r['limit_s'] / r['step_s_median']:.1%}", mem])
    table = markdown_table(["model", "params", "Dice GM", "Dice WM", "Dice CSF", "mean Dice", "loss (first -> last 10)",
                            "s/step median / min", "vs unet", "limit / step", "peak MiB (above null)"], rows)
    la = ", ".join(f"{v:.1f}" for v in result["load_average"])
    cfg = "; ".join(f"`{n}` {', '.join(f'{k}={v}' for k, v in r['config'].items()) or 'defaults'}"
                    for n, r in res.items())
    return (
        f"{table}\n\nMNI152 tissue classes (nilearn template, 2 mm): {s['steps']} Adam steps (lr 1e-3, Dice + "
        f"cross-entropy) of batch {s['batch']} on random {s['patch']}^3 patches of the left hemisphere, the same "
        f"patches in the same order for every model; Dice on the held-out right hemisphere ({result['test_voxels']:,} "
        f"voxels), sliding window {s['patch']}^3 with overlap {s['overlap']}. Steps interleaved model by model; s/step "
        f"over the steps after the first {s['warmup']}; 'limit / step' is the step's counted floating-point work at "
        f"this machine's float32 matrix-product rate ({result['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s) divided by "
        f"the median step; peak MiB: resident memory of a fresh process building the model and training 3 steps, "
        f"above what it held before building (in brackets: minus the same for a single 1x1x1 convolution, the "
        f"backend runtime's own share). Configurations: {cfg}. CPU only, {result['backend']}; the machine was "
        f"shared (load average at the end {la}), so absolute times are upper bounds and the ratios (interleaved) "
        f"are the stable numbers.")


# ---- parameter counts against MONAI (`--counts`) ----------------------------------------------------------------

COUNT_CASES = [
    # (row label, our builder + arguments, MONAI class + arguments, note)
    ("SegResNet, BraTS (Myronenko 2018): 3D, width 32, 4 -> 3 channels", ("segresnet", {
        "init_filters": 32, "in_channels": 4, "num_classes": 3}), ("SegResNet", {
        "spatial_dims": 3, "init_filters": 32, "in_channels": 4, "out_channels": 3}), ""),
    ("SegResNet, 2D, MONAI defaults", ("segresnet", {"spatial_dims": 2}), ("SegResNet", {
        "spatial_dims": 2, "init_filters": 8, "in_channels": 1, "out_channels": 2}), ""),
    ("UNETR, BTCV (Hatamizadeh 2022): 96^3, ViT-B/16, 14 classes", ("unetr", {"num_classes": 14}), ("UNETR", {
        "in_channels": 1, "out_channels": 14, "img_size": 96, "feature_size": 16, "hidden_size": 768,
        "mlp_dim": 3072, "num_heads": 12}), "MONAI builds an unused `norm_cross_attn` layer norm in each of the "
                                            "12 blocks: 12 x 2 x 768"),
    ("UNETR, 2D 64^2", ("unetr", {"spatial_dims": 2, "input_size": 64}), ("UNETR", {
        "in_channels": 1, "out_channels": 2, "img_size": 64, "spatial_dims": 2}), "as above"),
    ("Swin UNETR, BraTS (Hatamizadeh 2021): feature size 48, 4 -> 3 channels", ("swin_unetr", {
        "in_channels": 4, "num_classes": 3, "feature_size": 48}), ("SwinUNETR", {
        "in_channels": 4, "out_channels": 3, "feature_size": 48}), ""),
    ("Swin UNETR, 2D, feature size 24", ("swin_unetr", {"spatial_dims": 2}), ("SwinUNETR", {
        "in_channels": 1, "out_channels": 2, "feature_size": 24, "spatial_dims": 2}), ""),
    ("DynUNet, nnU-Net 3D full-resolution plan (6 levels, widths 32-320), 2 deep-supervision heads", ("dynunet", {
        "deep_supervision": True, "deep_supr_num": 2}), ("DynUNet", {
        "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "kernel_size": [3] * 6,
        "strides": [1, 2, 2, 2, 2, 2], "upsample_kernel_size": [2] * 5, "deep_supervision": True,
        "deep_supr_num": 2}), ""),
    ("DynUNet, 2D (6 levels, widths 32-512)", ("dynunet", {"spatial_dims": 2}), ("DynUNet", {
        "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "kernel_size": [3] * 6,
        "strides": [1, 2, 2, 2, 2, 2], "upsample_kernel_size": [2] * 5}), ""),
]


def parameter_counts():
    """Rows `(label, ours, monai, difference, note)`: our count and MONAI's for each published configuration."""
    import monai
    from monai.networks import nets

    from keras_medseg import zoo

    rows = []
    for label, (name, kwargs), (cls, monai_kwargs), note in COUNT_CASES:
        ours = int(zoo.build(name, **kwargs).count_params())
        theirs = int(sum(p.numel() for p in getattr(nets, cls)(**monai_kwargs).parameters()))
        rows.append((label, f"`zoo.build(\"{name}\", {', '.join(f'{k}={v!r}' for k, v in kwargs.items())})`",
                     ours, theirs, ours - theirs, note or "-"))
    return rows, monai.__version__


def counts_markdown(rows, monai_version):
    table = markdown_table(["configuration", "keras-medseg", "ours", f"MONAI {monai_version}", "difference",
                            "why"], [[r[0], r[1], f"{r[2]:,}", f"{r[3]:,}", f"{r[4]:,}", r[5]] for r in rows])
    return (f"{table}\n\n_Produced by `python benchmarks/zoo3d.py --counts` (MONAI's networks built with the same "
            f"configuration, `sum(p.numel() for p in net.parameters())`); `tests/zoo/test_volume_params.py` "
            f"checks the same numbers._")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--counts", action="store_true", help="parameter counts vs MONAI into docs/zoo.md, then exit")
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--patch", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    args = p.parse_args(argv)
    if args.memory_probe:
        print(memory_probe(args.memory_probe, args.patch, args.batch))
        return 0
    if args.counts:
        rows, version = parameter_counts()
        body = counts_markdown(rows, version)
        replace_block(ZOO_DOCS, "zoo3d_params", body)
        print(body)
        return 0
    result = run(args.preset, progress=not args.quiet)
    md = markdown(result)
    if args.preset != "smoke":
        write_results(NAME, result, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
