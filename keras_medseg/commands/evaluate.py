"""`keras-medseg evaluate CHECKPOINT --data qtips|DIR|FILE.h5`: per-class Dice/IoU table, or FROC on a patch store."""

from keras_medseg.commands._options import add_data_options


def add_parser(subparsers):
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


def _print_froc(report):
    print(f"{report['num_patches']} patches, {report['num_slides']} slides ({report['num_normal_slides']} normal), "
          f"{report['num_tumors']} tumours")
    if report["froc"] is None:
        print("FROC: undefined (needs both normal slides and tumours)")
    else:
        print(f"FROC score {report['froc']:.4f}  (mean sensitivity at "
              f"{', '.join(f'{r:g}' for r in report['sensitivity_at'])} FP per normal slide)")
        for rate, sens in report["sensitivity_at"].items():
            print(f"  sensitivity @ {rate:5g} FP/slide  {sens:.4f}")
    auc = report["slide_roc_auc"]
    print(f"slide-level ROC-AUC {'n/a' if auc is None else f'{auc:.4f}'}, "
          f"accuracy at 0.5 {report['slide_accuracy']:.4f}")
    if report["plot"]:
        print(f"FROC curve  {report['plot']}")


def run(args):
    from keras_medseg.data.io import is_patch_store

    if args.froc or is_patch_store(args.data):  # WSI patch store: FROC / slide-level report
        from keras_medseg.evaluation import evaluate_patch_store

        _print_froc(evaluate_patch_store(args.checkpoint, args.data, batch_size=args.batch_size, plot=args.plot))
        return 0
    from keras_medseg.metrics import format_table
    from keras_medseg.training import evaluate

    table, names = evaluate(args.checkpoint, args.data, batch_size=args.batch_size, n=args.n, size=args.size,
                            seed=args.seed, spatial_dims=args.spatial_dims, plot=args.plot)
    print(format_table(table, class_names=names))
    if args.plot:
        print(f"\npredictions {args.plot}")
    return 0
