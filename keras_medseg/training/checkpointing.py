"""Crash-safe training callbacks: resume after a kill or a full disk, never a truncated file.

`resumable_callbacks(out_dir)` returns, in the order they must run:

0. `RunFolderLock` - one training process per run folder (a second one is
   refused in one line; the lock dies with its process).
1. `AtomicModelCheckpoint` - keeps the best model as a `.keras` file, written
   to a temporary file in the same folder and moved into place with
   `os.replace` (atomic on POSIX and Windows). The best score is stored next
   to it, so a resumed run does not overwrite a better model with a worse one.
2. `CrashSafeBackup` - the training state (weights with the optimizer's
   variables, and the epoch counter) at the end of every epoch, in
   `backup/epoch.weights.h5` (which also holds that epoch's log row), and with
   `backup_every=N` also every N batches in `backup/latest.weights.h5`. The
   state (`{"epoch", "batch", "logs"}`) is stamped into the weights file itself
   (an HDF5 attribute) before it is moved into place, so weights and counters
   change together in one `os.replace`; `epoch_metadata.json` /
   `training_metadata.json` mirror it for people and older readers. When `fit`
   starts again with the same folder the weights and the epoch counter are
   restored.
3. `ResumableCSVLogger` - one row per epoch, the whole file rewritten
   atomically each epoch. On resume at epoch k it keeps the rows of epochs < k
   and restores the row of epoch k-1 from the epoch backup if the kill came
   between the backup and the row.

So at the end of epoch k the state says "epoch k done" before its row is
written, and the row can always be recovered: a resumed run never re-trains or
rewrites an epoch whose row was logged.

A kill in the middle of epoch k with `backup_every=N` (what happens, exactly):
the rerun loads the newest mid-epoch weights and optimizer state (the last
backup taken in epoch k, after its b-th batch; backups come every N batches
counted from the start of that `fit` call), restores `b` nowhere else, and
then trains epoch k again from its first batch, with a fresh shuffle. Keras
cannot start `fit` part-way through an epoch (`fit` has `initial_epoch` but
no initial step; Keras 3.15.1's own `BackupAndRestore(save_freq=N)` writes the
batch number to its metadata and never reads it back, so it does the same), and
the shuffled order of the killed epoch cannot be replayed, so the b batches of
epoch k trained before the kill are trained once more: epoch k sees
`b + steps_per_epoch` optimizer steps instead of `steps_per_epoch` (the
optimizer's step counter, and so a learning-rate schedule, continues from
the backup). No epoch is lost or re-logged: rows of epochs < k are kept
byte for byte, epoch k's row is written once, when it ends. A full disk ends in
`keras_medseg.utils.errors.DiskFullError` ("No space left on device while
writing X; nothing was lost; free space and rerun to resume"), raised before
the write starts when the free space is visibly too small.
"""

import csv
import io
import json
import os

import keras
import numpy as np

from keras_medseg.utils.atomic_io import atomic_path, atomic_write_text, remove_stale_temporaries

__all__ = ["AtomicModelCheckpoint", "CrashSafeBackup", "ResumableCSVLogger", "RunFolderLock", "atomic_save_model",
           "resumable_callbacks"]


def _model_bytes(model, factor=3):
    """Rough size of a saved model: float32 weights times `factor` (optimizer slots), plus the config."""
    try:
        return int(model.count_params()) * 4 * factor + 64 * 1024
    except ValueError:  # unbuilt model
        return 0


def atomic_save_model(model, path, preprocessing=None):
    """Save `model` to `path` (`.keras`) through a temporary file and `os.replace`.

    Args:
        model: the Keras model.
        path: destination `.keras` file.
        preprocessing: optional preprocessing spec (`keras_medseg.data.scans.preprocess.save_preprocessing`'s
            format) written into the archive before it is moved into place, so the model file never exists
            without the normalisation it was trained with (what `predict` and `explain` repeat).
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"`path` must end with '.keras'. Received: path={path!r}")
    previous = os.path.getsize(path) if os.path.exists(path) else 0
    with atomic_path(path, estimate_bytes=max(previous, _model_bytes(model))) as tmp:
        model.save(tmp)
        if preprocessing is not None:
            from keras_medseg.data.scans.preprocess import save_preprocessing

            save_preprocessing(tmp, preprocessing)


def _atomic_write_text(path, text):
    atomic_write_text(path, text)


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Keep the best model as a `.keras` file, written atomically.

    Args:
        filepath: destination `.keras` file.
        monitor: the log key to watch. Default `"val_loss"`; falls back to
            the training key (e.g. `"loss"`) when no validation data is given.
        mode: `"min"`, `"max"` or `"auto"` (max for accuracy/AUC/IoU/Dice keys).
        preprocessing: optional preprocessing spec stored inside every saved model (see
            `atomic_save_model`), e.g. `{"intensity": {"preset": "zscore"}}`.
    """

    def __init__(self, filepath, monitor="val_loss", mode="auto", preprocessing=None):
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
        self.preprocessing = preprocessing
        if preprocessing is not None:
            from keras_medseg.data.scans.preprocess import check_spec

            check_spec(preprocessing)  # a bad spec fails before training, not at the first save

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
            atomic_save_model(self.model, self.filepath, self.preprocessing)
            _atomic_write_text(self.state_path, json.dumps({"best": value, "epoch": epoch, "monitor": key}))


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


_STATE_ATTR = "keras_medseg_backup_state"


def _stamp(weights_path, meta):
    """Write the backup state into the (temporary) weights file as an HDF5 attribute."""
    import h5py

    with h5py.File(weights_path, "a") as f:
        f.attrs[_STATE_ATTR] = json.dumps(meta)


def _read_state(weights_path, metadata_path):
    """The state stamped into `weights_path`, else its JSON mirror `metadata_path` (older files); None when absent."""
    if os.path.exists(weights_path):
        try:
            import h5py

            with h5py.File(weights_path, "r") as f:
                raw = f.attrs.get(_STATE_ATTR)
            if raw is not None:
                return json.loads(raw)
        except (OSError, ValueError, RuntimeError):
            pass  # unreadable weights: `on_train_begin` reports them when loading
    return _read_json(metadata_path)


def _json_value(v):
    if isinstance(v, (np.generic, np.ndarray)):
        v = v.tolist()
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v if isinstance(v, (int, float, str, bool, type(None))) else str(v)


class CrashSafeBackup(keras.callbacks.Callback):
    """Back up the training state atomically at every epoch end (and every N batches); restore it on restart.

    Args:
        backup_dir: folder of the backup files.
        backup_every: `None` (epoch ends only) or an int: also every that many
            batches (a kill mid-epoch then restarts that epoch from the newest
            weights, as `keras.callbacks.BackupAndRestore` does).
        write: True (default) backs up and restores; False only restores (the
            processes of a distributed run other than rank 0, which writes).

    Files: `epoch.weights.h5` (state `{"epoch": k, "batch": 0, "logs":
    {...}}`: k epochs done, and the last epoch's log row), and with
    `backup_every`, `latest.weights.h5` (state `{"epoch": k, "batch": b}`: b
    batches into epoch k). The state is an HDF5 attribute of the weights file,
    written before the file is moved into place (`os.replace`), so a kill can
    never pair new weights with an old counter; `epoch_metadata.json` and
    `training_metadata.json` mirror it. After a kill mid-epoch the epoch is
    trained again from its first batch, starting from the newest weights (see
    the module docstring for exactly what that means).

    Raises:
        keras_medseg.utils.errors.DiskFullError: no space for a backup (the
            previous one is intact).
    """

    def __init__(self, backup_dir, backup_every=None, write=True):
        super().__init__()
        self.write = bool(write)
        self.backup_dir = os.fspath(backup_dir)
        if backup_every is not None and (isinstance(backup_every, bool) or int(backup_every) < 1):
            raise ValueError(f"`backup_every` must be None or a positive int. Received: backup_every={backup_every!r}")
        self.backup_every = None if backup_every is None else int(backup_every)
        self.epoch_weights = os.path.join(self.backup_dir, "epoch.weights.h5")
        self.epoch_metadata = os.path.join(self.backup_dir, "epoch_metadata.json")
        self.batch_weights = os.path.join(self.backup_dir, "latest.weights.h5")
        self.batch_metadata = os.path.join(self.backup_dir, "training_metadata.json")
        self._epoch = 0
        self._batches = 0

    @staticmethod
    def resume_epoch(backup_dir):
        """Completed epochs recorded in `backup_dir` (0 when there is no backup)."""
        meta = CrashSafeBackup.epoch_state(backup_dir) or {}
        batch = _read_state(os.path.join(backup_dir, "latest.weights.h5"),
                            os.path.join(backup_dir, "training_metadata.json")) or {}
        return max(int(meta.get("epoch", 0)), int(batch.get("epoch", 0)))

    @staticmethod
    def epoch_state(backup_dir):
        """The epoch-end state in `backup_dir` (`{"epoch", "batch", "logs"}`), or None."""
        return _read_state(os.path.join(backup_dir, "epoch.weights.h5"),
                           os.path.join(backup_dir, "epoch_metadata.json"))

    def on_train_begin(self, logs=None):
        epoch_meta = _read_state(self.epoch_weights, self.epoch_metadata) if os.path.exists(self.epoch_weights) \
            else None
        batch_meta = _read_state(self.batch_weights, self.batch_metadata) if os.path.exists(self.batch_weights) \
            else None
        done = int(epoch_meta["epoch"]) if epoch_meta else 0
        # Mid-epoch weights are newer than the epoch-end ones only when taken during epoch `done`.
        use_batch = batch_meta is not None and int(batch_meta.get("epoch", -1)) >= done and \
            int(batch_meta.get("batch", 0)) > 0
        source = self.batch_weights if use_batch else (self.epoch_weights if epoch_meta else None)
        if source is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(source)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"The training backup {source} cannot be read ({exc}); delete the folder "
                             f"{self.backup_dir} to start the run afresh.") from exc
        self._epoch = int(batch_meta["epoch"]) if use_batch else done
        self.model._initial_epoch = self._epoch

    def _save(self, weights, metadata, meta):
        previous = os.path.getsize(weights) if os.path.exists(weights) else 0
        with atomic_path(weights, estimate_bytes=max(previous, _model_bytes(self.model))) as tmp:
            self.model.save_weights(tmp)
            _stamp(tmp, meta)
        atomic_write_text(metadata, json.dumps(meta))

    def on_train_batch_end(self, batch, logs=None):
        if self.backup_every is None or not self.write:
            return
        self._batches += 1
        if self._batches % self.backup_every == 0:
            self._save(self.batch_weights, self.batch_metadata, {"epoch": self._epoch, "batch": batch + 1})

    def on_epoch_end(self, epoch, logs=None):
        self._epoch = epoch + 1
        if not self.write:
            return
        row = {k: _json_value(v) for k, v in (logs or {}).items()}
        self._save(self.epoch_weights, self.epoch_metadata, {"epoch": epoch + 1, "batch": 0, "logs": row})
        if self.backup_every is not None and os.path.exists(self.batch_metadata):
            # The epoch-end state supersedes the mid-epoch one of the same epoch.
            atomic_write_text(self.batch_metadata, json.dumps({"epoch": epoch + 1, "batch": 0}))


def _format(v):
    if isinstance(v, (np.generic, np.ndarray)):
        v = np.asarray(v).tolist()
    return v


class ResumableCSVLogger(keras.callbacks.Callback):
    """A CSV log with exactly one row per epoch across restarts, rewritten atomically every epoch.

    Args:
        filename: the `.csv` file.
        backup_dir: the `CrashSafeBackup` folder (or one written by
            `keras.callbacks.BackupAndRestore`) the resume epoch is read from;
            `None`: the model's initial epoch.
        separator: column separator, default ",".

    The columns are `epoch` and the sorted log keys, as in `keras.callbacks.CSVLogger`.
    """

    def __init__(self, filename, backup_dir=None, separator=","):
        super().__init__()
        self.filename = os.fspath(filename)
        self.backup_dir = backup_dir
        self.sep = separator
        self.header = None
        self.rows = []

    def _resume_epoch(self):
        if self.backup_dir is None:
            return int(getattr(self.model, "_initial_epoch", None) or 0)
        epoch = CrashSafeBackup.resume_epoch(self.backup_dir)
        if epoch == 0:  # Keras' own BackupAndRestore files
            for name in ("training_metadata.json", "training_metadata.json.bkp"):
                meta = _read_json(os.path.join(self.backup_dir, name))
                if meta and "epoch" in meta:
                    return int(meta["epoch"])
        return epoch

    def _write(self):
        buf = io.StringIO()
        if self.header:
            writer = csv.writer(buf, delimiter=self.sep, lineterminator="\n")
            writer.writerow(self.header)
            writer.writerows(self.rows)
        atomic_write_text(self.filename, buf.getvalue())

    def on_train_begin(self, logs=None):
        initial_epoch = self._resume_epoch()
        self.header, self.rows = None, []
        if initial_epoch > 0 and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                rows = list(csv.reader(f, delimiter=self.sep))
            if rows:
                self.header = rows[0]
                self.rows = [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) < initial_epoch]
        if initial_epoch > 0 and self.backup_dir is not None:
            meta = CrashSafeBackup.epoch_state(self.backup_dir) or {}
            last = initial_epoch - 1
            if meta.get("epoch") == initial_epoch and meta.get("logs") and \
                    not any(int(r[0]) == last for r in self.rows):
                self._append(last, meta["logs"])  # killed between the backup and the row
        if self.rows or initial_epoch == 0:
            self._write()

    def _append(self, epoch, logs):
        if self.header is None:
            self.header = ["epoch"] + sorted(logs)
        self.rows.append([str(epoch)] + [str(_format(logs.get(k, ""))) for k in self.header[1:]])

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [r for r in self.rows if int(r[0]) != epoch]
        self._append(epoch, logs or {})
        self._write()


_HELD_LOCKS = {}  # run-folder lock path -> fd held by this process


class RunFolderLock(keras.callbacks.Callback):
    """Refuse a second training process writing the same run folder (an advisory `flock` on `.lock`).

    Two runs resuming the same `out_dir` at once would interleave their
    backups and log rows. The lock is taken when `fit` starts and released
    when it ends; the operating system releases it when the process dies
    (SIGKILL included), so a crashed run never leaves a stale lock. Once the
    lock is held, temporaries that a killed writer left in the folder (and in
    `backup/`) are deleted (`utils.atomic_io.remove_stale_temporaries`). Without
    `fcntl` (Windows) it does nothing.

    Raises:
        RuntimeError: another process holds the folder ("... is being written
            by another training process (pid N) ...").
    """

    def __init__(self, out_dir):
        super().__init__()
        self.path = os.path.join(os.fspath(out_dir), ".lock")

    def acquire(self):
        """Take the lock (what `on_train_begin` does); also `with RunFolderLock(out_dir): ...`."""
        try:
            import fcntl
        except ImportError:  # not POSIX
            return
        key = os.path.abspath(self.path)
        if key in _HELD_LOCKS:  # left by a `fit` of this process that ended in an exception: ours to retake
            os.close(_HELD_LOCKS.pop(key))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RuntimeError(
                f"Run folder {os.path.dirname(self.path)!r} is being written by another training process "
                f"(pid {holder}); wait for it to finish or train into another folder (--out)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        _HELD_LOCKS[key] = fd
        # The folder is ours now: temporaries of a writer killed before its rename are garbage (the files they
        # were replacing are intact), so a resumed run leaves no `.best.<pid>.tmp.keras` behind.
        remove_stale_temporaries(os.path.dirname(self.path))

    def release(self):
        """Give the lock back (what `on_train_end` does)."""
        fd = _HELD_LOCKS.pop(os.path.abspath(self.path), None)
        if fd is not None:
            os.close(fd)  # releases the lock

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def on_train_begin(self, logs=None):
        self.acquire()

    def on_train_end(self, logs=None):
        self.release()


def resumable_callbacks(out_dir, monitor="val_loss", mode="auto", backup_every=None,
                        checkpoint_name="best.keras", log_name="log.csv", preprocessing=None, lock=True):
    """The callbacks that make `fit` resumable after a crash or a full disk.

    Args:
        out_dir: run folder; gets `best.keras`, `log.csv` and `backup/`.
        monitor: log key that decides the best checkpoint.
        mode: "auto", "min" or "max".
        backup_every: `None` to back up at every epoch end, or an int to back
            up every that many batches as well.
        preprocessing: optional preprocessing spec stored inside `best.keras`
            each time it is written (what `predict` and `explain` read back).
        lock: include the `RunFolderLock` callback (default True; the fit
            runner, `keras_medseg.training.runner.fit`, holds the lock itself).

    Returns:
        list of callbacks, in the order to pass to `fit`.
    """
    os.makedirs(out_dir, exist_ok=True)
    backup_dir = os.path.join(out_dir, "backup")
    callbacks = [RunFolderLock(out_dir)] if lock else []
    return callbacks + [
        AtomicModelCheckpoint(os.path.join(out_dir, checkpoint_name), monitor=monitor, mode=mode,
                              preprocessing=preprocessing),
        CrashSafeBackup(backup_dir, backup_every=backup_every),
        ResumableCSVLogger(os.path.join(out_dir, log_name), backup_dir=backup_dir),
    ]
