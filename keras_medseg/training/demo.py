"""The main job: IMEXnet vs its explicit twin (ResNet) on Q-tips, trained side by side.

`qtips_demo` is the library function behind `keras-medseg demo`. Both networks
come from one builder (`keras_medseg.zoo.imex_segmenter`) with the same
settings and seed; they differ only in the block (IMEX step with the implicit
FFT solve vs forward Euler), i.e. by the depthwise `L` kernels.

Default setting (chosen so the paper's direction shows in minutes on 2 CPU
cores): 1024 training / 64 validation Q-tips images of 48 x 48 px (rods 24-44
px long, far beyond the ResNet's receptive field of radius 9 px), stages
`((2, 16), (2, 32))` at full resolution, layer normalisation, `L` initialised as
multiscale Laplacians (`keras_medseg.layers.MultiscaleLaplacian`: diffusion
lengths from 1 px to the image size), Adam with a 10 % warm-up to 1e-2 and a
cosine decay to 0 over 10 epochs, batch 16, fully class-balanced pixel weights
in the training loss (the validation loss and all IoUs are unweighted).

Reference: Haber, Lensink, Treister, Ruthotto, "IMEXnet: A forward stable deep
neural network", ICML 2019 (the Q-tips experiment).
"""

import math
import os
import time

import numpy as np

DEMO_MODELS = ("imexnet", "resnet_seg")
# The README's headline (benchmarks/run_all.py --preset cpu), quoted by the demo's last sentence.
HEADLINE = {"imexnet": 0.643, "resnet_seg": 0.309, "what": "mean IoU on the 3 rod classes, 20-epoch `cpu` preset"}


def demo_settings(fast=False):
    """`(data, fit, model)` keyword dicts of the demo (`fast=True`: seconds, for tests)."""
    model = dict(stages=((2, 16), (2, 32)), coarsen=False, normalization="layer", learning_rate=1e-2,
                 l_init="multiscale", h=1.0)
    if fast:
        return (dict(n_train=16, n_val=8, size=32), dict(epochs=1, batch_size=8, class_balance=1.0),
                dict(model, stages=((1, 4), (1, 8))))
    return (dict(n_train=1024, n_val=64, size=48), dict(epochs=10, batch_size=16, class_balance=1.0), model)


def comparison_sentence(gap, headline=HEADLINE):
    """One plain sentence comparing the demo's rod-class gap with the README headline."""
    ref = headline["imexnet"] - headline["resnet_seg"]
    if gap >= 0.1:
        verdict = "the same direction as"
    elif gap > 0:
        verdict = "the same direction as, but a smaller gap than,"
    else:
        verdict = "NOT the direction of"
    return (f"IMEXnet is {'ahead of' if gap > 0 else 'not ahead of'} ResNet by {gap:+.3f} mean IoU on the 3 rod "
            f"classes, {verdict} the README headline ({headline['imexnet']:.3f} vs {headline['resnet_seg']:.3f}, "
            f"{ref:+.3f}, {headline['what']}).")


def qtips_demo(out_dir=os.path.join("runs", "demo"), seed=0, fast=False, epochs=None, n_train=None, verbose=1,
               on_model=None):
    """Train `imexnet` and `resnet_seg` on Q-tips with the demo settings; score, plot and save both.

    Args:
        out_dir: output folder (created): `predictions.png` (with a colour
            key), `history.png`, `imexnet.keras`, `resnet_seg.keras` (the
            trained models), and one run folder per model (`imexnet/`,
            `resnet_seg/`: `log.csv`, `best.keras` by validation loss,
            `backup/`) from the fit runner (`keras_medseg.training.runner`),
            started afresh each time.
        seed: seed of the data (training set `seed`, validation set
            `seed + 1000`), the weights and the shuffling (default 0).
        fast: tiny sizes for tests (default False).
        epochs, n_train: overrides of the default 10 epochs / 1024 images.
        verbose: Keras verbosity (1 = progress bar, default).
        on_model: optional callable `on_model(name, kwargs)` called before each
            network is trained (the command prints a header with it).

    Returns:
        dict: `nets` (per name: `table` (dice_iou_table), `mean_iou_rods`,
        `params`, `seconds`, `cpu_seconds`, `checkpoint`), `gap` (IMEXnet -
        ResNet mean IoU on the rod classes), `sentence`, `class_names`,
        `settings`, `plots`, `seconds` (total), `cpu_seconds` (total process
        CPU time, all threads).

    Example:

    >>> result = keras_medseg.training.demo.qtips_demo("runs/d", fast=True, verbose=0)  # doctest: +SKIP
    """
    import keras

    from keras_medseg.data.synthetic.qtips import CLASS_NAMES, NUM_CLASSES, qtips
    from keras_medseg.metrics import dice_iou_table
    from keras_medseg.plotting import history_plot, prediction_grid
    from keras_medseg.training import runner
    from keras_medseg.training.segmentation import class_balance_weights
    from keras_medseg.zoo.imexnet import imex_segmenter

    data_kw, fit_kw, model_kw = demo_settings(fast)
    if epochs is not None:
        fit_kw["epochs"] = int(epochs)
    if n_train is not None:
        data_kw["n_train"] = int(n_train)
    size = data_kw["size"]
    x_train, y_train = qtips(data_kw["n_train"], size=size, seed=seed, normalize=True)
    x_val, y_val = qtips(data_kw["n_val"], size=size, seed=seed + 1000, normalize=True)
    weights = class_balance_weights(y_train, NUM_CLASSES, power=fit_kw["class_balance"])
    steps = math.ceil(len(x_train) / fit_kw["batch_size"]) * fit_kw["epochs"]
    os.makedirs(out_dir, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    nets, histories, predictions = {}, {}, {}
    for name in DEMO_MODELS:
        kwargs = dict(model_kw, decay_steps=steps)
        if on_model is not None:
            on_model(name, kwargs)
        keras.utils.set_random_seed(seed)
        model = imex_segmenter(implicit=name == "imexnet", input_size=size, num_classes=NUM_CLASSES,
                               name=name, **kwargs)
        keras.utils.set_random_seed(seed)
        t0, c0 = time.perf_counter(), time.process_time()
        # A fresh run each time (resume=False): the demo compares two whole trainings and their times.
        run = runner.fit(model, x_train, y_train, out_dir=os.path.join(out_dir, name), epochs=fit_kw["epochs"],
                         validation_data=(x_val, y_val), sample_weight=weights, batch_size=fit_kw["batch_size"],
                         shuffle=True, verbose=verbose, resume=False)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        pred = np.argmax(model.predict(x_val, batch_size=fit_kw["batch_size"], verbose=0), axis=-1)
        table = dice_iou_table(y_val, pred, num_classes=NUM_CLASSES)
        checkpoint = os.path.join(out_dir, f"{name}.keras")
        model.save(checkpoint)
        histories[name] = run.history
        predictions[name] = pred.astype(np.int32)
        nets[name] = {"table": table, "mean_iou_rods": float(np.nanmean(np.asarray(table["iou"])[1:])),
                      "params": int(model.count_params()), "seconds": float(seconds), "cpu_seconds": float(cpu),
                      "checkpoint": checkpoint}
    gap = nets["imexnet"]["mean_iou_rods"] - nets["resnet_seg"]["mean_iou_rods"]
    pred_path = os.path.join(out_dir, "predictions.png")
    prediction_grid(x_val, y_val, predictions, path=pred_path, num_classes=NUM_CLASSES, class_names=list(CLASS_NAMES))
    hist_path = os.path.join(out_dir, "history.png")
    fig = history_plot(histories, metrics=[m for m in ("loss", "mean_iou")
                                           if all(m in h for h in histories.values())])
    if fig.axes:
        fig.axes[0].set_title("loss (training: class-weighted pixels; validation: unweighted)")
    fig.savefig(hist_path, dpi=100)
    return {"nets": nets, "gap": float(gap), "sentence": comparison_sentence(gap), "class_names": list(CLASS_NAMES),
            "settings": {"data": data_kw, "fit": fit_kw, "model": {k: v for k, v in model_kw.items()},
                         "seed": seed},
            "plots": [pred_path, hist_path], "seconds": float(time.perf_counter() - t_start),
            "cpu_seconds": float(time.process_time() - c_start)}
