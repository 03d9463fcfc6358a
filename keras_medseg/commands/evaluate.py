"""`keras-medseg evaluate CHECKPOINT --data qtips|DIR`: per-class Dice/IoU table."""


def add_parser(subparsers):
    from keras_medseg.commands.train import add_data_options

    p = subparsers.add_parser("evaluate", help="Per-class Dice/IoU of a .keras checkpoint.")
    p.add_argument("checkpoint", help="a .keras model file (loaded with safe_mode=True)")
    add_data_options(p)
    p.set_defaults(seed=1)
    p.add_argument("--n", type=int, default=64, help="Q-tips evaluation images (default 64, seed 1)")
    p.add_argument("--batch-size", type=int, default=16, help="prediction batch size (default 16)")
    p.add_argument("--plot", default=None, help="write a PNG of predictions here")
    p.add_argument("--froc", action="store_true",
                   help="patch classifier on an HDF5 patch store (--data x.h5): FROC + slide-level ROC-AUC")
    return p


def run(args):
    from keras_medseg.commands.patches import evaluate_froc, is_patch_store

    if args.froc or is_patch_store(args.data):  # WSI patch store: FROC / slide-level report (H6)
        return evaluate_froc(args)
    from keras_medseg.metrics import format_table
    from keras_medseg.training import evaluate

    table, names = evaluate(args.checkpoint, args.data, batch_size=args.batch_size, n=args.n, size=args.size,
                            seed=args.seed, spatial_dims=args.spatial_dims, plot=args.plot)
    print(format_table(table, class_names=names))
    if args.plot:
        print(f"\npredictions {args.plot}")
    return 0
