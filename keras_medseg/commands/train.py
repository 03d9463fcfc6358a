"""`keras-medseg train MODEL --data qtips|DIR --epochs N --out DIR`.

Fits a zoo model with the Keras progress bar, writes `log.csv`, the best
checkpoint `best.keras`, `predictions.png` and `history.png` into `--out`,
and prints the validation Dice/IoU table. Builder arguments go through
`--arg name=value` (repeatable; values are Python literals, e.g.
`--arg filters=8 --arg batch_norm=False`).
"""

import ast


def parse_model_args(items):
    """`["filters=8", "name=seg"]` -> `{"filters": 8, "name": "seg"}` (literals, else strings)."""
    kwargs = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"`--arg` must look like name=value. Received: --arg {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key.isidentifier():
            raise ValueError(f"`--arg` name must be an identifier. Received: --arg {item!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


def add_data_options(p, n_default=1024):
    p.add_argument("--data", default="qtips", help="'qtips' (synthetic, default) or a folder DIR with "
                   "DIR/images/<name>.<ext> and DIR/masks/<name>.<ext> (PNG, TIFF, .npy, NIfTI), or an HDF5 "
                   "patch store FILE.h5 (`keras-medseg patches extract`) for patch classifiers")
    p.add_argument("--size", type=int, default=64, help="Q-tips image size (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--spatial-dims", type=int, default=2, choices=(2, 3),
                   help="2 for images, 3 for volumes in a data folder (default 2)")


def add_parser(subparsers):
    p = subparsers.add_parser("train", help="Train a zoo model on Q-tips or an image/mask folder.")
    p.add_argument("model", help="zoo model name (see `keras-medseg list`)")
    add_data_options(p)
    p.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--out", default=None, help="output folder (default runs/<model>)")
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="builder argument, repeatable (e.g. --arg filters=8)")
    p.add_argument("--n-train", type=int, default=1024, help="Q-tips training images (default 1024)")
    p.add_argument("--n-val", type=int, default=64, help="Q-tips validation images (default 64)")
    p.add_argument("--class-balance", action="store_true",
                   help="weight pixels by damped inverse class frequency (thin structures, e.g. Q-tips)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--distribute", default=None,
                   choices=("none", "mirrored", "multiworker", "jax-data-parallel"),
                   help="train on several devices: tf.distribute Mirrored/MultiWorkerMirrored (TensorFlow) or "
                        "keras.distribution.DataParallel (JAX); --batch-size is the global batch")
    p.add_argument("--backup-every", type=int, default=None, metavar="N",
                   help="also back up the training state every N batches (default: every epoch); "
                        "rerun the same command after a crash to resume")
    return p


def run(args):
    import os

    from keras_medseg.metrics import format_table
    from keras_medseg.training import load_data, train

    model_kwargs = parse_model_args(args.arg)
    from keras_medseg.commands.patches import is_patch_store, train_from_store

    if is_patch_store(args.data):  # WSI patch store (.h5): three-step sampler + seed-001 recipe (H6)
        return train_from_store(args, model_kwargs)
    out = args.out or os.path.join("runs", args.model)
    data = load_data(args.data, n_train=args.n_train, n_val=args.n_val, size=args.size, seed=args.seed,
                     spatial_dims=args.spatial_dims)
    result = train(args.model, data, epochs=args.epochs, out_dir=out, batch_size=args.batch_size,
                   model_kwargs=model_kwargs, verbose=0 if args.quiet else 1, seed=args.seed,
                   class_balance=args.class_balance, distribute=args.distribute,
                   backup_every=args.backup_every)
    print(f"\nValidation Dice/IoU of the best checkpoint ({len(data.y_val)} cases):")
    print(format_table({args.model: result.table}, class_names=data.class_names))
    print(f"\ncheckpoint  {result.checkpoint}\nlog         {result.log}\npredictions {result.plot}")
    return 0
