"""`keras-medseg train MODEL --data qtips|DIR|FILE.h5 --epochs N --out DIR`.

Fits a zoo model with the Keras progress bar, writes `log.csv`, the best
checkpoint `best.keras`, `predictions.png` and `history.png` into `--out`,
and prints the validation Dice/IoU table. Builder arguments go through
`--arg name=value` (repeatable; values are Python literals, e.g.
`--arg filters=8 --arg batch_norm=False`). With an HDF5 patch store as
`--data`, a patch classifier is trained
(`keras_medseg.training.train_patch_classifier`). Other zoo models (GANs,
detectors, the untrained `lse`) are refused with one line naming their
entry point (`keras_medseg.commands._catalog.training_route`, from the task
each model declares). `--data` is decided once
(`keras_medseg.data.sources.resolve_source`) and the typed source is passed
down. With `--patch-size` (or a
`dataset.json` as `--data`), volumes are trained on lazily sampled patches
with augmentation and Dice + CE (`keras_medseg.training.train_volumes`), and
the preprocessing is saved in the checkpoint for `predict`:
`keras-medseg train unet --data DIR|dataset.json --spatial-dims 3 --patch-size 96`. A `dataset.json` is
a Medical Segmentation Decathlon one or an nnU-Net v2 raw data set's (`--data nnUNet_raw/Dataset001_X`:
`imagesTr/` + `labelsTr/`, class names and regions from its `labels`).
Multi-modal volumes: a 4D NIfTI per case (channels last), nnU-Net's
`case_0000.nii.gz`, `case_0001.nii.gz`, ... or `--modalities t1,t1ce,t2,flair`
(files `images/<case>_<modality>.nii.gz`, `--modality-pattern` to change
that); `--regions 'whole=1,2,3;core=2,3;enhancing=3'` trains one sigmoid
channel per (overlapping) region with multi-label Dice + BCE and logs the
Dice of each region.
Volumes are validated on whole scans (`--val-every K`, default 5, and the last
epoch: the `predict` path on each validation scan, Dice per case and class,
`--val-hd95` adds HD95; the best checkpoint is chosen on `val_scan_dice`),
preprocessed once into a disk cache (`--cache-dir`, default OUT/cache; `none`
turns it off) and loaded by `--workers N` worker processes (default 2; threads
for a run of fewer than 1,000 batches, whose processes would take longer to start).
`--processes N` trains over N processes of this host (one GPU each), with
`--coordinator HOST:PORT --process-id I` over several hosts
(`keras_medseg.training.distribute`; `--batch-size` is the global batch).
"""

from keras_medseg.commands._options import add_data_options, add_resample_option, parse_model_args, parse_regions


def add_parser(subparsers):
    p = subparsers.add_parser(
        "train", help="Train a zoo model: segmentation models (unet, imexnet, resnet_seg, lsn) on Q-tips, "
                      "image/mask folders and volumes; patch classifiers on HDF5 patch stores.")
    p.add_argument("model", help="zoo model name (see `keras-medseg list`); GANs and detectors train with "
                                 "their own `fit`, `lse` has no training")
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
                   choices=("none", "mirrored", "jax-data-parallel"),
                   help="train on several devices of one process: tf.distribute.MirroredStrategy (TensorFlow) or "
                        "keras.distribution.DataParallel (JAX); --batch-size is the global batch")
    d = p.add_argument_group("several processes or hosts (jax.distributed, tf.distribute.MultiWorkerMirrored"
                             "Strategy, torch.distributed; gloo/gRPC on CPU, NCCL on GPU)")
    d.add_argument("--processes", type=int, default=None, metavar="N",
                   help="train over N processes: alone, starts them on this host (one GPU each); "
                        "--batch-size is the global batch, a multiple of N")
    d.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="join a run over several hosts: process 0's HOST:PORT (TensorFlow: every process's, "
                        "comma-separated, in rank order), with --process-id")
    d.add_argument("--process-id", type=int, default=None, metavar="I", help="this process's rank, 0..N-1")
    p.add_argument("--backup-every", type=int, default=None, metavar="N",
                   help="also back up the training state every N batches (default: every epoch); "
                        "rerun the same command after a crash to resume")
    add_resample_option(p)
    v = p.add_argument_group("volumes (folders with images/ + labels/, or a dataset.json)")
    v.add_argument("--patch-size", type=int, nargs="+", default=None, metavar="N",
                   help="patch voxels per axis (one or --spatial-dims values); turns on patch training")
    v.add_argument("--steps-per-epoch", type=int, default=50, help="patch batches per epoch (default 50)")
    v.add_argument("--spacing", nargs="+", default=None, metavar="MM",
                   help="training voxel size in mm, or 'median': one chosen from the training cases' voxel sizes "
                        "as nnU-Net does (default: each case's own grid)")
    v.add_argument("--orientation", default=None, help="reorient volumes to this axis code, e.g. RAS")
    v.add_argument("--intensity", default=None,
                   help="intensity preset, per channel: zscore (default), percentile, none, ct_window:LOW:HIGH (HU), "
                        "ct (nnU-Net's CT normalisation from the training cases' foreground: the default when the "
                        "dataset.json names its one channel CT); zscore:nonzero or percentile:nonzero take the "
                        "statistics over non-zero voxels only (skull-stripped MR)")
    v.add_argument("--modalities", default=None, metavar="NAMES",
                   help="one file per modality: the names in channel order, comma-separated (e.g. t1,t1ce,t2,flair "
                        "for images/<case>_t1.nii.gz, ...); default: one file per case (4D NIfTI: channels last) "
                        "or nnU-Net's <case>_0000.nii.gz numbering")
    v.add_argument("--modality-pattern", default=None, metavar="PATTERN",
                   help="file stem of a modality (default '{case}_{modality}')")
    v.add_argument("--regions", default=None, metavar="SPEC",
                   help="multi-label training: one sigmoid channel per region of mask values, regions may overlap, "
                        "e.g. 'whole=1,2,3;core=2,3;enhancing=3' (saved with the model for predict/evaluate)")
    v.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="disk cache of the preprocessed cases (memory-mapped; for data sets larger than RAM and "
                        "worker processes): each case is read and resampled once, also across runs with the same "
                        "preprocessing (default: OUT/cache; 'none': no disk cache)")
    v.add_argument("--cache-dir-gb", type=float, default=None, metavar="GB",
                   help="size budget of --cache-dir in GB (default: no limit); least recently used cases go first")
    v.add_argument("--workers", type=int, default=None, metavar="N",
                   help="data-loading worker processes of the training patches, one compute thread each (default 2, or "
                        "1 on one core; threads for runs under 1,000 batches)")
    v.add_argument("--fold", type=int, default=None, metavar="K",
                   help="cross-validation: validate on fold K of --folds seeded folds of the cases, or with --splits "
                        "on that file's fold K (default: a random fifth, or the dataset.json's validation list)")
    v.add_argument("--folds", type=int, default=5, metavar="N", help="number of folds for --fold (default 5)")
    v.add_argument("--splits", default=None, metavar="FILE",
                   help="nnU-Net's splits_final.json: --fold K validates on the cases nnU-Net's fold K did")
    v.add_argument("--val-every", type=int, default=None, metavar="K",
                   help="predict the whole validation scans every K epochs and on the last (the predict path; Dice "
                        "per case and class in the log as val_scan_dice*); the best checkpoint is chosen on "
                        "val_scan_dice (default 5; 0: off, the patch val_loss chooses)")
    v.add_argument("--val-hd95", action="store_true", help="also log the HD95 (mm) of the whole-scan validation")
    v.add_argument("--pos-fraction", type=float, default=0.5, help="share of foreground-centred patches (default 0.5)")
    v.add_argument("--no-augment", action="store_true", help="train volumes without augmentation")
    return p


def _intensity(text):
    if text is None:
        return None
    preset, *rest = text.split(":")
    if preset == "ct_window" and len(rest) == 2:
        return {"preset": "ct_window", "low": float(rest[0]), "high": float(rest[1])}
    if rest == ["nonzero"] and preset in ("zscore", "percentile"):
        return {"preset": preset, "nonzero": True}
    if rest:
        raise ValueError(f"`--intensity` must be zscore, percentile, none, ct_window:LOW:HIGH, ct, zscore:nonzero "
                         f"or percentile:nonzero. Received: --intensity {text!r}")
    return {"preset": preset}


def _run_volumes(args, source, model_kwargs):
    import os

    from keras_medseg.training import train_volumes
    from keras_medseg.training.volumes import region_metric_name

    patch = args.patch_size[0] if args.patch_size and len(args.patch_size) == 1 else tuple(args.patch_size or (96,))
    r = train_volumes(args.model, source, out_dir=args.out or os.path.join("runs", args.model),
                      spatial_dims=args.spatial_dims, patch_size=patch, epochs=args.epochs,
                      steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, spacing=_spacing(args.spacing),
                      orientation=args.orientation, intensity=_intensity(args.intensity),
                      pos_fraction=args.pos_fraction, augment=not args.no_augment, model_kwargs=model_kwargs,
                      seed=args.seed, verbose=0 if args.quiet else 1, backup_every=args.backup_every,
                      ignore_value=args.ignore_value, resample_irregular=args.resample_irregular,
                      regions=parse_regions(args.regions), modalities=args.modalities,
                      modality_pattern=args.modality_pattern,
                      cache_dir="auto" if args.cache_dir is None else args.cache_dir,
                      cache_dir_bytes=None if args.cache_dir_gb is None else int(args.cache_dir_gb * 1e9),
                      workers=args.workers, fold=args.fold, folds=args.folds, splits=args.splits,
                      **_val_options(args), **_processes(args))
    if r.model is None:  # a rank other than 0 of a run over several hosts: rank 0 reports
        return 0
    kind = "regions" if r.spec.get("regions") else "classes"
    print(f"\ntrained on {len(r.split['train'])} cases, validated on {len(r.split['validation'])}; "
          f"{kind} {r.spec['class_names']}" + (f"; modalities {r.spec['modalities']}" if r.spec["modalities"] else ""))
    if r.spec.get("regions"):  # the last epoch's Dice of each region (log.csv has every epoch)
        prefix = "val_" if r.split["validation"] else ""
        keys = [(name, prefix + region_metric_name(name)) for name in r.spec["class_names"]]
        cells = [f"{name} {r.history[k][-1]:.4f}" for name, k in keys if r.history.get(k)]
        print(f"{'validation' if prefix else 'training'} Dice per region (last epoch): {', '.join(cells)}")
    if r.scan_scores:  # the best checkpoint's whole-scan Dice of each validation case
        print(f"whole-scan validation Dice of the best checkpoint (epoch {r.best_epoch + 1}, {r.monitor}):")
        for case, classes in r.scan_scores.items():
            print(f"  {case:24s} " + ", ".join(f"{name} {v['dice']:.4f}" + (f" (HD95 {v['hd95']:.3g} mm)"
                                                                       if "hd95" in v else "")
                                               for name, v in classes.items()))
    if r.spec.get("spacing"):
        print(f"spacing     {' x '.join(f'{v:g}' for v in r.spec['spacing'])} mm"
              + (" (chosen from the training cases, --spacing median)" if args.spacing == ["median"] else ""))
    print(f"checkpoint  {r.checkpoint} (with its preprocessing)\nlog         {r.log}")
    return 0


def _spacing(values):
    """`--spacing`: None, "median", or the mm per axis."""
    if values is None:
        return None
    if values == ["median"]:
        return "median"
    try:
        return [float(v) for v in values]
    except ValueError:
        raise ValueError(f"--spacing takes voxel sizes in mm (e.g. 1.5 1.5 3) or 'median'. "
                         f"Received: {values}") from None


def _val_options(args):
    """`val_every` / `val_hd95` for `train_volumes` (`--val-every` left out: the library's default)."""
    out = {"val_hd95": bool(args.val_hd95)}
    if args.val_every is not None:
        out["val_every"] = args.val_every
    return out


def _processes(args):
    return {"processes": args.processes, "coordinator": args.coordinator, "process_id": args.process_id}


def _run_patch_store(args, source, model_kwargs):
    from keras_medseg.training import train_patch_classifier
    from keras_medseg.training.distribute import current_group

    r = train_patch_classifier(args.model, source.path, epochs=args.epochs, batch_size=args.batch_size,
                               n_train=args.n_train, n_val=args.n_val, seed=args.seed, out_dir=args.out,
                               model_kwargs=model_kwargs, verbose=0 if args.quiet else 1,
                               backup_every=args.backup_every, **_processes(args))
    if not current_group().is_writer:  # a rank other than 0 of a run over several hosts: rank 0 reports
        return 0
    print(f"\nbest validation ROC-AUC {r.best_roc_auc:.4f} (epoch {r.best_epoch} of {r.num_epochs}, "
          f"{r.num_val} validation patches)")
    print(f"checkpoint  {r.checkpoint}\nlog         {r.log}")
    return 0


def check(args):
    """Refuse, before the backend is imported, a model that `train` never fits (GANs, detectors, `lse`): one line.

    Whether the model fits the data (a patch classifier needs a patch store) is decided in `run`, once the
    data argument has been resolved.
    """
    from keras_medseg.commands._catalog import untrainable_reason

    parse_model_args(args.arg)
    refusal = untrainable_reason(args.model)
    if refusal:
        raise ValueError(refusal)


def run(args):
    import os

    from keras_medseg.commands._catalog import training_route
    from keras_medseg.data.sources import PatchStoreSource, resolve_source
    from keras_medseg.metrics import format_table
    from keras_medseg.training import train

    check(args)
    model_kwargs = parse_model_args(args.arg)
    source = resolve_source(args.data, spatial_dims=args.spatial_dims)  # the one decision of what --data is
    refusal = training_route(args.model, source=source, data=args.data)
    if refusal:
        raise ValueError(refusal)
    if isinstance(source, PatchStoreSource):  # WSI patch store (.h5): three-step sampler + the VGG16 recipe
        return _run_patch_store(args, source, model_kwargs)
    if (args.patch_size is not None or getattr(source, "dataset_json", None) or args.regions or args.modalities
            or args.cache_dir not in (None, "none")):
        return _run_volumes(args, source, model_kwargs)
    if args.fold is not None or args.splits is not None:
        raise ValueError("--fold and --splits split the cases of a volume data set (with --patch-size or a "
                         f"dataset.json). Received: --data {args.data}")
    out = args.out or os.path.join("runs", args.model)
    result = train(args.model, source, epochs=args.epochs, out_dir=out, batch_size=args.batch_size,
                   model_kwargs=model_kwargs, verbose=0 if args.quiet else 1, seed=args.seed,
                   n_train=args.n_train, n_val=args.n_val, size=args.size, class_balance=args.class_balance,
                   distribute=args.distribute, backup_every=args.backup_every, ignore_value=args.ignore_value,
                   resample_irregular=args.resample_irregular, **_processes(args))
    if result.model is None:  # a rank other than 0 of a run over several hosts: rank 0 reports
        return 0
    print(f"\nValidation Dice/IoU of the best checkpoint ({len(result.predictions)} cases):")
    print(format_table({args.model: result.table}, class_names=result.class_names))
    print(f"\ncheckpoint  {result.checkpoint}\nlog         {result.log}\npredictions {result.plot}")
    return 0
