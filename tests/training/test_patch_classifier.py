"""The patch classifier goes through the one fit runner: it resumes, honours `backup_every` and locks its folder."""

import json

import h5py
import keras
import numpy as np
import pytest

from keras_medseg.data.slides import PatchStore
from keras_medseg.training import train_patch_classifier
from tests.testing.run_lock import run_folder_held_by_another_process


def _store(path, n=24):
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    patches = rng.integers(0, 100, (n, 8, 8, 3), dtype="uint8") + (labels * 100)[:, None, None, None].astype("uint8")
    with PatchStore(path, "w", patch_size=8, channels=3) as s:
        s.append(patches, labels, slide_id="s01", coords=np.zeros((n, 2), "i4"))
    return str(path)


def _tiny_classifier():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x), name="tiny_patch_classifier")
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def _state(path):
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["keras_medseg_backup_state"])


def test_patch_classifier_resumes_and_backs_up_every_n_batches(tmp_path):
    store, out = _store(tmp_path / "p.h5"), str(tmp_path / "run")
    kw = dict(batch_size=4, n_train=12, n_val=8, out_dir=out, verbose=0, backup_every=2)
    first = train_patch_classifier(_tiny_classifier(), store, epochs=1, **kw)
    assert first.num_epochs == 1 and len(first.history["loss"]) == 1
    # 3 steps per epoch, a backup after batches 2 (mid-epoch), then the epoch-end state supersedes it
    assert _state(tmp_path / "run" / "backup" / "latest.weights.h5") == {"epoch": 0, "batch": 2}
    assert _state(tmp_path / "run" / "backup" / "epoch.weights.h5")["epoch"] == 1
    second = train_patch_classifier(_tiny_classifier(), store, epochs=3, **kw)  # a fresh model: weights come back
    assert len(second.history["loss"]) == 2  # epochs 1 and 2 only: epoch 0 was done
    assert second.num_epochs == 3 and 1 <= second.best_epoch <= 3
    with open(second.log) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["0", "1", "2"]
    again = train_patch_classifier(_tiny_classifier(), store, epochs=3, **kw)  # finished: nothing left to train
    assert again.history == {} and again.best_roc_auc == second.best_roc_auc


def test_patch_classifier_run_folder_is_locked(tmp_path):
    store, out = _store(tmp_path / "p.h5"), tmp_path / "run"
    out.mkdir()
    with run_folder_held_by_another_process(out) as pid:
        with pytest.raises(RuntimeError, match=rf"another training process \(pid {pid}\)"):
            train_patch_classifier(_tiny_classifier(), store, epochs=1, batch_size=4, n_train=8, n_val=8,
                                   out_dir=str(out), verbose=0)
    assert not (out / "log.csv").exists()  # refused before anything was written


def test_train_command_passes_backup_every_to_the_patch_classifier(tmp_path, monkeypatch):
    from keras_medseg import training
    from keras_medseg.cli import main

    seen = {}

    def fake(model, store, **kwargs):
        seen.update(kwargs, model=model, store=store)
        raise ValueError("stop here")

    monkeypatch.setattr(training, "train_patch_classifier", fake)
    store = _store(tmp_path / "p.h5")
    assert main(["train", "vgg16_classifier", "--data", store, "--backup-every", "7", "--quiet"]) == 2
    assert seen["backup_every"] == 7 and seen["store"] == store and seen["model"] == "vgg16_classifier"
