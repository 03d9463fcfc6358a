"""`keras-medseg train MODEL --data qtips|DIR|FILE.h5 --epochs N --out DIR`.

Fits a zoo model with the Keras progress bar, writes `log.csv`, the best
checkpoint `best.keras`, `predictions.png` and `history.png` into `--out`,
and prints the validation Dice/IoU table. Builder arguments go through
`--arg name=value` (repeatable; values are Python literals, e.g.
`--arg filters=8 --arg batch_norm=False`). With an HDF5 patch store as
`--data`, a patch classifier is trained
(`keras_medseg.training.train_patch_classifier`).
"""

from keras_medseg.commands._options import add_data_options, parse_model_args


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


def _run_patch_store(args, model_kwargs):
    from keras_medseg.training import train_patch_classifier

    r = train_patch_classifier(args.model, args.data, epochs=args.epochs, batch_size=args.batch_size,
                               n_train=args.n_train, n_val=args.n_val, seed=args.seed, out_dir=args.out,
                               model_kwargs=model_kwargs, verbose=0 if args.quiet else 2)
    print(f"\nbest validation ROC-AUC {r.best_roc_auc:.4f} (epoch {r.best_epoch} of {r.num_epochs}, "
          f"{r.num_val} validation patches)")
    print(f"checkpoint  {r.checkpoint}\nlog         {r.log}")
    return 0


def run(args):
    import os

    from keras_medseg.metrics import format_table
    from keras_medseg.training import PatchStoreData, resolve_data, train

    model_kwargs = parse_model_args(args.arg)
    data = resolve_data(args.data, "train", n_train=args.n_train, n_val=args.n_val, size=args.size, seed=args.seed,
                        spatial_dims=args.spatial_dims)
    if isinstance(data, PatchStoreData):  # WSI patch store (.h5): three-step sampler + the VGG16 recipe
        return _run_patch_store(args, model_kwargs)
    out = args.out or os.path.join("runs", args.model)
    result = train(args.model, data, epochs=args.epochs, out_dir=out, batch_size=args.batch_size,
                   model_kwargs=model_kwargs, verbose=0 if args.quiet else 1, seed=args.seed,
                   class_balance=args.class_balance, distribute=args.distribute,
                   backup_every=args.backup_every)
    print(f"\nValidation Dice/IoU of the best checkpoint ({len(data.y_val)} cases):")
    print(format_table({args.model: result.table}, class_names=data.class_names))
    print(f"\ncheckpoint  {result.checkpoint}\nlog         {result.log}\npredictions {result.plot}")
    return 0
