"""Crash-safe training callbacks: resume after a kill, never a truncated checkpoint.

`resumable_callbacks(out_dir)` returns, in the order they must run:

1. `ResumableCSVLogger` - Keras' `CSVLogger` that, when a run resumes at
   epoch k (read from the backup's metadata), first drops the rows of epochs
   >= k (written by the killed run after its last backup) and then appends,
   so the log has every epoch exactly once.
2. `AtomicModelCheckpoint` - keeps the best model as a `.keras` file, written
   to a temporary file in the same folder and moved into place with
   `os.replace` (atomic on POSIX and Windows), so a kill never leaves a
   truncated checkpoint. The best score is stored next to it, so a resumed run
   does not overwrite a better model with a worse one.
3. `keras.callbacks.BackupAndRestore` (with `double_checkpoint=True`) - the
   Keras mechanism that saves the training state every epoch (or every N
   batches) and restores it, including the epoch counter, when `fit` starts
   again with the same `backup_dir`.

The backup comes last so that at the end of epoch k the log row and the best
model are on disk before the state says "epoch k done": a kill in between
makes the resumed run repeat epoch k and rewrite its row, never lose it.
"""

import csv
import json
import os

import keras
import numpy as np

__all__ = ["AtomicModelCheckpoint", "ResumableCSVLogger", "atomic_save_model", "resumable_callbacks"]


def atomic_save_model(model, path):
    """Save `model` to `path` (`.keras`) through a temporary file and `os.replace`."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"`path` must end with '.keras'. Received: path={path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)[:-6]}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_write_text(path, text):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Keep the best model as a `.keras` file, written atomically.

    Args:
        filepath: destination `.keras` file.
        monitor: the log key to watch. Default `"val_loss"`; falls back to
            the training key (e.g. `"loss"`) when no validation data is given.
        mode: `"min"`, `"max"` or `"auto"` (max for accuracy/AUC/IoU/Dice keys).
    """

    def __init__(self, filepath, monitor="val_loss", mode="auto"):
        super().__init__()
        filepath = os.fspath(filepath)
        if not filepath.endswith(".keras"):
            raise ValueError(f"`filepath` must end with '.keras'. Received: filepath={filepath!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"`mode` must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
        self.filepath = filepath
        self.monitor = monitor
        self.mode = mode
        self.state_path = filepath + ".best.json"
        self.best = None

    def _greater_is_better(self, key):
        if self.mode != "auto":
            return self.mode == "max"
        return any(s in key for s in ("acc", "auc", "iou", "dice", "precision", "recall"))

    def on_train_begin(self, logs=None):
        if os.path.exists(self.state_path) and os.path.exists(self.filepath):
            with open(self.state_path) as f:
                self.best = json.load(f).get("best")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        key = self.monitor if self.monitor in logs else self.monitor.replace("val_", "", 1)
        if key not in logs:
            return
        value = float(logs[key])
        if not np.isfinite(value):
            return
        better = self._greater_is_better(key)
        if self.best is None or (value > self.best if better else value < self.best):
            self.best = value
            atomic_save_model(self.model, self.filepath)
            _atomic_write_text(self.state_path, json.dumps({"best": value, "epoch": epoch, "monitor": key}))


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` that keeps exactly one row per epoch across restarts."""

    def __init__(self, filename, backup_dir=None, separator=","):
        super().__init__(filename, separator=separator, append=True)
        self.backup_dir = backup_dir

    def _resume_epoch(self):
        if self.backup_dir is None:
            return int(getattr(self.model, "_initial_epoch", None) or 0)
        # The same files, in the same order of preference, as BackupAndRestore.
        for name in ("training_metadata.json", "training_metadata.json.bkp"):
            path = os.path.join(self.backup_dir, name)
            try:
                with open(path) as f:
                    return int(json.load(f)["epoch"])
            except (OSError, ValueError, KeyError):
                continue
        return 0

    def on_train_begin(self, logs=None):
        initial_epoch = self._resume_epoch()
        if os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                rows = list(csv.reader(f, delimiter=self.sep))
            if rows:
                header, body = rows[0], rows[1:]
                keep = [r for r in body if r and r[0].isdigit() and int(r[0]) < initial_epoch]
                if initial_epoch == 0:
                    keep = []
                tmp = f"{self.filename}.tmp"
                with open(tmp, "w", newline="") as f:
                    if keep:
                        writer = csv.writer(f, delimiter=self.sep)
                        writer.writerow(header)
                        writer.writerows(keep)
                os.replace(tmp, self.filename)
        super().on_train_begin(logs)


def resumable_callbacks(out_dir, monitor="val_loss", mode="auto", backup_every=None,
                        checkpoint_name="best.keras", log_name="log.csv"):
    """The callbacks that make `fit` resumable after a crash.

    Args:
        out_dir: run folder; gets `best.keras`, `log.csv` and `backup/`.
        monitor: log key that decides the best checkpoint.
        mode: "auto", "min" or "max".
        backup_every: `None` to back up at every epoch end, or an int to back
            up every that many batches as well (mid-epoch kills then lose
            at most that many batches).

    Returns:
        list of callbacks, in the order to pass to `fit`.
    """
    os.makedirs(out_dir, exist_ok=True)
    backup_dir = os.path.join(out_dir, "backup")
    backup = keras.callbacks.BackupAndRestore(
        backup_dir,
        save_freq="epoch" if backup_every is None else int(backup_every),
        double_checkpoint=True,
        delete_checkpoint=False,
    )
    return [
        ResumableCSVLogger(os.path.join(out_dir, log_name), backup_dir=backup_dir),
        AtomicModelCheckpoint(os.path.join(out_dir, checkpoint_name), monitor=monitor, mode=mode),
        backup,
    ]
