"""The one fit runner: run folder, lock, backups, resume, CSV log, best checkpoint, then the caller's callbacks.

Every training entry point of the package fits through `fit(model, ...)`:
`keras_medseg.training.train` (segmentation arrays), `train_volumes` (lazy
volume patches), `train_patch_classifier` (HDF5 patch stores) and the Q-tips
demo. A run folder `out_dir` holds:

* `.lock`: one training process per folder (`RunFolderLock`, held for the
  whole call; a second process is refused in one line, the lock dies with its
  process);
* `best.keras`: the best model by `monitor`, written atomically, with the
  preprocessing spec inside when one is given (`AtomicModelCheckpoint`);
* `backup/`: the training state at every epoch end and, with
  `backup_every=N`, every N batches (`CrashSafeBackup`);
* `log.csv`: one row per epoch across restarts (`ResumableCSVLogger`).

Calling `fit` again with the same folder resumes: the weights, optimizer state
and epoch counter come back from `backup/` and training goes on to `epochs`
(a finished run trains nothing more). A folder without a backup starts
afresh: a best score left there by an earlier run is forgotten, so the new run
writes its own `best.keras`. `resume=False` always starts afresh (the backup
is deleted once the lock is held). The details of a kill mid-epoch are in
`keras_medseg.training.checkpointing`.

The caller's callbacks run before the checkpoint, backup and log (so a
callback that adds a log key, e.g. `ROCAUCEarlyStopping`'s `val_roc_auc`, is
seen by all three).

In a run over several processes (`keras_medseg.training.distribute`), rank 0
alone holds the lock and writes the folder; the others wait at a barrier
until rank 0 has prepared it, restore the same backup (read only) and wait
again at the end until it is written. Array data are split by rank
(`keras_medseg.data.ArrayBatches`: `batch_size` is the global batch), a
dataset is used as given (split it yourself, e.g.
`VolumeDataset(num_shards=...)`), and only rank 0 shows a progress bar. A
dataset with `set_epoch` (`ArrayBatches`, `VolumeDataset`,
`ThreeStepSampler`) is set to each epoch as it begins (`SetEpoch`) and its
batches are read in its own order (Keras' `shuffle` of the batch order, drawn
from the global random state, is off), so a resumed run draws the batches the
uninterrupted one would have.

Example:

>>> run = keras_medseg.training.runner.fit(model, x, y, out_dir="runs/u", epochs=3,
...                                        validation_data=(xv, yv), backup_every=50)  # doctest: +SKIP
>>> run.checkpoint, len(run.rows)  # doctest: +SKIP
('runs/u/best.keras', 3)
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import shutil

import keras

from keras_medseg.training.checkpointing import CrashSafeBackup, RunFolderLock, resumable_callbacks
from keras_medseg.training.distribute.group import current_group
from keras_medseg.utils.validation import check_positive_int

__all__ = ["RunResult", "SetEpoch", "fit", "set_random_seed"]

CHECKPOINT_NAME = "best.keras"
LOG_NAME = "log.csv"
BACKUP_NAME = "backup"


@dataclasses.dataclass
class RunResult:
    """What `fit` returns.

    Attributes:
        history: `History.history` of this call (empty when a finished run is started again).
        rows: every epoch logged in `log.csv` so far, resumed runs included (list of dicts of strings).
        checkpoint: path of `best.keras` (absent when no epoch ended with a finite `monitor`).
        log: path of `log.csv`.
        out_dir: the run folder.
        initial_epoch: the epoch this call started from (0 for a fresh run).
    """

    history: dict
    rows: list
    checkpoint: str
    log: str
    out_dir: str
    initial_epoch: int = 0

    def logged_history(self):
        """The whole run's history from `log.csv`: `{"epoch": [0, 1, ...], key: [floats]}` over every epoch
        logged, the epochs before a resume included (what `history.png` is drawn from; `history` holds only
        this call's epochs). Empty when nothing was logged; a cell that is not a number becomes NaN."""
        out = {}
        for row in self.rows:
            for key, value in row.items():
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    number = float("nan")
                out.setdefault(key, []).append(int(number) if key == "epoch" else number)
        return out


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)` without importing TensorFlow into a JAX or torch process.

    Keras seeds TensorFlow whenever it is installed, and so imports it: about
    3 CPU s (measured on 2 cores) in every process of a JAX or torch run,
    which never uses it. Here TensorFlow is seeded when it is the backend or
    already imported (a caller's `tf.data` pipeline), as Keras does; else
    Python, NumPy, Keras' global seed (the weights of unseeded initializers,
    dropout) and torch are seeded exactly as Keras seeds them.

    Args:
        seed: int.

    Raises:
        ValueError: `seed` not an int.
    """
    import sys

    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    _seed_without_tensorflow(seed)


def _seed_without_tensorflow(seed):
    """What `keras.utils.set_random_seed` does (Keras 3 `rng_utils`), TensorFlow left out."""
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)  # re-made from the seed
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def _forget_best(checkpoint):
    """A run without a backup is a new run: an old best score must not stop it writing its own `best.keras`."""
    state = checkpoint + ".best.json"
    if os.path.exists(state):
        os.remove(state)


def read_log(path):
    """The rows of a run's `log.csv` as dicts (empty list when there is none)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class SetEpoch(keras.callbacks.Callback):
    """`dataset.set_epoch(epoch)` as each epoch begins, with the epoch number `fit` counts.

    A seeded dataset (`ArrayBatches`, `VolumeDataset`, `ThreeStepSampler`)
    then draws the batches of the run's epoch `e`, also when the run resumed
    at `e` and whatever extra `on_epoch_end` calls Keras makes (it calls one
    before the first epoch, after peeking at a batch to build the model).
    """

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)


def _is_arrays(x):
    return x is not None and not isinstance(x, keras.utils.PyDataset) and hasattr(x, "shape")


def _split_arrays(group, x, y, validation_data, fit_kwargs, seed):
    """Arrays -> this rank's `ArrayBatches` (training: shuffled from `seed`; validation: in order)."""
    from keras_medseg.data.batches import ArrayBatches

    batch_size = fit_kwargs.pop("batch_size", None) or 32
    if _is_arrays(x):
        x = ArrayBatches(x, y, fit_kwargs.pop("sample_weight", None), batch_size=batch_size,
                         shuffle=bool(fit_kwargs.pop("shuffle", True)), seed=seed, num_shards=group.size,
                         shard_index=group.rank)
        y = None
    if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3) and \
            _is_arrays(validation_data[0]):
        batch = fit_kwargs.pop("validation_batch_size", None) or batch_size
        validation_data = ArrayBatches(*validation_data, batch_size=max(1, batch // group.size) * group.size,
                                       shuffle=False, num_shards=group.size, shard_index=group.rank)
    return x, y, validation_data


def fit(model, x=None, y=None, *, out_dir, epochs, validation_data=None, monitor="val_loss", mode="auto",
        backup_every=None, preprocessing=None, callbacks=None, verbose=1, resume=True, seed=None,
        **fit_kwargs) -> RunResult:
    """Fit `model` in a run folder: locked, backed up, resumable, logged, best checkpoint kept.

    Args:
        model: a compiled `keras.Model`.
        x, y: training data as for `keras.Model.fit` (arrays, or a dataset /
            `keras.utils.PyDataset` as `x` with `y=None`).
        out_dir: str, the run folder (created).
        epochs: int, the total number of epochs of the run (a resumed run
            trains the remaining ones).
        validation_data: as for `keras.Model.fit` (default None).
        monitor: log key that decides `best.keras` (default "val_loss"; the
            training key when there is no validation data).
        mode: "auto" (default), "min" or "max" for `monitor`.
        backup_every: None (default: back up at every epoch end) or an int:
            also every that many batches.
        preprocessing: optional preprocessing spec stored inside `best.keras`
            (`keras_medseg.data.scans.preprocess.save_preprocessing` format),
            also when a finished run is started again.
        callbacks: the caller's Keras callbacks, run before the checkpoint,
            backup and log (default None).
        verbose: Keras verbosity (default 1, a progress bar).
        resume: True (default) resumes from `out_dir/backup`; False starts afresh.
        seed: int or None: array data are read in an order drawn from
            `(seed, epoch)` (`keras_medseg.data.ArrayBatches`), the same in
            one process and in several, so a run over `N` processes trains
            like one process with the same global batch, and a resumed run
            like an uninterrupted one (default None: Keras' own shuffle in
            one process, seed 0 over several processes).
        **fit_kwargs: other `keras.Model.fit` arguments (`batch_size`,
            `shuffle`, `sample_weight`, `steps_per_epoch`, ...).

    Returns:
        `RunResult`.

    Raises:
        ValueError: bad `epochs` or `backup_every`, an unreadable backup (named).
        RuntimeError: another process is training into `out_dir`.
        keras_medseg.utils.errors.DiskFullError: no space for a checkpoint
            or backup (the previous state is intact; rerun to resume).
    """
    epochs = check_positive_int(epochs, "epochs")
    if "initial_epoch" in fit_kwargs:
        raise ValueError("`initial_epoch` comes from the run folder's backup; pass resume=False to start afresh. "
                         f"Received: initial_epoch={fit_kwargs['initial_epoch']!r}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    checkpoint = os.path.join(out_dir, CHECKPOINT_NAME)
    log = os.path.join(out_dir, LOG_NAME)
    backup_dir = os.path.join(out_dir, BACKUP_NAME)
    group = current_group()
    lock = RunFolderLock(out_dir) if group.is_writer else contextlib.nullcontext()
    with lock:
        if group.is_writer:
            if not resume and os.path.isdir(backup_dir):
                shutil.rmtree(backup_dir)
            if CrashSafeBackup.resume_epoch(backup_dir) == 0 and \
                    not os.path.exists(os.path.join(backup_dir, "latest.weights.h5")):
                _forget_best(checkpoint)
        group.barrier("keras_medseg run folder ready")  # the others read the backup rank 0 decided on
        start = CrashSafeBackup.resume_epoch(backup_dir) if os.path.isdir(backup_dir) else 0
        if group.is_writer:
            saving = resumable_callbacks(out_dir, monitor=monitor, mode=mode, backup_every=backup_every,
                                         checkpoint_name=CHECKPOINT_NAME, log_name=LOG_NAME,
                                         preprocessing=preprocessing, lock=False)
        else:
            saving = [CrashSafeBackup(backup_dir, backup_every=backup_every, write=False)]
        saving = group.writer_callbacks(saving)  # every rank restores the backup the same way
        engine_cbs = group.fit_callbacks()
        if group.distributed or seed is not None:
            x, y, validation_data = _split_arrays(group, x, y, validation_data, fit_kwargs, seed or 0)
        epochs_of_data = [SetEpoch(d) for d in (x, validation_data) if hasattr(d, "set_epoch")]
        if hasattr(x, "set_epoch"):  # it orders its batches from its seed: Keras must not reshuffle them
            fit_kwargs["shuffle"] = False
        if group.distributed:
            x, data_cbs = group.wrap_dataset(x)
            validation_data, val_cbs = group.wrap_dataset(validation_data)
            engine_cbs = engine_cbs + data_cbs + val_cbs
        cbs = engine_cbs + epochs_of_data + list(callbacks or []) + saving
        with group.fit_scope():
            history = model.fit(x, y, validation_data=validation_data, epochs=epochs, callbacks=cbs,
                                verbose=verbose if group.is_writer else 0, **fit_kwargs)
        if group.is_writer and preprocessing is not None and os.path.exists(checkpoint):
            from keras_medseg.data.scans.preprocess import save_preprocessing

            save_preprocessing(checkpoint, preprocessing)  # also when a finished run is started again
        group.barrier("keras_medseg run folder written")
    return RunResult(history.history, read_log(log), checkpoint, log, out_dir, start)
