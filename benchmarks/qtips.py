"""IMEXnet vs its explicit twin (ResNet) on the Q-tips set: per-class IoU, accuracy, loss curves, time.

    python benchmarks/qtips.py                    # --preset cpu: reduced width, about 25-30 min on 2 CPU cores
    python benchmarks/qtips.py --preset paper     # the paper's setting (for a GPU)
    python benchmarks/qtips.py --preset smoke     # seconds; numbers meaningless (CI)

Both networks come from the same builder (`keras_medseg.zoo.imex_segmenter`)
with the same settings; the only difference is the block: IMEX step
`Y+ = Y + h (I + hL)^-1 f(Y)` (`imexnet`) vs forward Euler `Y+ = Y + h f(Y)`
(`resnet_seg`), so the parameter counts differ only by the depthwise `L`
kernels. Data: `keras_medseg.data.synthetic.qtips`, 1024 training / 64 validation
images of 64x64 (different seeds), as in the paper.

What the talk reported (Haber, Lensink, Ruthotto, Treister, "Semi-Implicit
Convolutional Neural Networks", CSE19, "Q-tips Results"): IMEXnet 2,701,440
parameters, IoU 0.926, loss 0.0982, accuracy 99.56 %; ResNet 2,691,648
parameters, IoU 0.741, loss 0.3332, accuracy 98.18 %.

Presets:

* `paper`: stages ((4, 64), (4, 128), (4, 256)), h = 1, 2x coarsening
  between stages, batch norm, SGD lr 1e-3, batch 8, 100 epochs, the
  builder's default (Glorot) `L` initialisation.
* `cpu`: stages ((2, 16), (2, 32)) at full resolution (no coarsening, so
  the ResNet's receptive field, radius 9 px, stays far smaller than a
  32-60 px rod while every implicit solve is global), layer norm (batch norm
  collapsed the validation predictions of both nets in short runs; instance
  norm would leak image-wide statistics into the ResNet), Adam lr 3e-3,
  batch 16, 20 epochs, fully class-balanced pixel weights (power 1), the
  builder's default `L` initialisation. About 25 min for both nets on 2 quiet
  CPU cores (IMEXnet ~45-60 s and ResNet ~25-37 s per epoch of 1024 images).
  Short screening runs (256 / 8 and 512 images / 6 epochs) showed no gap
  between the nets; in the full preset the IMEXnet's validation IoU rose
  late (in the last few epochs), so fewer epochs can lose the gap. The
  numbers of the last run are on benchmarks/RESULTS.md.
  `l_init="multiscale"` (scaled-Laplacian `L` with diffusion lengths from
  1 px to the image size, `multiscale_laplacian_kernel`) is available as an
  override but did worse than the default in that screening.
* `smoke`: 16/8 images of 32x32, 1 epoch, tiny stages.
"""

import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import RESULTS_DIR, benchmark_main, markdown_table  # noqa: E402

NAME = "qtips"
NETS = ("imexnet", "resnet_seg")
CLASS_NAMES = ("background", "class 1 (bright/bright)", "class 2 (bright/dark)", "class 3 (dark/dark)")
SEED_RESULTS = {"imexnet": {"params": 2701440, "iou": 0.926, "loss": 0.0982, "accuracy": 0.9956},
                "resnet_seg": {"params": 2691648, "iou": 0.741, "loss": 0.3332, "accuracy": 0.9818}}
TARGET_GAP = 0.1

PRESETS = {
    "smoke": {
        "n_train": 16, "n_val": 8, "size": 32, "train_seed": 0, "val_seed": 1, "seed": 0,
        "stages": [[1, 4], [1, 8]], "h": 1.0, "kernel_size": 3, "normalization": "layer", "coarsen": False,
        "optimizer": "adam", "learning_rate": 3e-3, "batch_size": 8, "epochs": 1, "class_balance": 0.5,
        "l_init": "multiscale", "l_min_length": 1.0,
    },
    "cpu": {
        "n_train": 1024, "n_val": 64, "size": 64, "train_seed": 0, "val_seed": 1, "seed": 0,
        "stages": [[2, 16], [2, 32]], "h": 1.0, "kernel_size": 3, "normalization": "layer", "coarsen": False,
        "optimizer": "adam", "learning_rate": 3e-3, "batch_size": 16, "epochs": 20, "class_balance": 1.0,
        "l_init": "default", "l_min_length": 1.0,
    },
    "paper": {
        "n_train": 1024, "n_val": 64, "size": 64, "train_seed": 0, "val_seed": 1, "seed": 0,
        "stages": [[4, 64], [4, 128], [4, 256]], "h": 1.0, "kernel_size": 3, "normalization": "batch",
        "coarsen": True, "optimizer": "sgd", "learning_rate": 1e-3, "batch_size": 8, "epochs": 100,
        "class_balance": 0.0, "l_init": "default", "l_min_length": 1.0,
    },
}
L_INITS = ("default", "multiscale")
OPTIMIZERS = ("adam", "sgd")


def get_settings(preset, overrides=None):
    """The settings dict of `preset` (a copy), updated with `overrides`.

    Raises:
        ValueError: unknown preset, unknown override key, or a bad `l_init` / `optimizer`.
    """
    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(PRESETS)}. Received: preset={preset!r}")
    settings = copy.deepcopy(PRESETS[preset])
    for key, value in (overrides or {}).items():
        if key not in settings:
            raise ValueError(f"Unknown setting in `overrides`: {key!r}. Known: {sorted(settings)}")
        settings[key] = value
    if settings["l_init"] not in L_INITS:
        raise ValueError(f"`l_init` must be one of {L_INITS}. Received: l_init={settings['l_init']!r}")
    if settings["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}. Received: optimizer={settings['optimizer']!r}")
    return settings


def multiscale_laplacian_kernel(width, grid, h, min_length=1.0, rank=2):
    """`L`-kernel initialisation: scaled Laplacian stencils, one diffusion length per channel.

    Channel `c` gets `C_c = s_c * Laplacian` (the 3x3 / 3x3x3 5- / 7-point
    stencil), so `I + hL = I + h s_c^2 Laplacian^2` damps the Fourier mode of
    wave number `k` by `1 / (1 + h s_c^2 |k|^4)` (to leading order) and passes
    the image mean untouched. `s_c = length_c^2 / sqrt(h)` puts the half-damping
    at `|k| = 1 / length_c`; the lengths run log-uniformly from `min_length`
    to `grid` pixels over the channels, so some channels stay local and some
    average over the whole image.

    Args:
        width: number of channels.
        grid: largest spatial size of the block's input (pixels).
        h: the block's step size.
        min_length: smallest diffusion length (pixels, default 1).
        rank: 2 or 3 spatial dims.

    Returns:
        float32 array `(3,) * rank + (width,)`.
    """
    import keras

    from keras_medseg.layers import MultiscaleLaplacian

    init = MultiscaleLaplacian(max_length=grid, h=h, min_length=min_length)
    return keras.ops.convert_to_numpy(init((3,) * rank + (width,), dtype="float32"))


def build_models(settings):
    """`{name: compiled model}` for both nets, same settings, seeded alike."""
    import keras

    from keras_medseg.layers import IMEXBlock
    from keras_medseg.metrics import segmentation_metrics
    from keras_medseg.zoo.imexnet import imex_segmenter

    models = {}
    for name in NETS:
        keras.utils.set_random_seed(settings["seed"])
        model = imex_segmenter(implicit=name == "imexnet", input_size=settings["size"], num_classes=4,
                               stages=tuple(tuple(s) for s in settings["stages"]),
                               kernel_size=settings["kernel_size"], h=settings["h"],
                               normalization=settings["normalization"], coarsen=settings["coarsen"],
                               learning_rate=settings["learning_rate"], name=name)
        if name == "imexnet" and settings["l_init"] == "multiscale":
            if settings["kernel_size"] != 3:
                raise ValueError(f"`l_init='multiscale'` needs kernel_size=3. Received: "
                                 f"kernel_size={settings['kernel_size']!r}")
            for layer in model.layers:
                if isinstance(layer, IMEXBlock):
                    grid = max(layer.input.shape[1:-1])
                    layer.implicit_kernel.assign(multiscale_laplacian_kernel(
                        layer.filters, grid, settings["h"], settings["l_min_length"]))
        if settings["optimizer"] == "sgd":
            optimizer = keras.optimizers.SGD(settings["learning_rate"])
        else:
            optimizer = keras.optimizers.Adam(settings["learning_rate"])
        jit = False if keras.backend.backend() == "tensorflow" else "auto"
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=segmentation_metrics(4), jit_compile=jit)
        models[name] = model
    return models


def run(preset="cpu", out_dir=None, progress=True, overrides=None):
    """Train both nets on Q-tips with the `preset` settings; returns the result dict (see module doc)."""
    import keras
    import numpy as np

    from keras_medseg.data import qtips
    from keras_medseg.metrics import dice_iou_table
    from keras_medseg.plotting import history_plot, prediction_grid
    from keras_medseg.training import class_balance_weights

    settings = get_settings(preset, overrides)
    out_dir = out_dir or os.path.join(RESULTS_DIR, NAME)
    os.makedirs(out_dir, exist_ok=True)
    start = time.perf_counter()

    x_train, y_train = qtips(settings["n_train"], size=settings["size"], seed=settings["train_seed"], normalize=True)
    x_val, y_val = qtips(settings["n_val"], size=settings["size"], seed=settings["val_seed"], normalize=True)
    weights = None
    if settings["class_balance"] > 0:
        weights = class_balance_weights(y_train, 4, power=settings["class_balance"])

    models = build_models(settings)
    nets, histories, predictions = {}, {}, {}
    for name, model in models.items():
        keras.utils.set_random_seed(settings["seed"])
        t0 = time.perf_counter()
        hist = model.fit(x_train, y_train, sample_weight=weights, validation_data=(x_val, y_val),
                         batch_size=settings["batch_size"], epochs=settings["epochs"], shuffle=True,
                         verbose=1 if progress else 0)
        seconds = time.perf_counter() - t0
        probs = model.predict(x_val, batch_size=settings["batch_size"], verbose=0)
        pred = np.argmax(probs, axis=-1).astype(np.int32)
        table = dice_iou_table(y_val, pred, num_classes=4)
        iou = [float(v) for v in table["iou"]]
        val_loss = float(model.evaluate(x_val, y_val, batch_size=settings["batch_size"], verbose=0,
                                        return_dict=True)["loss"])
        model_file = f"{name}.keras"
        model.save(os.path.join(out_dir, model_file))
        histories[name] = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        predictions[name] = pred
        nets[name] = {
            "params": int(model.count_params()),
            "iou": iou,
            "dice": [float(v) for v in table["dice"]],
            "mean_iou_all": float(np.nanmean(iou)),
            "mean_iou_rods": float(np.nanmean(iou[1:])),
            "accuracy": float(table["accuracy"]),
            "val_loss": val_loss,
            "seconds": float(seconds),
            "model_file": model_file,
            "history": {k: histories[name][k] for k in ("loss", "val_loss") if k in histories[name]},
        }

    figures = []
    fig = history_plot(histories, metrics=("loss", "mean_iou"))
    fig.savefig(os.path.join(out_dir, "loss_curves.png"), dpi=100)
    figures.append("loss_curves.png")
    rows = min(4, settings["n_val"])
    fig = prediction_grid(x_val[:rows], y_val[:rows], {n: predictions[n][:rows] for n in NETS}, max_rows=rows,
                          num_classes=4, titles=["image", "labels", "IMEXnet", "ResNet"])
    fig.savefig(os.path.join(out_dir, "predictions.png"), dpi=100)
    figures.append("predictions.png")

    imex, res = nets["imexnet"], nets["resnet_seg"]
    return {
        "preset": preset,
        "settings": settings,
        "seconds": float(time.perf_counter() - start),
        "figures": figures,
        "class_names": list(CLASS_NAMES),
        "nets": nets,
        "param_difference": int(imex["params"] - res["params"]),
        "gap_mean_iou_all": float(imex["mean_iou_all"] - res["mean_iou_all"]),
        "gap_mean_iou_rods": float(imex["mean_iou_rods"] - res["mean_iou_rods"]),
        "target_gap": TARGET_GAP,
        "seed_results": SEED_RESULTS,
    }


def receptive_field(settings):
    """Radius (pixels, input resolution) of the explicit net's receptive field."""
    k = settings["kernel_size"] // 2
    radius, scale = k, 1  # stem
    for i, (blocks, _) in enumerate(settings["stages"]):
        if i > 0 and settings["coarsen"]:
            scale *= 2
            radius += scale // 2
        radius += 2 * k * blocks * scale
    return radius


def headline(result):
    """One line for the top of RESULTS.md and the README, computed from `result`."""
    imex, res = result["nets"]["imexnet"], result["nets"]["resnet_seg"]
    gap = result["gap_mean_iou_all"]
    return (f"mean IoU IMEXnet {imex['mean_iou_all']:.3f} vs ResNet {res['mean_iou_all']:.3f} (3 rod classes: "
            f"{imex['mean_iou_rods']:.3f} vs {res['mean_iou_rods']:.3f}) at {imex['params']:,} vs "
            f"{res['params']:,} parameters; gap {gap:+.3f}, target >= {result['target_gap']} "
            + ("met." if gap >= result["target_gap"] else "NOT met."))


def markdown(result, fig_prefix=""):
    """The RESULTS.md section body for a `run` result."""
    s = result["settings"]
    nets = result["nets"]
    imex, res = nets["imexnet"], nets["resnet_seg"]
    lines = [
        f"`imexnet` vs `resnet_seg` (preset `{result['preset']}`) on Q-tips: {s['n_train']} training / "
        f"{s['n_val']} validation images of {s['size']}x{s['size']} px (seeds {s['train_seed']} / {s['val_seed']}), "
        f"stages {[tuple(x) for x in s['stages']]}, h = {s['h']}, {s['normalization']} norm, "
        f"{'2x coarsening between stages' if s['coarsen'] else 'full resolution (no coarsening)'}, "
        f"{s['optimizer'].upper()} lr {s['learning_rate']:g}, batch {s['batch_size']}, {s['epochs']} epochs, "
        + (f"class-balanced pixel weights (power {s['class_balance']:g}), " if s["class_balance"] > 0
           else "unweighted loss, ")
        + ("`L` initialised as multiscale Laplacians (see the module docstring)."
           if s["l_init"] == "multiscale" else "`L` with the builder's default initialisation.")
        + f" Total time {result['seconds'] / 60:.1f} min.",
        "",
        ("IoU on the validation set (argmax of the softmax); mean IoU is reported over all 4 classes and over "
         "the 3 rod classes (the talk does not say which it used)."),
        "",
    ]
    header = ["network", "parameters"] + list(result["class_names"]) + [
        "mean IoU (4 classes)", "mean IoU (3 rods)", "pixel accuracy", "val loss", "train time (s)"]
    rows = []
    for name, label in (("imexnet", "IMEXnet"), ("resnet_seg", "ResNet")):
        n = nets[name]
        rows.append([label, n["params"]] + [float(v) for v in n["iou"]] + [
            n["mean_iou_all"], n["mean_iou_rods"], n["accuracy"], n["val_loss"], round(n["seconds"], 1)])
    lines.append(markdown_table(header, rows))
    seed = result["seed_results"]
    lines += [
        "",
        "The talk's table for comparison (paper setting, GPU):",
        "",
        markdown_table(["network", "parameters", "IoU", "loss", "accuracy"], [
            ["IMEXnet", seed["imexnet"]["params"], seed["imexnet"]["iou"], seed["imexnet"]["loss"],
             seed["imexnet"]["accuracy"]],
            ["ResNet", seed["resnet_seg"]["params"], seed["resnet_seg"]["iou"], seed["resnet_seg"]["loss"],
             seed["resnet_seg"]["accuracy"]]]),
        "",
        f"![Training (solid) and validation (dashed) loss and mean IoU per epoch]({fig_prefix}{result['figures'][0]})",
        "",
        "Loss curves: training (solid) and validation (dashed) per epoch, both nets"
        + (" (the training loss carries the class-balanced pixel weights, the validation loss does not)."
           if s["class_balance"] > 0 else "."),
        "",
        f"![Validation images, labels, IMEXnet and ResNet predictions]({fig_prefix}{result['figures'][1]})",
        "",
    ]
    gap_all, gap_rods, target = result["gap_mean_iou_all"], result["gap_mean_iou_rods"], result["target_gap"]
    ahead = "ahead of" if gap_all > 0 else ("level with" if gap_all == 0 else "behind")
    meets = gap_all >= target and gap_rods >= target
    seed_gap = seed["imexnet"]["iou"] - seed["resnet_seg"]["iou"]
    rf = receptive_field(s)
    text = (
        f"**What this shows.** IMEXnet is {ahead} the ResNet by {gap_all:+.3f} mean IoU over all classes "
        f"({gap_rods:+.3f} over the rod classes); the talk reports {seed_gap:+.3f} "
        f"({seed['imexnet']['iou']} vs {seed['resnet_seg']['iou']}). "
        f"This {'meets' if meets else 'does not meet'} the target of IMEXnet ahead by at least {target} on both means. "
        f"The two nets differ by {result['param_difference']} parameters ("
        f"{100 * result['param_difference'] / res['params']:.2f} % of the ResNet's {res['params']}), exactly the "
        f"depthwise `L` kernels of the implicit blocks. The ResNet's receptive field has a radius of {rf} px, "
        f"while rods are {s['size'] // 2}-{min(15 * s['size'] // 16, s['size'] - 4)} px long, so "
        + ("it cannot see both markers of most rods and must guess the class of rod pixels far from one end; "
           if 2 * rf < s["size"] // 2 else "it can in principle see both markers; ")
        + "the implicit solve couples every pixel of the image in every block. "
    )
    if s["stages"] == [list(x) for x in ((4, 64), (4, 128), (4, 256))]:
        text += (
            f"At the paper's widths this builder has {imex['params']} parameters against the talk's "
            f"{seed['imexnet']['params']} ({imex['params'] / seed['imexnet']['params']:.2f}x): every block here "
            "has two full 3x3 convolutions; the talk does not give its block layout. "
        )
    if result["preset"] != "paper":
        text += (
            f"This is a reduced setting ({imex['params']} instead of {seed['imexnet']['params']} parameters, "
            f"{s['epochs']} instead of 100 epochs), so the absolute IoUs are "
            f"{'below' if imex['mean_iou_all'] < seed['imexnet']['iou'] else 'not below'} the talk's; "
            "the comparison that matters is the ordering and the gap at equal settings."
        )
        if not meets:
            text += f" The gap falls short of the target of {target}."
            bg = min(imex["iou"][0], res["iou"][0])
            rods = max(imex["mean_iou_rods"], res["mean_iou_rods"])
            if bg > rods + 0.3:
                text += (
                    f" Both nets find the rods (background IoU >= {bg:.3f}) but mostly confuse their class "
                    f"(rod-class IoUs IMEXnet {', '.join(f'{v:.3f}' for v in imex['iou'][1:])}; ResNet "
                    f"{', '.join(f'{v:.3f}' for v in res['iou'][1:])}): in {s['epochs']} epochs neither learned to "
                    "combine the two marker values, which for the IMEXnet means carrying them along the rod through "
                    "the implicit solves; the paper trains 100 epochs at about 100x the width."
                )
    lines.append(text)
    return "\n".join(lines)


def main(argv=None):
    return benchmark_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
