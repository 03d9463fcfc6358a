"""Resume after a kill in the middle of an epoch with `backup_every=N` (issue 17), exactly as documented.

What `keras_medseg.training.checkpointing` promises (Keras' `fit` has no
initial step, so an epoch cannot be entered part-way): the rerun starts from
the newest mid-epoch backup (weights *and* optimizer step counter of that
moment), trains the killed epoch again from its first batch, never re-trains
or rewrites an epoch whose row was logged, and logs every epoch exactly once.
The backup state is stamped into the weights file, so a kill between the
weights and their JSON mirror cannot pair new weights with an old epoch count.

Setting: the smallest segmenter (`tests/testing/tiny_segmenter.py`, a 3x3 convolution with Adam: the claims
are about the run folder, not the model), 32 Q-tips images of 16 px, batch 8 -> 4 steps per epoch, 3 epochs,
`backup_every=2` -> mid-epoch backups after cumulative steps 2, 4, 6, ...; the
kill comes at epoch 1 after its third batch, so the newest backup is
"epoch 1, 2 batches in" (6 optimizer steps).
"""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest

from keras_medseg.training import checkpointing, train
from tests.testing.run_lock import run_folder_held_by_another_process
from tests.testing.tiny_segmenter import tiny_segmenter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KW = {"n_train": 32, "n_val": 4, "size": 16, "batch_size": 8, "verbose": 0, "epochs": 3}
STEPS = 4


class _Stop(Exception):
    """Stands in for a kill inside the process (the file state left behind is the same)."""


class _KillMidEpoch(keras.callbacks.Callback):
    """Record the weights when the (epoch 1, 2 batches) backup is taken, then stop after the next batch."""

    def __init__(self):
        super().__init__()
        self.epoch, self.weights_at_backup = 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:  # the backup callback runs after this one, on these weights
            self.weights_at_backup = [np.array(w) for w in self.model.get_weights()]
        if self.epoch == 1 and batch == 2:
            raise _Stop()


class _Probe(keras.callbacks.Callback):
    """What the resumed run starts from (weights, optimizer steps, epoch) and how many batches each epoch runs."""

    def __init__(self):
        super().__init__()
        self.start = None
        self.batches = {}

    def on_epoch_begin(self, epoch, logs=None):
        if self.start is None:
            self.start = {"epoch": epoch, "iterations": int(self.model.optimizer.iterations.numpy()),
                          "weights": [np.array(w) for w in self.model.get_weights()]}
        self.batches[epoch] = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches[max(self.batches)] += 1


def _rows(log):
    with open(log) as f:
        return list(csv.reader(f))


def _state(path):
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs[checkpointing._STATE_ATTR])


def _check_resumed(out, rows_before, probe, result, weights_at_backup=None):
    assert probe.start["epoch"] == 1  # epoch 0 (logged) is not trained again
    assert probe.start["iterations"] == STEPS + 2  # the mid-epoch backup, not the epoch-end one (4 steps)
    if weights_at_backup is not None:
        for got, want in zip(probe.start["weights"], weights_at_backup):
            np.testing.assert_array_equal(got, want)
    assert probe.batches == {1: STEPS, 2: STEPS}  # the killed epoch runs again from its first batch
    assert len(result.history["loss"]) == 2
    rows = _rows(os.path.join(out, "log.csv"))
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]  # every epoch logged once
    assert rows[: len(rows_before)] == rows_before  # rows logged before the kill kept as they were
    assert _state(os.path.join(out, "backup", "epoch.weights.h5"))["epoch"] == 3
    assert [f for f in os.listdir(out) if ".tmp" in f] == []


def test_interrupt_mid_epoch_resumes_from_the_newest_backup(tmp_path):
    out = str(tmp_path / "run")
    kill = _KillMidEpoch()
    with pytest.raises(_Stop):
        train(tiny_segmenter(), out_dir=out, backup_every=2, callbacks=[kill], **KW)
    assert _state(os.path.join(out, "backup", "latest.weights.h5")) == {"epoch": 1, "batch": 2}
    assert _state(os.path.join(out, "backup", "epoch.weights.h5"))["epoch"] == 1
    before = _rows(os.path.join(out, "log.csv"))
    assert [r[0] for r in before[1:]] == ["0"]
    probe = _Probe()
    result = train(tiny_segmenter(), out_dir=out, backup_every=2, callbacks=[probe], **KW)
    _check_resumed(out, before, probe, result, kill.weights_at_backup)


def test_kill_between_the_weights_and_their_json_mirror(tmp_path, monkeypatch):
    """Epoch 1's weights are in place but `epoch_metadata.json` still says 1 epoch: the stamped state wins, so
    epoch 1 is neither trained again nor left without its row (recovered from the backup)."""
    out = str(tmp_path / "run")
    real = checkpointing.atomic_write_text

    def write(path, text):
        if path.endswith("epoch_metadata.json") and json.loads(text)["epoch"] == 2:
            raise _Stop()
        real(path, text)

    monkeypatch.setattr(checkpointing, "atomic_write_text", write)
    with pytest.raises(_Stop):
        train(tiny_segmenter(), out_dir=out, **KW)
    monkeypatch.undo()
    with open(os.path.join(out, "backup", "epoch_metadata.json")) as f:
        assert json.load(f)["epoch"] == 1  # the stale mirror
    stamped = _state(os.path.join(out, "backup", "epoch.weights.h5"))
    assert stamped["epoch"] == 2
    probe = _Probe()
    result = train(tiny_segmenter(), out_dir=out, callbacks=[probe], **KW)
    assert probe.start["epoch"] == 2 and probe.start["iterations"] == 2 * STEPS
    assert len(result.history["loss"]) == 1
    rows = _rows(os.path.join(out, "log.csv"))
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    header = rows[0]
    assert float(rows[2][header.index("loss")]) == pytest.approx(float(stamped["logs"]["loss"]))


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from keras_medseg.training import checkpointing, train
    original = checkpointing.CrashSafeBackup.on_train_batch_end
    def on_train_batch_end(self, batch, logs=None):
        original(self, batch, logs)
        if self._epoch == 1 and batch == 2:   # epoch 1, third batch done; newest backup: 2 batches in
            os.kill(os.getpid(), signal.SIGKILL)
    checkpointing.CrashSafeBackup.on_train_batch_end = on_train_batch_end
    from tests.testing.tiny_segmenter import tiny_segmenter
    train(tiny_segmenter(), out_dir=sys.argv[1], backup_every=2, n_train=32, n_val=4, size=16, batch_size=8,
          verbose=0, epochs=3)
""")


@pytest.mark.slow
def test_sigkill_mid_epoch_with_backup_every(tmp_path):
    out = str(tmp_path / "run")
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script), out], check=False, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _state(os.path.join(out, "backup", "latest.weights.h5")) == {"epoch": 1, "batch": 2}
    before = _rows(os.path.join(out, "log.csv"))
    assert [r[0] for r in before[1:]] == ["0"]
    probe = _Probe()
    result = train(tiny_segmenter(), out_dir=out, backup_every=2, callbacks=[probe], **KW)
    _check_resumed(out, before, probe, result)
    keras.saving.load_model(os.path.join(out, "best.keras"), safe_mode=True)


def test_best_model_carries_its_preprocessing_spec(tmp_path):
    """`resumable_callbacks(preprocessing=spec)`: every best.keras is written with the spec inside (atomically),
    so a run killed before its end leaves a model that predict/explain normalise correctly."""
    from keras_medseg.data.scans.preprocess import load_preprocessing

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile(optimizer="sgd", loss="mse")
    spec = {"intensity": {"preset": "ct_window", "low": -160.0, "high": 240.0}}
    cbs = checkpointing.resumable_callbacks(str(tmp_path), preprocessing=spec)
    x = np.ones((8, 4), "float32")
    model.fit(x, x[:, :1], validation_data=(x, x[:, :1]), epochs=1, verbose=0, callbacks=cbs)
    path = os.path.join(str(tmp_path), "best.keras")
    assert load_preprocessing(path)["intensity"] == spec["intensity"]
    keras.saving.load_model(path, safe_mode=True)
    assert [f for f in os.listdir(tmp_path) if ".tmp" in f] == []
    with pytest.raises(ValueError, match="intensity"):
        checkpointing.AtomicModelCheckpoint(path, preprocessing={"intensity": {"preset": "gamma"}})


def test_a_second_training_process_on_the_same_folder_is_refused(tmp_path, capsys):
    """Concurrent writers of one run folder: the second is refused in one line; the lock dies with its holder."""
    import fcntl

    from keras_medseg.cli import main

    out = tmp_path / "run"
    out.mkdir()
    with run_folder_held_by_another_process(out) as pid:
        busy = rf"run' is being written by another training process \(pid {pid}\)"
        with pytest.raises(RuntimeError, match=busy):
            train(tiny_segmenter(), out_dir=str(out), **dict(KW, epochs=1, n_train=8))
        assert main(["train", "unet", "--n-train", "8", "--n-val", "4", "--size", "16", "--batch-size", "8",
                     "--quiet", "--epochs", "1", "--out", str(out), "--arg", "filters=2", "--arg", "depth=1"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "another training process" in err, err
    result = train(tiny_segmenter(), out_dir=str(out), **dict(KW, epochs=1, n_train=8))  # the lock died with it
    assert len(result.history["loss"]) == 1
    fd = os.open(str(out / ".lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when fit ended
    finally:
        os.close(fd)
