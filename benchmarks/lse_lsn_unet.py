"""LSE vs LSN vs UNet: 5-fold cross-validation on the MNI152 white matter (issue 7, item 3).

    python benchmarks/lse_lsn_unet.py                  # --preset cpu (about 12 min on 2 quiet cores)
    python benchmarks/lse_lsn_unet.py --preset smoke   # tiny, < 60 s, numbers meaningless
    python benchmarks/lse_lsn_unet.py --preset paper   # 1 mm template, wider UNet (GPU)

Data: the MNI152 T1 template shipped with nilearn
(`nilearn.datasets.load_mni152_template`) and its white-matter mask
(`load_mni152_wm_mask`, the thresholded tissue-probability map), cut into
axial slices; slices whose white matter covers fewer than `min_pixels`
pixels are dropped (the same slices for every model). The target is the
white matter, not the brain: the template is skull-stripped, so the brain
is a trivial threshold, while the white matter/grey matter border is a
weak, convoluted edge on which an edge-driven level set is a fair but not
trivial competitor.

Folds: the kept slices are split into 5 CONTIGUOUS slabs (`slab_folds`);
fold k tests on slab k, validates on slab (k+1) % 5 and trains on the other
three, so neighbouring (almost identical) slices never straddle train and
test. Images are divided by the template's maximum; the only augmentation
(preset `mirror`, off in the cpu preset to save time) is a left-right mirror
copy of every training slice, the same for all models. The smoke preset runs
fold 0 only (`folds_to_run`).

Initial level set (same rule for LSE and LSN): the signed distance
(negative inside, clipped to +-`clip` pixels) to the pixels of the
Gaussian-smoothed image (sigma 1) brighter than `init_threshold`, a
deliberately conservative seed inside the white matter that the level set
has to grow from.

Models per fold:
* `lse`: frozen finite-difference level set; its scalar settings (balloon
  `alpha`, edge contrast `image_scale`) are chosen by grid search on the
  TRAINING slabs (highest Dice), then applied to the test slab.
* `lsn` (`init="input"`, same initial level set): the Level Set Network
  STARTED AT THIS FOLD'S LSE: same steps, dt, alpha, image_scale, and its
  kernels start at the finite-difference stencils, so before training it
  computes exactly the LSE's segmentation. Trained on the training slabs
  (Adam `lsn_lr`, gradient norm clipped at `lsn_clipnorm`, binary
  cross-entropy, truncated backpropagation through the last
  `lsn_backprop_steps` steps), and kept at the epoch of best validation
  Dice, epoch 0 (the LSE itself) included, stopping after `lsn_patience`
  epochs without improvement, like the UNet's early stopping on the same
  slab. "LSN test" (slab k) is held out; "LSN validation" (slab k+1) is
  the selection slab, so it is NOT held out. What was tried before (each a
  run of this script; the results page names it): the zoo
  LSN started from scratch with 20 steps x dt 0.2, 15 fixed epochs, lr
  5e-3, scored LSN 0.759 < LSE 0.785; the same with the LSE's 60 steps
  did worse (a fold collapsed to Dice 0.0). The page also reports the LSN at its last
  epoch (no selection), to show what the selection adds.
* `unet`: trained on the same slabs, early stopping on the validation slab
  loss, best weights restored. Without batch normalisation: with ~40
  training slices its moving statistics lag behind the batch statistics
  and the BN UNet predicted all background in inference mode (Dice 0.0 on
  3 of 5 folds in a trial run), while the same UNet without BN reached
  ~0.9.

Dice: pooled over all pixels of a slab (not the mean of per-slice Dice),
prediction = probability > 0.5. The fold-0 UNet and LSN are saved as
`unet.keras` / `lsn.keras` in the output directory (for
`benchmarks/kernels_unet.py`).

J. Actor, "Identification of Kernels in a Convolutional Neural Network"
(liver CT, LiTS 2017), reported average DSC LSE 0.604, LSN test 0.692, LSN
validation 0.511, UNet 0.903.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from _common import benchmark_main, dice, markdown_table, preset_and_out_dir  # noqa: E402

NAME = "lse_lsn_unet"

#: Quotes of J. Actor's table (average row), for comparison only.
SEED_AVG = {"lse": 0.604, "lsn_test": 0.692, "lsn_val": 0.511, "unet": 0.903}

#: The LSN of this script's previous version (from scratch, 20 steps x dt 0.2, 15 fixed epochs, Adam 5e-3), mean
#: test Dice of its cpu-preset run of 2026-11-22, kept for the "what was tried" table; its JSON is in git.
EARLIER_LSN = {"test": 0.759, "source": "`git show f478586:benchmarks/results/lse_lsn_unet.json`"}

PRESETS = {
    "smoke": {
        "resolution": 2, "axis": 2, "min_pixels": 50, "slice_step": 3, "downsample": 2, "n_folds": 5,
        "init_threshold": 0.8, "clip": 10.0, "mirror": True,
        "lse_steps": 5, "lse_dt": 0.2, "lse_grid": {"alpha": [-0.5], "image_scale": [10.0]},
        "lsn_backprop_steps": 2, "lsn_epochs": 1, "lsn_patience": 1, "lsn_lr": 1e-3, "lsn_clipnorm": 1.0,
        "unet_depth": 2, "unet_filters": 4, "unet_batch_norm": False, "unet_epochs": 1, "unet_patience": 1,
        "unet_lr": 1e-3,
        "batch_size": 8, "seed": 0, "folds_to_run": [0],
    },
    "cpu": {
        "resolution": 2, "axis": 2, "min_pixels": 50, "slice_step": 1, "downsample": 1, "n_folds": 5,
        "init_threshold": 0.8, "clip": 10.0, "mirror": False,
        "lse_steps": 60, "lse_dt": 0.2, "lse_grid": {"alpha": [-1.0, -0.5], "image_scale": [10.0, 30.0]},
        "lsn_backprop_steps": 20, "lsn_epochs": 15, "lsn_patience": 5, "lsn_lr": 1e-3, "lsn_clipnorm": 1.0,
        "unet_depth": 3, "unet_filters": 8, "unet_batch_norm": False, "unet_epochs": 30, "unet_patience": 8,
        "unet_lr": 1e-3,
        "batch_size": 8, "seed": 0, "folds_to_run": None,
    },
    "paper": {
        "resolution": 1, "axis": 2, "min_pixels": 200, "slice_step": 1, "downsample": 1, "n_folds": 5,
        "init_threshold": 0.8, "clip": 20.0, "mirror": True,
        "lse_steps": 200, "lse_dt": 0.2,
        "lse_grid": {"alpha": [-1.0, -0.5, -0.25, 0.0], "image_scale": [10.0, 30.0, 100.0]},
        "lsn_backprop_steps": 40, "lsn_epochs": 60, "lsn_patience": 15, "lsn_lr": 1e-3, "lsn_clipnorm": 1.0,
        "unet_depth": 4, "unet_filters": 32, "unet_batch_norm": False, "unet_epochs": 200,
        "unet_patience": 20, "unet_lr": 1e-3,
        "batch_size": 8, "seed": 0, "folds_to_run": None,
    },
}


# ----------------------------------------------------------------------------- helpers


def slab_folds(n_items, n_folds=5):
    """Split `range(n_items)` into `n_folds` contiguous, disjoint slabs covering it.

    Returns:
        list of `n_folds` int arrays of consecutive indices (sizes differ by at most 1).

    Raises:
        ValueError: `n_folds` < 2 or more folds than items.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"`n_folds` must be an int >= 2. Received: n_folds={n_folds!r}")
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < n_folds:
        raise ValueError(f"`n_items` must be an int >= n_folds={n_folds}. Received: n_items={n_items!r}")
    return [np.asarray(a, dtype="int64") for a in np.array_split(np.arange(n_items), n_folds)]


def fold_split(k, n_folds=5):
    """`(test, validation, train)` slab ids of fold `k`: test k, validation (k+1) % n, train the rest."""
    if not 0 <= k < n_folds:
        raise ValueError(f"`k` must be in 0..{n_folds - 1}. Received: k={k}")
    val = (k + 1) % n_folds
    return k, val, [j for j in range(n_folds) if j not in (k, val)]


def initial_level_set(images, threshold, clip):
    """Signed distance (negative inside, clipped to +-clip) to `gaussian(image, 1) > threshold`, per slice."""
    from scipy import ndimage

    out = np.empty(images.shape[:3] + (1,), "float32")
    for i, img in enumerate(images[..., 0]):
        inside = ndimage.gaussian_filter(img.astype("float64"), 1.0) > threshold
        if not inside.any():
            out[i, ..., 0] = clip
            continue
        dist = ndimage.distance_transform_edt(~inside) - ndimage.distance_transform_edt(inside)
        out[i, ..., 0] = np.clip(dist, -clip, clip)
    return out


def _centre_crop(a, multiple):
    """Crop axes 1 and 2 of `(N, H, W)` centrally to multiples of `multiple`."""
    h, w = (a.shape[1] // multiple) * multiple, (a.shape[2] // multiple) * multiple
    y0, x0 = (a.shape[1] - h) // 2, (a.shape[2] - w) // 2
    return a[:, y0:y0 + h, x0:x0 + w]


def load_slices(settings):
    """`(images (N, H, W, 1) float32 in [0, 1], masks (N, H, W, 1) float32, slice_ids (N,))` from nilearn's MNI152."""
    from nilearn import datasets

    res = settings["resolution"]
    image = datasets.load_mni152_template(resolution=res).get_fdata()
    mask = datasets.load_mni152_wm_mask(resolution=res).get_fdata() > 0.5
    if image.shape != mask.shape:
        raise ValueError(f"template {image.shape} and white-matter mask {mask.shape} differ")
    axis = settings["axis"]
    image = np.moveaxis(image, axis, 0)
    mask = np.moveaxis(mask, axis, 0)
    image = image / image.max()
    step = settings["downsample"]
    image, mask = image[:, ::step, ::step], mask[:, ::step, ::step]
    multiple = 2 ** settings["unet_depth"]
    image, mask = _centre_crop(image, multiple), _centre_crop(mask, multiple)
    keep = np.flatnonzero(mask.reshape(len(mask), -1).sum(axis=1) >= settings["min_pixels"])
    keep = keep[::settings["slice_step"]]
    return (image[keep, ..., None].astype("float32"), mask[keep, ..., None].astype("float32"),
            keep.astype("int64"))


def _mirror(*arrays):
    return [np.concatenate([a, a[:, ::-1]], axis=0) for a in arrays]


def _resolve(preset, out_dir):
    settings, out_dir = preset_and_out_dir(PRESETS, preset, NAME, out_dir or None)
    return dict(settings), out_dir


def _predict(model, x, batch_size):
    return model.predict(x, batch_size=batch_size, verbose=0)[..., :1] > 0.5


def _no_jit(model):
    """XLA compilation of these small models costs far more than it saves on CPU."""
    model.jit_compile = False
    return model


def _lse_predict(image, u0, alpha, image_scale, s, chunk=32):
    """Frozen level set (compiled loop), `lse_steps` steps without smoothing or early stop, in chunks.

    The lecture's equation (balloon = g: `edge_threshold=None, region_margin=None`), the one the LSN started
    from it (`_lsn_from_lse`) reproduces before training.
    """
    from keras_medseg import zoo

    model = zoo.build("lse", alpha=float(alpha), image_scale=float(image_scale), steps=s["lse_steps"],
                      dt=s["lse_dt"], smoothing_sigma=None, tolerance=None, edge_threshold=None, region_margin=None)
    out = [np.asarray(model.predict_on_batch([image[i:i + chunk], u0[i:i + chunk]]))
           for i in range(0, len(image), chunk)]
    return np.concatenate(out, axis=0) > 0.5


def _tune_lse(image, u0, mask, s):
    """Grid search of (alpha, image_scale) on the training slabs; returns the best setting and its Dice."""
    best = None
    for alpha in s["lse_grid"]["alpha"]:
        for scale in s["lse_grid"]["image_scale"]:
            d = dice(mask, _lse_predict(image, u0, alpha, scale, s))
            if best is None or d > best[2]:
                best = (float(alpha), float(scale), d)
    return best


def _lsn_from_lse(alpha, image_scale, s):
    """An `lsn` whose forward pass is, before training, exactly the fold's tuned LSE.

    Same steps, dt, alpha, image_scale and stencil kernels (it takes the same
    initial level set as input); trained through its last `lsn_backprop_steps`
    steps with Adam (`lsn_lr`, gradient norm clipped at `lsn_clipnorm`) on
    binary cross-entropy.
    """
    import keras

    from keras_medseg import zoo

    model = zoo.build("lsn", init="input", steps=s["lse_steps"], dt=s["lse_dt"], alpha=float(alpha),
                      image_scale=float(image_scale), smoothing_sigma=None,
                      backprop_steps=min(s["lsn_backprop_steps"], s["lse_steps"]))
    model.compile(optimizer=keras.optimizers.Adam(s["lsn_lr"], clipnorm=s["lsn_clipnorm"]),
                  loss=keras.losses.BinaryCrossentropy())
    return _no_jit(model)


def best_validation_dice(x_val, y_val, patience, batch_size):
    """A Keras callback that keeps the weights of the best validation Dice.

    The Dice (pooled over pixels, probability > 0.5) is measured before
    training (epoch 0: for an LSN started at the LSE, the LSE itself) and
    after every epoch; training stops after `patience` epochs without
    improvement, and the callback's `restore()` puts the best weights back.
    Unlike `keras.callbacks.EarlyStopping` it monitors a segmentation score
    rather than a logged loss, and the untrained model is a candidate.
    Attributes after `fit`: `history` (Dice per epoch, epoch 0 first),
    `best_epoch`.
    """
    import keras

    class BestValidationDice(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history, self.best_epoch, self.best_weights, self._wait = [], 0, None, 0

        def _score(self, epoch):
            d = dice(y_val, _predict(self.model, x_val, batch_size))
            self.history.append(d)
            if self.best_weights is None or d > self.history[self.best_epoch]:
                self.best_epoch, self.best_weights, self._wait = epoch, self.model.get_weights(), 0
            else:
                self._wait += 1
                if self._wait >= patience:
                    self.model.stop_training = True

        def on_train_begin(self, logs=None):
            self._score(0)

        def on_epoch_end(self, epoch, logs=None):
            self._score(epoch + 1)

        def restore(self):
            self.model.set_weights(self.best_weights)

    return BestValidationDice()


# ----------------------------------------------------------------------------- run


def run(preset="cpu", out_dir=None, progress=True):
    """Run the 5-fold comparison; see the module docstring. Returns a JSON-serialisable dict."""
    s, out_dir = _resolve(preset, out_dir)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from keras_medseg import zoo

    start = time.perf_counter()
    keras.utils.set_random_seed(s["seed"])
    images, masks, slice_ids = load_slices(s)
    u0 = initial_level_set(images, s["init_threshold"], s["clip"])
    slabs = slab_folds(len(images), s["n_folds"])
    verbose = 2 if progress else 0

    folds, curves, examples = [], [], None
    iterator = s["folds_to_run"] or range(s["n_folds"])
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=NAME, unit="fold")
    for k in iterator:
        t_fold = time.perf_counter()
        test_id, val_id, train_ids = fold_split(k, s["n_folds"])
        te, va = slabs[test_id], slabs[val_id]
        tr = np.concatenate([slabs[j] for j in train_ids])
        x_tr, u_tr, y_tr = images[tr], u0[tr], masks[tr]
        if s["mirror"]:
            x_tr, u_tr, y_tr = _mirror(x_tr, u_tr, y_tr)

        # LSE: frozen; settings chosen on the training slabs
        t0 = time.perf_counter()
        alpha, scale, lse_train = _tune_lse(images[tr], u0[tr], masks[tr], s)
        lse_test_pred = _lse_predict(images[te], u0[te], alpha, scale, s)
        lse_seconds = time.perf_counter() - t0

        # LSN: starts AT this fold's tuned LSE, trained, kept at its best validation Dice (epoch 0 = the LSE)
        keras.utils.set_random_seed(s["seed"] + k)
        t0 = time.perf_counter()
        lsn = _lsn_from_lse(alpha, scale, s)
        select = best_validation_dice([images[va], u0[va]], masks[va], patience=s["lsn_patience"],
                                    batch_size=s["batch_size"])
        h_lsn = lsn.fit([x_tr, u_tr], y_tr, batch_size=s["batch_size"], epochs=s["lsn_epochs"], shuffle=True,
                        validation_data=([images[va], u0[va]], masks[va]), callbacks=[select],
                        verbose=verbose)
        lsn_last_test = dice(masks[te], _predict(lsn, [images[te], u0[te]], s["batch_size"]))
        select.restore()
        lsn_seconds = time.perf_counter() - t0
        lsn_test_pred = _predict(lsn, [images[te], u0[te]], s["batch_size"])
        lsn_val_pred = _predict(lsn, [images[va], u0[va]], s["batch_size"])

        # UNet: early stopping on the validation slab, best weights restored
        keras.utils.set_random_seed(s["seed"] + k)
        t0 = time.perf_counter()
        unet = _no_jit(zoo.build("unet", depth=s["unet_depth"], filters=s["unet_filters"],
                                 batch_norm=s["unet_batch_norm"], learning_rate=s["unet_lr"]))
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=s["unet_patience"],
                                             restore_best_weights=True)
        h_unet = unet.fit(x_tr, y_tr, batch_size=s["batch_size"], epochs=s["unet_epochs"], shuffle=True,
                          validation_data=(images[va], masks[va]), callbacks=[stop], verbose=verbose)
        unet_seconds = time.perf_counter() - t0
        unet_test_pred = _predict(unet, images[te], s["batch_size"])

        if not folds:
            unet.save(os.path.join(out_dir, "unet.keras"))
            lsn.save(os.path.join(out_dir, "lsn.keras"))
            examples = (te, lse_test_pred, lsn_test_pred, unet_test_pred)
        step_layer = lsn.get_layer("lsn_evolution").step
        coeffs = {n: float(keras.ops.convert_to_numpy(getattr(step_layer, f"{n}_weight"))) for n in
                  ("alpha", "beta", "gamma")}
        folds.append({
            "fold": k, "test_slab": int(test_id), "val_slab": int(val_id), "train_slabs": [int(j) for j in train_ids],
            "test_slices": [int(slice_ids[te[0]]), int(slice_ids[te[-1]])],
            "n_train": int(len(tr)), "n_val": int(len(va)), "n_test": int(len(te)),
            "init_dice_test": dice(masks[te], u0[te] < 0),
            "lse": dice(masks[te], lse_test_pred), "lse_alpha": alpha, "lse_image_scale": scale,
            "lse_train_dice": float(lse_train),
            "lsn_test": dice(masks[te], lsn_test_pred), "lsn_val": dice(masks[va], lsn_val_pred),
            "lsn_coefficients": coeffs, "lsn_epoch": int(select.best_epoch),
            "lsn_val_dice_per_epoch": [float(v) for v in select.history],
            "lsn_last_epoch_test": float(lsn_last_test),
            "unet": dice(masks[te], unet_test_pred),
            "unet_epochs_run": int(len(h_unet.history["loss"])),
            "seconds": {"lse": lse_seconds, "lsn": lsn_seconds, "unet": unet_seconds,
                        "fold": time.perf_counter() - t_fold},
        })
        curves.append({"lsn_loss": [float(v) for v in h_lsn.history["loss"]],
                       "lsn_val_loss": [float(v) for v in h_lsn.history["val_loss"]],
                       "unet_loss": [float(v) for v in h_unet.history["loss"]],
                       "unet_val_loss": [float(v) for v in h_unet.history["val_loss"]]})

    cols = ("lse", "lsn_test", "lsn_val", "unet")
    summary = {
        "avg": {c: float(np.mean([f[c] for f in folds])) for c in cols},
        "median": {c: float(np.median([f[c] for f in folds])) for c in cols},
    }
    figures = [_plot_examples(out_dir, images, masks, examples), _plot_curves(out_dir, curves)]
    return {
        "preset": preset, "settings": s, "seconds": time.perf_counter() - start,
        "data": {"source": "nilearn MNI152 template + white-matter mask", "resolution_mm": s["resolution"],
                 "slice_axis": s["axis"], "image_shape": [int(v) for v in images.shape[1:3]],
                 "n_slices": int(len(images)), "slab_sizes": [int(len(a)) for a in slabs]},
        "folds": folds, "summary": summary, "curves": curves, "figures": figures,
        "unet_model": "unet.keras", "lsn_model": "lsn.keras", "saved_fold": 0,
        "params": {"lse": int(zoo.build("lse", steps=1).count_params()),
                   "lsn": int(zoo.build("lsn", init="input", steps=1).count_params()),
                   "unet": int(zoo.build("unet", depth=s["unet_depth"], filters=s["unet_filters"],
                                             batch_norm=s["unet_batch_norm"]).count_params())},
    }


def _plot_examples(out_dir, images, masks, examples):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    te, *preds = examples
    picks = np.linspace(0.25 * (len(te) - 1), 0.85 * (len(te) - 1), 3).round().astype(int)
    names = ("LSE", "LSN", "UNet")
    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 3.2 * len(picks)), squeeze=False)
    for r, p in enumerate(picks):
        for c, (name, pred) in enumerate(zip(names, preds)):
            ax = axes[r, c]
            ax.imshow(images[te[p], ..., 0].T, cmap="gray", origin="lower")
            ax.contour(masks[te[p], ..., 0].T, levels=[0.5], colors="lime", linewidths=0.8, origin="lower")
            if pred[p, ..., 0].any():
                ax.contour(pred[p, ..., 0].T.astype(float), levels=[0.5], colors="red", linewidths=0.8,
                           origin="lower")
            ax.set_title(f"{name}, Dice {dice(masks[te[p]], pred[p]):.3f}", fontsize=9)
            ax.axis("off")
    fig.suptitle("fold 0 test slices: white matter (green) vs prediction (red)", fontsize=10)
    fig.tight_layout()
    path = "examples.png"
    fig.savefig(os.path.join(out_dir, path), dpi=100)
    plt.close(fig)
    return path


def _plot_curves(out_dir, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, c in enumerate(curves):
        for ax, model in zip(axes, ("lsn", "unet")):
            line, = ax.plot(c[f"{model}_loss"], lw=1, label=f"fold {k} train")
            ax.plot(c[f"{model}_val_loss"], lw=1, ls="--", color=line.get_color(), label=f"fold {k} val")
    for ax, title in zip(axes, ("LSN", "UNet")):
        ax.set_title(f"{title}: binary cross-entropy")
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = "training_curves.png"
    fig.savefig(os.path.join(out_dir, path), dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- report


TABLE_HEADER = ["K-Fold", "LSE", "LSN Test", "LSN Validation", "UNet"]


def headline(result):
    """One line for the top of RESULTS.md and the README, computed from `result`."""
    avg = result["summary"]["avg"]
    holds = avg["lse"] < avg["lsn_test"] < avg["unet"]
    return (f"mean Dice over 5 folds: LSE {avg['lse']:.3f}, LSN {avg['lsn_test']:.3f} (validation "
            f"{avg['lsn_val']:.3f}), UNet {avg['unet']:.3f}; the lecture's ordering LSE < LSN < UNet "
            + ("holds." if holds else "does NOT hold."))


def markdown(result, fig_prefix=""):
    """Section body for RESULTS.md: the per-fold Dice table in the lecture's layout, figures, comparison."""
    cols = ("lse", "lsn_test", "lsn_val", "unet")
    rows = [[f["fold"]] + [round(f[c], 3) for c in cols] for f in result["folds"]]
    rows.append(["Avg"] + [round(result["summary"]["avg"][c], 3) for c in cols])
    rows.append(["Median"] + [round(result["summary"]["median"][c], 3) for c in cols])
    rows.append(["Actor 2020 Avg (liver CT, quoted)"] + [SEED_AVG[c] for c in cols])
    d, s = result["data"], result["settings"]
    avg = result["summary"]["avg"]
    holds = avg["lse"] < avg["lsn_test"] < avg["unet"]
    per_fold = sum(f["lse"] < f["lsn_test"] < f["unet"] for f in result["folds"])
    init_avg = float(np.mean([f["init_dice_test"] for f in result["folds"]]))
    lse_gain = avg["lse"] - init_avg
    last_avg = float(np.mean([f["lsn_last_epoch_test"] for f in result["folds"]]))
    sec = result["seconds"]
    timing = markdown_table(
        ["fold", "test slices (axial index)", "LSE alpha / image_scale", "LSE (s)", "LSN (s)", "UNet (s)",
         "UNet epochs"],
        [[f["fold"], f"{f['test_slices'][0]}-{f['test_slices'][1]}", f"{f['lse_alpha']:g} / {f['lse_image_scale']:g}",
          round(f["seconds"]["lse"], 1), round(f["seconds"]["lsn"], 1), round(f["seconds"]["unet"], 1),
          f["unet_epochs_run"]] for f in result["folds"]],
    )
    text = [
        f"White matter of the MNI152 template ({d['resolution_mm']} mm, nilearn), {d['n_slices']} axial slices of "
        f"{d['image_shape'][0]}x{d['image_shape'][1]} pixels in 5 contiguous slabs ({d['slab_sizes']} slices); "
        f"fold k tests on slab k, validates on slab k+1 and trains on the rest. Dice pooled over the slab's pixels. "
        f"LSE: {s['lse_steps']} frozen steps, alpha and image_scale chosen on the training slabs; LSN: the "
        f"fold's LSE with learned kernels and coefficients, up to {s['lsn_epochs']} epochs (backpropagation "
        f"through the last {s['lsn_backprop_steps']} steps), kept at its best validation Dice (epoch 0, the "
        f"LSE itself, included), so 'LSN Validation' is not held out; UNet: depth {s['unet_depth']}, "
        f"{s['unet_filters']} filters, up to {s['unet_epochs']} epochs with early stopping on the validation slab. "
        f"Both level sets start from the signed distance to the smoothed image thresholded at "
        f"{s['init_threshold']} (mean test Dice of that seed region alone: {init_avg:.3f}). "
        f"Preset `{result['preset']}`, {sec / 60:.1f} min in total.",
        "",
        "### Dice per fold",
        "",
        markdown_table(TABLE_HEADER, rows),
        "",
        f"Parameters: LSE {result['params']['lse']}, LSN {result['params']['lsn']}, UNet {result['params']['unet']}.",
        "",
        timing,
        "",
        f"![Fold-0 test slices with the LSE, LSN and UNet contours]({fig_prefix}{result['figures'][0]})",
        "",
        f"![LSN and UNet training curves]({fig_prefix}{result['figures'][1]})",
        "",
        "### What this shows",
        "",
        f"The lecture's ordering LSE < LSN < UNet (on average) {'holds' if holds else 'does not hold'} here "
        f"(LSE {avg['lse']:.3f}, LSN test {avg['lsn_test']:.3f}, UNet {avg['unet']:.3f}; lecture: "
        f"{SEED_AVG['lse']} < {SEED_AVG['lsn_test']} < {SEED_AVG['unet']}), "
        f"and it holds in {per_fold} of {len(result['folds'])} folds. "
        f"LSN validation averages {avg['lsn_val']:.3f} vs {avg['lsn_test']:.3f} on the test slab (the validation "
        "slab chose the LSN's epoch, so only the test column is held out; in the lecture validation was lower). "
        f"The frozen level set {'improves' if lse_gain > 0 else 'does not improve'} on its initial region "
        f"({init_avg:.3f} -> {avg['lse']:.3f}). "
        "The task differs from the lecture's (white matter on a single, noise-free average template, whose folds "
        "are different anatomy of one brain, instead of liver in clinical CT), so absolute numbers are not "
        "comparable; only the ordering is.",
        "",
        "### What was tried for the LSN",
        "",
        markdown_table(
            ["LSN variant", "mean test Dice", "run"],
            [["zoo LSN from scratch: 20 steps x dt 0.2, 15 fixed epochs, Adam 5e-3, no selection",
              EARLIER_LSN["test"], f"previous run of this script, 2026-11-22 ({EARLIER_LSN['source']})"],
             ["started at the fold's LSE, last epoch (no selection)", round(last_avg, 3), "this run"],
             ["started at the fold's LSE, best validation epoch (reported above)", round(avg["lsn_test"], 3),
              "this run"]]),
        "",
        f"Epoch kept per fold (0 = the LSE unchanged): {[f['lsn_epoch'] for f in result['folds']]}; "
        f"LSN test >= LSE in {sum(f['lsn_test'] >= f['lse'] for f in result['folds'])} of "
        f"{len(result['folds'])} folds.",
    ]
    return "\n".join(text)


def main(argv=None):
    return benchmark_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
