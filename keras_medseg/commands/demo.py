"""`keras-medseg demo`: IMEXnet vs ResNet on Q-tips, side by side.

Trains `imexnet` and `resnet_seg` (the same network with explicit instead of
implicit steps) at a small width (stages `((2, 16), (2, 32))` at full
resolution, layer normalisation, class-balanced pixel weights, 1024
images, 4 epochs)
on the synthetic Q-tips set, prints the
per-class IoU/Dice table of both models side by side and writes the plots
(`predictions.png`: image, ground truth, both predictions; `history.png`:
training curves) and both checkpoints into `--out`.

The defaults take about 4-5 minutes on a free CPU core (measured: 4 min 25 s); `--fast` (or the
environment variable `KERAS_MEDSEG_FAST=1`) runs a tiny version for tests.
"""

import os

DEMO_MODELS = ("imexnet", "resnet_seg")


def demo_settings(fast):
    """Sizes of the demo: `(data, training, model)` keyword dicts."""
    # layer normalisation (per pixel, over channels): batch-norm moving
    # statistics lag behind on this set after a short run (inference-mode
    # predictions collapse to background), and instance norm would leak
    # image-wide statistics (a global receptive field) into the ResNet baseline.
    # coarsen=False keeps full resolution: with 2x pooling per stage the
    # nearest-neighbour upsampled output is too blocky for 2-pixel-wide rods.
    model = dict(normalization="layer", learning_rate=3e-3)
    if fast:
        return (dict(n_train=16, n_val=8, size=32), dict(epochs=1, batch_size=8),
                dict(stages=((1, 4), (1, 8)), coarsen=False, **model))
    return (dict(n_train=1024, n_val=64, size=64), dict(epochs=4, batch_size=16),
            dict(stages=((2, 16), (2, 32)), coarsen=False, **model))


def _model_kwargs(name, wanted):
    """Keep only the demo settings that the builder of `name` has."""
    from keras_medseg import zoo

    args = zoo.describe(name)["arguments"]
    return {k: v for k, v in wanted.items() if k in args}


def add_parser(subparsers):
    p = subparsers.add_parser("demo", help="Train imexnet and resnet_seg on Q-tips; print the IoU table side by side.")
    p.add_argument("--out", default=os.path.join("runs", "demo"), help="output folder (default runs/demo)")
    p.add_argument("--fast", action="store_true", help="tiny sizes (seconds; for tests)")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--n-train", type=int, default=None, help="override the number of training images")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args):
    import time

    from keras_medseg import zoo
    from keras_medseg.metrics import format_table
    from keras_medseg.plotting import history_plot, prediction_grid
    from keras_medseg.training import load_data, train

    fast = args.fast or os.environ.get("KERAS_MEDSEG_FAST", "") == "1"
    data_kw, train_kw, model_kw = demo_settings(fast)
    if args.epochs is not None:
        train_kw["epochs"] = args.epochs
    if args.n_train is not None:
        data_kw["n_train"] = args.n_train
    missing = [m for m in DEMO_MODELS if m not in zoo.list()]
    if missing:
        raise ValueError(f"The demo needs the zoo models {', '.join(missing)}, which are not registered.")
    data = load_data("qtips", seed=args.seed, **data_kw)
    print(f"Q-tips: {len(data.x_train)} training and {len(data.x_val)} validation images of "
          f"{data.x_train.shape[1]}x{data.x_train.shape[2]} px, 4 classes")
    results, params, seconds = {}, {}, {}
    for name in DEMO_MODELS:
        kwargs = _model_kwargs(name, model_kw)
        print(f"\n== {name} {kwargs} ==")
        start = time.time()
        results[name] = train(name, data, out_dir=os.path.join(args.out, name), model_kwargs=kwargs,
                              verbose=0 if args.quiet else 1, seed=args.seed, class_balance=True, **train_kw)
        seconds[name] = time.time() - start
        params[name] = results[name].model.count_params()
    print("\nValidation IoU/Dice per class (best checkpoint of each model):")
    print(format_table({n: r.table for n, r in results.items()}, class_names=data.class_names))
    print("\n" + "  ".join(f"{n}: {params[n]} parameters, {seconds[n]:.0f} s" for n in DEMO_MODELS))
    pred_path = os.path.join(args.out, "predictions.png")
    prediction_grid(data.x_val, data.y_val, {n: r.predictions for n, r in results.items()}, path=pred_path,
                    num_classes=data.num_classes, class_names=data.class_names)
    hist_path = os.path.join(args.out, "history.png")
    history_plot({n: r.history for n, r in results.items()}, path=hist_path,
                 metrics=[m for m in ("loss", "mean_iou") if all(m in r.history for r in results.values())])
    print(f"\nplots       {pred_path}  {hist_path}")
    print(f"checkpoints {'  '.join(r.checkpoint for r in results.values())}")
    return 0
