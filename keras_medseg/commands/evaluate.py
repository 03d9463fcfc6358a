"""`keras-medseg evaluate CHECKPOINT --data qtips|DIR|FILE.h5`: per-class Dice/IoU table, or FROC on a patch store.

`keras-medseg evaluate --froc --predictions DIR [DIR ...]`: lesion-level FROC over slides written by
`keras-medseg slide predict`; `--protocol camelyon16` scores the heatmaps of a predicted folder the
CAMELYON16 way (`keras_medseg.evaluation.lesion_froc`) instead of the lecture's patch-level protocol.
"""

from keras_medseg.commands._options import add_data_options, add_scan_options


def add_parser(subparsers):
    p = subparsers.add_parser("evaluate", help="Per-class Dice/IoU of a .keras checkpoint.")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="a .keras model file (loaded with safe_mode=True); not needed with --predictions")
    add_data_options(p)
    p.set_defaults(seed=1)
    p.add_argument("--n", type=int, default=64, help="Q-tips evaluation images (default 64, seed 1)")
    p.add_argument("--batch-size", type=int, default=16, help="prediction batch size (default 16)")
    p.add_argument("--plot", default=None, help="write a PNG of predictions here")
    p.add_argument("--csv", default=None,
                   help="scan folders (NIfTI/NRRD/MHA/DICOM images): per-case CSV path (default DIR/evaluation.csv)")
    p.add_argument("--include-training", action="store_true",
                   help="scan folders: also score the cases the model's saved split says it was trained on")
    p.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm (default 1.0)")
    add_scan_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--froc", action="store_true",
                   help="patch classifier on an HDF5 patch store (--data x.h5): FROC + slide-level ROC-AUC")
    p.add_argument("--predictions", nargs="+", default=None, metavar="DIR",
                   help="with --froc: output directories of `keras-medseg slide predict` (lesion-level FROC)")
    p.add_argument("--protocol", choices=("lecture", "camelyon16"), default="lecture",
                   help="with --predictions: the lecture's patch-level FROC (default) or CAMELYON16's lesion-level "
                        "one on the heatmaps (directories of `slide predict FOLDER`)")
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
    if args.predictions and args.protocol == "camelyon16":
        from keras_medseg.predict.cohort import camelyon16_froc_from_predictions

        r = camelyon16_froc_from_predictions(args.predictions)
        print(f"FROC (CAMELYON16 protocol, lesion level) {r['froc']:.4f} over {r['num_slides']} slides, "
              f"{r['num_lesions']} lesions ({r['num_itc']} isolated tumour cells excluded), "
              f"{r['num_candidates']} candidates")
        for rate, sens in r["sensitivity_at"].items():
            print(f"  sensitivity @ {rate:5g} FP/slide  {sens:.4f}")
        return 0
    if args.predictions:
        from keras_medseg.predict.slides import froc_from_predictions

        report = froc_from_predictions(args.predictions, plot=args.plot, progress=not args.quiet)
        _print_froc(report)
        for sid, score in sorted(report["slides"].items()):
            print(f"  {sid:24s} slide score {score:.4f}")
        return 0
    if args.checkpoint is None:
        raise ValueError("`evaluate` needs a CHECKPOINT (or --froc --predictions DIR ...). Received: none")
    from keras_medseg.data.sources import PatchStoreSource, ScanFolderSource, resolve_source

    source = resolve_source(args.data, spatial_dims=args.spatial_dims)  # the one decision of what --data is
    if args.froc or isinstance(source, PatchStoreSource):  # WSI patch store: FROC / slide-level report
        from keras_medseg.evaluation import evaluate_patch_store

        _print_froc(evaluate_patch_store(args.checkpoint, source, batch_size=args.batch_size, plot=args.plot,
                                         verbose=0 if args.quiet else 1))
        return 0
    if isinstance(source, ScanFolderSource):  # whole scans: per-case Dice/HD95/ASSD in mm, held-out cases by default
        return _evaluate_scans(args, source)
    from keras_medseg.metrics import format_table
    from keras_medseg.training import evaluate

    table, names = evaluate(args.checkpoint, source, batch_size=args.batch_size, n=args.n, size=args.size,
                            seed=args.seed, plot=args.plot, verbose=0 if args.quiet else 1,
                            ignore_value=args.ignore_value, resample_irregular=args.resample_irregular)
    print(format_table(table, class_names=names))
    if args.plot:
        print(f"\npredictions {args.plot}")
    return 0


def _evaluate_scans(args, source):
    from keras_medseg.predict.scan_evaluation import evaluate_scans, format_summary

    res = evaluate_scans(args.checkpoint, source, csv_path=args.csv, include_training=args.include_training,
                         tolerance=args.tolerance, overlap=args.overlap, batch_size=args.window_batch,
                         allow_padding=args.pad, progress=not args.quiet, ignore_value=args.ignore_value,
                         resample_irregular=args.resample_irregular)
    print(format_summary(res))
    return 0
