"""Training a patch classifier (e.g. `vgg16_classifier`) on an HDF5 patch store of whole-slide images.

`train_patch_classifier(model, store, ...)` holds a stratified random share of
the patches out for validation, draws training batches with the three-step
sampler (`keras_medseg.data.slides.ThreeStepSampler`) from the others and fits
with the VGG16 recipe's callbacks (`keras_medseg.training.recipes`): ROC-AUC
early stopping and LR halving, through the one fit runner
(`keras_medseg.training.runner.fit`): `best.keras` (best validation ROC-AUC),
`log.csv` and `backup/` in `out_dir`, a run-folder lock, backups every
`backup_every` batches, and a rerun resumes. `keras-medseg train MODEL --data
store.h5` calls it.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from keras_medseg import zoo
from keras_medseg.data.slides import PatchSequence, PatchStore, ThreeStepSampler
from keras_medseg.data.sources import PatchStoreSource, resolve_source
from keras_medseg.training import runner
from keras_medseg.training.recipes import vgg16_recipe

__all__ = ["PatchTrainResult", "train_patch_classifier"]


@dataclasses.dataclass
class PatchTrainResult:
    """What `train_patch_classifier` returns: history, best validation ROC-AUC and file paths."""

    history: dict
    best_roc_auc: float
    best_epoch: int
    num_epochs: int
    num_val: int
    checkpoint: str
    log: str


def _stratified_split(labels, n_val, seed, store):
    rng = np.random.default_rng(seed)
    pos, neg = rng.permutation(np.flatnonzero(labels == 1)), rng.permutation(np.flatnonzero(labels == 0))
    if pos.size < 2 or neg.size < 2:
        raise ValueError(
            f"Patch store {store!r} needs at least 2 positive and 2 negative patches for a training/validation "
            f"split. Received: {pos.size} positive, {neg.size} negative"
        )
    n = len(labels)
    n_val = max(2, min(int(n_val), n // 4))
    n_pos = int(np.clip(round(n_val * pos.size / n), 1, pos.size - 1))
    n_neg = int(np.clip(n_val - n_pos, 1, neg.size - 1))
    val_idx = np.sort(np.concatenate([pos[:n_pos], neg[:n_neg]]))
    fit_idx = np.sort(np.concatenate([pos[n_pos:], neg[n_neg:]]))
    return val_idx, fit_idx


def train_patch_classifier(model: str | keras.Model, store: str | PatchStoreSource, epochs: int = 5,
                           batch_size: int = 16, n_train: int = 1024, n_val: int = 64, seed: int = 0,
                           out_dir: str | None = None, model_kwargs: dict | None = None, verbose: int = 1,
                           backup_every: int | None = None) -> PatchTrainResult:
    """Train a zoo patch classifier on an HDF5 patch store with the VGG16 recipe's callbacks.

    A stratified random `n_val` patches (seeded; both classes on both sides)
    are held out for validation; training batches come from the three-step
    sampler over the others (`n_train // batch_size` steps per epoch).

    Args:
        model: str, a zoo model name (built with `input_shape` from the store
            when the builder takes one; the builder compiles it), or a compiled
            `keras.Model` taking the store's patches to one probability.
        store: str or `PatchStoreSource`, the HDF5 patch store (`keras-medseg patches extract`).
        epochs: int, training epochs (default 5).
        batch_size: int, batch size (default 16).
        n_train: int, training patches per epoch (default 1024).
        n_val: int, validation patches, at most a quarter of the store (default 64).
        seed: int, split and sampler seed (default 0).
        out_dir: str, the run folder: `best.keras`, `log.csv`, `backup/`
            (default `runs/<model name>`); a rerun resumes there.
        model_kwargs: dict, extra builder arguments (default None).
        verbose: int, Keras verbosity (default 1: a progress bar over each
            epoch's steps, as `train` shows; 2 one line per epoch; 0 silent).
        backup_every: int or None (default: back up at epoch ends only): also
            back the training state up every that many batches.

    Returns:
        `PatchTrainResult` (the best ROC-AUC and epoch over every epoch of the
        run folder, resumed ones included).

    Raises:
        FileNotFoundError: `store` does not exist.
        ValueError: not a patch store, fewer than 2 positive or 2 negative
            patches, an unknown model name or argument.
        RuntimeError: another process trains into `out_dir`.

    Example:

    >>> r = train_patch_classifier("vgg16_classifier", "patches.h5", epochs=1,
    ...                            model_kwargs={"input_shape": (32, 32, 3)})  # doctest: +SKIP
    """
    source = resolve_source(store)
    if not isinstance(source, PatchStoreSource):
        raise ValueError(f"`store` must be an HDF5 patch store (.h5/.hdf5). Received: store={store!r}")
    store = source.path
    if not os.path.isfile(store):
        raise FileNotFoundError(f"Patch store not found: --data {store!r}")
    with PatchStore(store) as s:
        size, channels, labels = s.patch_size, s.channels, s.labels
    if isinstance(model, str):
        name, kwargs = model, dict(model_kwargs or {})
        if "input_shape" in zoo.describe(model)["arguments"]:
            kwargs.setdefault("input_shape", (size, size, channels))
        model = zoo.build(model, **kwargs)
    elif isinstance(model, keras.Model):
        if model_kwargs:
            raise ValueError(f"`model_kwargs` are builder arguments of a zoo name; the model is built already. "
                             f"Received: model_kwargs={model_kwargs!r}")
        name = model.name
    else:
        raise TypeError(f"`model` must be a zoo name or a keras.Model. Received: model={model!r}")
    val_idx, fit_idx = _stratified_split(labels, n_val, seed, store)
    val = PatchSequence(store, batch_size=batch_size, indices=val_idx)
    x_val = np.concatenate([val[i][0] for i in range(len(val))])
    y_val = np.concatenate([val[i][1] for i in range(len(val))])
    steps = max(1, int(n_train) // int(batch_size))
    sampler = ThreeStepSampler(store, batch_size=batch_size, steps_per_epoch=steps, seed=seed, indices=fit_idx)
    _, _, callbacks = vgg16_recipe((x_val, y_val), batch_size=batch_size)
    run = runner.fit(model, sampler, out_dir=out_dir or os.path.join("runs", name), epochs=epochs,
                     validation_data=(x_val, y_val), monitor="val_roc_auc", mode="max", backup_every=backup_every,
                     callbacks=callbacks, verbose=verbose)
    aucs = [float(row["val_roc_auc"]) for row in run.rows if row.get("val_roc_auc") not in (None, "")]
    if not aucs:
        raise ValueError(f"No epoch of the run in {run.out_dir!r} logged a validation ROC-AUC.")
    return PatchTrainResult(run.history, max(aucs), int(np.argmax(aucs)) + 1, len(aucs), len(val_idx),
                            run.checkpoint, run.log)
