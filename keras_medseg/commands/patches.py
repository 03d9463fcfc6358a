"""`keras-medseg patches`: build and inspect HDF5 patch stores of whole-slide images.

    keras-medseg patches extract SLIDE.tif [MASK.png] --out patches.h5 --size 512 --slide-id s01
    keras-medseg patches info patches.h5 [--json]

`extract` appends to an existing store (same patch size) or creates it; the
mask is optional (no mask = a normal slide, all patches negative). Images are
read with scikit-image (`imageio` / `tifffile`), so PNG, JPEG and TIFF work.
"""

import json
import os


def add_parser(subparsers):
    p = subparsers.add_parser("patches", help="Extract whole-slide-image patches into an HDF5 store; show a store.")
    sub = p.add_subparsers(dest="patches_command", metavar="ACTION")
    ex = sub.add_parser("extract", help="Cut a slide (and its annotation mask) into labelled patches.")
    ex.add_argument("image", help="slide image (PNG/JPEG/TIFF, RGB or grey)")
    ex.add_argument("mask", nargs="?", default=None,
                    help="annotation mask, same height/width (non-zero = tumour); omit for a normal slide")
    ex.add_argument("--out", required=True, help="HDF5 patch store to create or append to")
    ex.add_argument("--size", type=int, default=512, help="patch side in pixels (default 512)")
    ex.add_argument("--inner-size", type=int, default=None,
                    help="side of the inner square that decides the label (default size/2)")
    ex.add_argument("--stride", type=int, default=None, help="grid step (default: the inner size)")
    ex.add_argument("--slide-id", default=None, help="slide name stored with every patch (default: image file name)")
    ex.add_argument("--min-tissue", type=float, default=0.0,
                    help="drop negative patches with a smaller tissue fraction (default 0: keep all)")
    ex.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip",
                    help="compression of a new store (default gzip)")
    info = sub.add_parser("info", help="Summarise a patch store.")
    info.add_argument("file", help="HDF5 patch store")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def _read_image(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path!r}")
    from skimage import io

    try:
        return io.imread(path)
    except Exception as exc:  # unreadable / unknown format
        raise ValueError(f"Cannot read {what} {path!r}: {exc}") from None


def _mask_from_image(mask):
    import numpy as np

    if mask.ndim == 3:  # an RGB(A) drawing: any non-black pixel is tumour
        return mask[..., :3].max(axis=-1) > 0
    if mask.dtype == bool or np.isin(mask, (0, 1)).all():
        return mask.astype(bool)
    if np.issubdtype(mask.dtype, np.integer) and np.unique(mask).size <= 2:
        return mask > 0  # a binary 0/255 mask
    return mask  # an integer label map: one id per tumour


def _extract(args):
    from keras_medseg.data.wsi import PatchStore

    image = _read_image(args.image, "image")
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]  # drop alpha
    mask = _mask_from_image(_read_image(args.mask, "mask")) if args.mask else None
    slide_id = args.slide_id or os.path.splitext(os.path.basename(args.image))[0]
    compression = None if args.compression == "none" else args.compression
    channels = 1 if image.ndim == 2 else image.shape[-1]
    with PatchStore(args.out, "a", patch_size=args.size, channels=channels, dtype=str(image.dtype),
                    compression=compression) as store:
        before = len(store)
        added = store.add_slide(image, mask, slide_id, size=args.size, stride=args.stride,
                                inner_size=args.inner_size, min_tissue=args.min_tissue)
        labels = store.labels[before:]
        total = len(store)
    print(f"{args.out}: added {added} patches of slide {slide_id!r} "
          f"({int(labels.sum())} positive); the store now holds {total} patches")
    return 0


def _info(args):
    from keras_medseg.data.wsi import PatchStore

    with PatchStore(args.file) as store:
        info = store.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['path']}: {info['num_patches']} patches ({info['num_positive']} positive) "
          f"from {info['num_slides']} slides")
    print(f"patch size {info['patch_size']}x{info['patch_size']}x{info['channels']} {info['dtype']}, "
          f"compression {info['compression']}, {info['file_bytes'] / 1e6:.1f} MB")
    for name, s in info["slides"].items():
        print(f"  {name:24s} {s['patches']:8d} patches {s['positive']:8d} positive {s['tumors']:4d} tumours")
    return 0


def run(args):
    if args.patches_command == "extract":
        return _extract(args)
    if args.patches_command == "info":
        return _info(args)
    print("usage: keras-medseg patches {extract,info} ... (see keras-medseg patches --help)")
    return 2


# --------------------------------------------------------------------------- train / evaluate on a patch store
# Called by `keras-medseg train MODEL --data store.h5` and `keras-medseg evaluate CKPT --data store.h5 --froc`
# (the `train` / `evaluate` commands dispatch here when --data is an HDF5 file).


def is_patch_store(data):
    """Whether a `--data` value names an HDF5 patch store (by extension)."""
    return isinstance(data, str) and data.lower().endswith((".h5", ".hdf5"))


def train_from_store(args, model_kwargs=None):
    """Train a classifier (e.g. `vgg16_classifier`) on a patch store with the seed-001 recipe.

    A random `--n-val` patches (seeded) are held out for validation; training
    batches come from the three-step sampler over the others
    (`--n-train / --batch-size` steps per epoch). Callbacks: ROC-AUC early
    stopping, LR halving, `best.keras` (best validation ROC-AUC) and
    `log.csv` in `--out`.
    """
    import keras
    import numpy as np

    from keras_medseg import zoo
    from keras_medseg.callbacks import ROCAUCEarlyStopping, lr_halving_on_plateau
    from keras_medseg.data.wsi import PatchSequence, PatchStore, ThreeStepSampler

    if not os.path.isfile(args.data):
        raise FileNotFoundError(f"Patch store not found: --data {args.data!r}")
    with PatchStore(args.data) as store:
        n, size, channels, labels = len(store), store.patch_size, store.channels, store.labels
    kwargs = dict(model_kwargs or {})
    if "input_shape" in zoo.describe(args.model)["arguments"]:
        kwargs.setdefault("input_shape", (size, size, channels))
    model = zoo.build(args.model, **kwargs)
    # stratified validation split: both classes in validation and in training
    rng = np.random.default_rng(args.seed)
    pos, neg = rng.permutation(np.flatnonzero(labels == 1)), rng.permutation(np.flatnonzero(labels == 0))
    if pos.size < 2 or neg.size < 2:
        raise ValueError(
            f"Patch store {args.data!r} needs at least 2 positive and 2 negative patches for a training/validation "
            f"split. Received: {pos.size} positive, {neg.size} negative"
        )
    n_val = max(2, min(int(args.n_val), n // 4))
    n_pos = int(np.clip(round(n_val * pos.size / n), 1, pos.size - 1))
    n_neg = int(np.clip(n_val - n_pos, 1, neg.size - 1))
    n_val = n_pos + n_neg
    val_idx = np.sort(np.concatenate([pos[:n_pos], neg[:n_neg]]))
    fit_idx = np.sort(np.concatenate([pos[n_pos:], neg[n_neg:]]))
    val = PatchSequence(args.data, batch_size=args.batch_size, indices=val_idx)
    x_val = np.concatenate([val[i][0] for i in range(len(val))])
    y_val = np.concatenate([val[i][1] for i in range(len(val))])
    steps = max(1, int(args.n_train) // int(args.batch_size))
    sampler = ThreeStepSampler(args.data, batch_size=args.batch_size, steps_per_epoch=steps, seed=args.seed,
                               indices=fit_idx)
    out = args.out or os.path.join("runs", args.model)
    os.makedirs(out, exist_ok=True)
    callbacks = [
        ROCAUCEarlyStopping((x_val, y_val), patience=5, batch_size=args.batch_size),
        lr_halving_on_plateau(),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "best.keras"), monitor="val_roc_auc", mode="max",
                                        save_best_only=True),
        keras.callbacks.CSVLogger(os.path.join(out, "log.csv")),
    ]
    history = model.fit(sampler, validation_data=(x_val, y_val), epochs=args.epochs, callbacks=callbacks,
                        verbose=0 if getattr(args, "quiet", False) else 2)
    aucs = history.history.get("val_roc_auc", [])
    print(f"\nbest validation ROC-AUC {max(aucs):.4f} (epoch {int(np.argmax(aucs)) + 1} of {len(aucs)}, "
          f"{n_val} validation patches)")
    print(f"checkpoint  {os.path.join(out, 'best.keras')}\nlog         {os.path.join(out, 'log.csv')}")
    return 0


def evaluate_froc(args):
    """Score every patch of a store with a `.keras` checkpoint; print FROC and slide-level results.

    Normal slides are the slides without a positive patch. With `--plot`, a
    FROC curve PNG is written there.
    """
    import keras
    import numpy as np

    from keras_medseg.data.wsi import PatchSequence, PatchStore
    from keras_medseg.evaluation import froc_curve, froc_report, plot_froc

    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"Checkpoint not found: {args.checkpoint!r}")
    if not is_patch_store(args.data):
        raise ValueError(f"--froc needs an HDF5 patch store as --data. Received: --data {args.data!r}")
    if not os.path.isfile(args.data):
        raise FileNotFoundError(f"Patch store not found: --data {args.data!r}")
    model = keras.saving.load_model(args.checkpoint, safe_mode=True)
    scores = np.asarray(model.predict(PatchSequence(args.data, batch_size=args.batch_size), verbose=0))
    scores = scores.reshape(scores.shape[0], -1)[:, 0]
    with PatchStore(args.data) as store:
        labels, slides, tumors = store.labels, store.slide_ids, store.tumor_ids
    report = froc_report(scores, tumors, slides, labels)
    print(f"{len(scores)} patches, {report['num_slides']} slides ({report['num_normal_slides']} normal), "
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
    plot = getattr(args, "plot", None)
    if plot and report["froc"] is not None:
        import matplotlib

        matplotlib.use("Agg")
        normal = np.unique(slides)[[not (labels[slides == s] > 0).any() for s in np.unique(slides)]]
        curve = froc_curve(scores, tumors, slides, normal)
        ax = plot_froc(curve.avg_fp, curve.sensitivity, label=f"FROC {report['froc']:.3f}")
        ax.figure.savefig(plot, dpi=100, bbox_inches="tight")
        print(f"FROC curve  {plot}")
    return 0
