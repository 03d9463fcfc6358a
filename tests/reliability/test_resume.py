"""Crash-safe resume: SIGKILL a training run mid-epoch, run it again, nothing lost or doubled."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from keras_medseg.training.checkpointing import AtomicModelCheckpoint, ResumableCSVLogger, atomic_save_model


def _epochs_in_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _wait_for_mid_epoch_backup(backup, epoch, proc, deadline):
    """Poll the run's mid-epoch backup state (`training_metadata.json`, written atomically) until it says
    "`epoch`, some batches in": from then on the process is inside that epoch."""
    path = os.path.join(backup, "training_metadata.json")
    while time.time() < deadline and proc.poll() is None:
        try:
            with open(path) as f:
                state = json.load(f)
            if state["epoch"] == epoch and state["batch"] > 0:
                return state
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    return None


@pytest.mark.slow
def test_cli_train_survives_sigkill_mid_epoch(tmp_path):
    """`keras-medseg train` killed in the middle of an epoch resumes when run again.

    Small on purpose (the claim is about the run folder): a UNet of one level and 2 filters without
    normalization, 64 Q-tips images of 32 px, batch 8 -> 8 steps per epoch, 4 epochs, a backup every 2 batches.
    The kill comes as soon as the backup says "epoch 2, some batches in" (6 batches and the epoch end still to
    go, so in the middle of the third epoch)."""
    out = str(tmp_path / "run")
    log = os.path.join(out, "log.csv")
    cmd = [sys.executable, "-m", "keras_medseg", "train", "unet", "--data", "qtips", "--n-train", "64",
           "--n-val", "8", "--size", "32", "--epochs", "4", "--batch-size", "8", "--out", out, "--arg", "filters=2",
           "--arg", "depth=1", "--arg", "normalization=None", "--quiet", "--backup-every", "2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        state = _wait_for_mid_epoch_backup(os.path.join(out, "backup"), 2, proc, time.time() + 300)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert state is not None and proc.returncode == -signal.SIGKILL, \
        f"the run ended (status {proc.returncode}) before it was killed in epoch 2: {err.decode()[-2000:]}"
    killed_epochs = _epochs_in_log(log)
    assert 2 <= len(killed_epochs) < 4
    # Whatever was on disk at the kill is readable.
    keras.saving.load_model(os.path.join(out, "best.keras"), safe_mode=True)

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Dice" in rerun.stdout
    assert _epochs_in_log(log) == [0, 1, 2, 3]
    model = keras.saving.load_model(os.path.join(out, "best.keras"), safe_mode=True)
    assert model.count_params() > 0
    assert [f for f in os.listdir(out) if ".tmp" in f] == []


def _tiny_model():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_atomic_checkpoint_keeps_best_across_restarts(tmp_path):
    path = str(tmp_path / "best.keras")
    model = _tiny_model()
    cb = AtomicModelCheckpoint(path, monitor="val_loss")
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"val_loss": 1.0})
    first = os.path.getmtime(path)
    # A new run (resume) must not replace the better model with a worse one.
    cb2 = AtomicModelCheckpoint(path, monitor="val_loss")
    cb2.set_model(model)
    cb2.on_train_begin()
    assert cb2.best == 1.0
    cb2.on_epoch_end(1, {"val_loss": 2.0})
    assert os.path.getmtime(path) == first
    cb2.on_epoch_end(2, {"val_loss": 0.5})
    assert cb2.best == 0.5
    assert keras.saving.load_model(path, safe_mode=True) is not None


def test_atomic_save_leaves_old_file_when_saving_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "m.keras")
    model = _tiny_model()
    atomic_save_model(model, path)
    before = open(path, "rb").read()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(model, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_save_model(model, path)
    assert open(path, "rb").read() == before
    assert [f for f in os.listdir(tmp_path) if ".tmp" in f] == []


def test_csv_logger_drops_rows_after_the_backup(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n")
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    cb = ResumableCSVLogger(str(log), backup_dir=str(backup))
    cb.set_model(_tiny_model())
    cb.on_train_begin()
    cb.on_epoch_end(2, {"loss": 0.7})
    cb.on_train_end()
    assert _epochs_in_log(str(log)) == [0, 1, 2]
    with open(log) as f:
        assert [r["loss"] for r in csv.DictReader(f)] == ["1.0", "0.9", "0.7"]


def test_bad_checkpoint_arguments():
    with pytest.raises(ValueError, match="filepath"):
        AtomicModelCheckpoint("best.h5")
    with pytest.raises(ValueError, match="mode"):
        AtomicModelCheckpoint("best.keras", mode="largest")
    with pytest.raises(ValueError, match="path"):
        atomic_save_model(_tiny_model(), "x.h5")
