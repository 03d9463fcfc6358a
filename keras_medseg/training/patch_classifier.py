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

Over several processes (`processes=`, with `coordinator=`, `process_id=` on
several hosts; `keras_medseg.training.distribute`) `batch_size` is the global
batch: each process draws its `batch_size / processes` patches of every step
from its own disjoint part of the training patches
(`ThreeStepSampler(num_shards=...)`), the gradients are averaged, and the
validation loss is computed over the processes' parts of the validation
patches. The ROC-AUC of the early stopping is computed by every process on
the whole validation set with a local copy of the model, the scores averaged
over the processes, so every process stops at the same epoch. Rank 0 writes
the run folder.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from keras_medseg import zoo
from keras_medseg.data.batches import check_shard
from keras_medseg.data.slides import PatchSequence, PatchStore, ThreeStepSampler
from keras_medseg.data.sources import PatchStoreSource, resolve_source
from keras_medseg.training import runner
from keras_medseg.training.callbacks import ROCAUCEarlyStopping
from keras_medseg.training.distribute import current_group, distributable
from keras_medseg.training.recipes import vgg16_recipe
from keras_medseg.utils.validation import check_positive_int
from keras_medseg.zoo.vgg16_classifier import RECIPE

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


class _RanksROCAUC(ROCAUCEarlyStopping):
    """`ROCAUCEarlyStopping` inside a run over several processes (the same as it in one process).

    Each process predicts the whole validation set with a local copy of the
    model (`ProcessGroup.local_model`: a prediction of the distributed model
    would be a collective over a global batch) and the scores are averaged
    over the processes (`ProcessGroup.mean`), so every process computes the
    same ROC-AUC and stops at the same epoch. Arguments as
    `keras_medseg.training.callbacks.ROCAUCEarlyStopping`.
    """

    def predict_validation(self):
        group = current_group()
        if not group.distributed:
            return super().predict_validation()
        model = self.model  # (JAX: the trained state synced into the variables first)
        self._model = group.local_model(model)
        try:
            with group.local_scope():  # (JAX: outside the global distribution that `fit` runs in)
                y, scores = super().predict_validation()
        finally:
            self._model = model
        return y, np.asarray(group.mean(scores), np.float64)


def _split(store, batch_size, n_train, n_val, seed, num_shards=1, shard_index=0):
    """`(sampler, (x_val, y_val))`: this process's training sampler and the whole validation set.

    The validation split is `_stratified_split`'s (every process the same); the training patches are split by
    `ThreeStepSampler(num_shards, shard_index)`, each process drawing `batch_size // num_shards` patches per
    step, `n_train // batch_size` steps per epoch.
    """
    with PatchStore(store) as s:
        labels = s.labels
    val_idx, fit_idx = _stratified_split(labels, n_val, seed, store)
    val = PatchSequence(store, batch_size=batch_size, indices=val_idx)
    x_val = np.concatenate([val[i][0] for i in range(len(val))])
    y_val = np.concatenate([val[i][1] for i in range(len(val))])
    steps = max(1, int(n_train) // int(batch_size))
    sampler = ThreeStepSampler(store, batch_size=batch_size // num_shards, steps_per_epoch=steps, seed=seed,
                               indices=fit_idx, num_shards=num_shards, shard_index=shard_index)
    return sampler, (x_val, y_val)


@distributable
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
            `keras.Model` taking the store's patches to one probability (one
            process only).
        store: str or `PatchStoreSource`, the HDF5 patch store (`keras-medseg patches extract`).
        epochs: int, training epochs (default 5).
        batch_size: int, batch size (default 16); over several processes the
            global batch, a multiple of `processes`.
        n_train: int, training patches per epoch (default 1024).
        n_val: int, validation patches, at most a quarter of the store (default 64).
        seed: int, seed of the split, the sampler and the weights (default 0).
        out_dir: str, the run folder: `best.keras`, `log.csv`, `backup/`
            (default `runs/<model name>`); a rerun resumes there.
        model_kwargs: dict, extra builder arguments (default None).
        verbose: int, Keras verbosity (default 1: a progress bar over each
            epoch's steps, as `train` shows; 2 one line per epoch; 0 silent).
        backup_every: int or None (default: back up at epoch ends only): also
            back the training state up every that many batches.
        processes: int, train over this many processes (default None: this
            one), as for `keras_medseg.training.train`: alone, starts them on
            this host; each process samples its own disjoint part of the
            training patches (see the module docstring).
        coordinator: "HOST:PORT" of process 0 (TensorFlow: every process's,
            comma-separated), to join a run over several hosts, with
            `process_id` (default None).
        process_id: int, this process's rank in `[0, processes)` (default None).

    Returns:
        `PatchTrainResult` (the best ROC-AUC and epoch over every epoch of the
        run folder, resumed ones included; on a process other than 0 of a run
        over several, over this call's epochs).

    Raises:
        FileNotFoundError: `store` does not exist.
        ValueError: not a patch store, fewer than 2 positive or 2 negative
            patches, an unknown model name or argument, a built model or a
            `batch_size` that is not a multiple of `processes` in a run over
            several processes, a process's part of the training patches
            without a patch of some label.
        RuntimeError: another process trains into `out_dir`.
        keras_medseg.training.distribute.DistributedError: a process of a run
            over several failed, a port in use, an unreachable coordinator.

    Example:

    >>> r = train_patch_classifier("vgg16_classifier", "patches.h5", epochs=1,
    ...                            model_kwargs={"input_shape": (32, 32, 3)})  # doctest: +SKIP
    >>> r = train_patch_classifier("vgg16_classifier", "patches.h5", batch_size=32, processes=2)  # doctest: +SKIP
    """
    group = current_group()
    batch_size = check_positive_int(batch_size, "batch_size")
    check_shard(group.size, group.rank, batch_size)
    if group.distributed and not isinstance(model, str):
        raise ValueError(f"Training over several processes needs a zoo model name (each process builds it in "
                         f"its engine's scope). Received: model={type(model).__name__}")
    source = resolve_source(store)
    if not isinstance(source, PatchStoreSource):
        raise ValueError(f"`store` must be an HDF5 patch store (.h5/.hdf5). Received: store={store!r}")
    store = source.path
    if not os.path.isfile(store):
        raise FileNotFoundError(f"Patch store not found: --data {store!r}")
    with PatchStore(store) as s:
        size, channels = s.patch_size, s.channels
    if isinstance(model, str):
        name, kwargs = model, dict(model_kwargs or {})
        if "input_shape" in zoo.describe(model)["arguments"]:
            kwargs.setdefault("input_shape", (size, size, channels))
        runner.set_random_seed(seed)  # the same weights on every process; no TensorFlow import in JAX/torch
        with group.model_scope():
            model = zoo.build(model, **kwargs)
    elif isinstance(model, keras.Model):
        if model_kwargs:
            raise ValueError(f"`model_kwargs` are builder arguments of a zoo name; the model is built already. "
                             f"Received: model_kwargs={model_kwargs!r}")
        name = model.name
    else:
        raise TypeError(f"`model` must be a zoo name or a keras.Model. Received: model={model!r}")
    sampler, (x_val, y_val) = _split(store, batch_size, n_train, n_val, seed, group.size, group.rank)
    _, _, callbacks = vgg16_recipe(None)
    callbacks.insert(0, _RanksROCAUC((x_val, y_val), patience=RECIPE["stop_patience"],
                                                 batch_size=batch_size))
    run = runner.fit(model, sampler, out_dir=out_dir or os.path.join("runs", name), epochs=epochs,
                     validation_data=(x_val, y_val), monitor="val_roc_auc", mode="max", backup_every=backup_every,
                     callbacks=callbacks, verbose=verbose)
    rows = run.rows if group.is_writer else [{"val_roc_auc": v} for v in run.history.get("val_roc_auc", [])]
    aucs = [float(row["val_roc_auc"]) for row in rows if row.get("val_roc_auc") not in (None, "")]
    if not aucs:
        raise ValueError(f"No epoch of the run in {run.out_dir!r} logged a validation ROC-AUC.")
    return PatchTrainResult(run.history, max(aucs), int(np.argmax(aucs)) + 1, len(aucs), len(y_val),
                            run.checkpoint, run.log)
