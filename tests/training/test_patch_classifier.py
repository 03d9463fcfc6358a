"""The patch classifier goes through the one fit runner: it resumes, honours `backup_every` and locks its folder."""

import json

import h5py
import keras
import numpy as np
import pytest

from keras_medseg.data.slides import PatchStore
from keras_medseg.training import train_patch_classifier
from tests.testing.run_lock import run_folder_held_by_another_process


def _store(path, n=24, offset=100):
    """`n` 8x8 RGB patches of one slide, labels 0, 1, 0, ...: noise in [0, 100), `offset` added to label 1's."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    patches = rng.integers(0, 100, (n, 8, 8, 3), dtype="uint8") + (labels * offset)[:, None, None, None].astype("uint8")
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


@pytest.mark.slow
def test_patch_classifier_over_two_processes_splits_the_patches_and_trains_like_one(tmp_path, monkeypatch):
    """Two local JAX processes (the cheapest backend to start; launched from this phase as subprocesses):
    each draws from its own half of the training patches, rank 0 alone writes the run folder, and the
    history (loss, validation loss and ROC-AUC of each epoch) equals one process trained on the same global
    batches from the same seed (relative 1e-5: float32 sums in another order). The job and its reference:
    `tests/distribute/_patch_job.py`. Slow: about 15 CPU s, 15-55 s wall on the shared 2-core machine (the
    same job on TensorFlow and torch, run by hand: the same equalities)."""
    import os

    from keras_medseg.training.distribute import launch
    from tests.distribute import _patch_job

    # XLA's cheapest optimisation level (as tests/distribute/_cli.py): the same numbers, less compile time
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # label 1's patches 10 grey levels brighter: a ROC-AUC of about 0.9 after 2 epochs, compared too
    store = _store(tmp_path / "p.h5", n=48, offset=10)
    folder, reports = str(tmp_path / "run"), str(tmp_path / "reports")
    os.makedirs(reports)
    zero = launch(_patch_job.job, store, folder, reports, processes=2, backend="jax")
    with open(os.path.join(reports, "rank1.json")) as f:
        one = json.load(f)
    assert (zero["rank"], one["rank"], zero["size"], zero["engine"]) == (0, 1, 2, "jax.distributed")
    # disjoint halves of the 40 training patches (8 of the 48 are validation), each drawn from its own half
    assert not set(zero["owned"]) & set(one["owned"]) and len(zero["owned"]) == len(one["owned"]) == 20
    for epoch in ("0", "1"):
        assert set(zero["drawn"][epoch]) <= set(zero["owned"]) and set(one["drawn"][epoch]) <= set(one["owned"])
    # rank 0 alone wrote the run folder
    assert one["written"] == [] and {"best.keras", "log.csv"} <= set(zero["written"])
    # both processes logged the same epochs, the ones of one process on the same global batches
    reference = zero["reference"]
    for key in ("loss", "val_loss", "val_roc_auc"):
        assert len(zero["history"][key]) == 2, key
        np.testing.assert_allclose(zero["history"][key], reference[key], rtol=1e-5, atol=1e-7, err_msg=key)
        np.testing.assert_allclose(one["history"][key], zero["history"][key], rtol=1e-6, err_msg=key)
    assert zero["num_val"] == 8 and zero["best_roc_auc"] == max(zero["history"]["val_roc_auc"])
    with open(os.path.join(folder, "log.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + 2


def test_train_command_passes_processes_to_the_patch_classifier_and_rank_0_alone_reports(tmp_path, monkeypatch,
                                                                                          capsys):
    from keras_medseg import training
    from keras_medseg.cli import main
    from keras_medseg.training.distribute import group
    from keras_medseg.training.patch_classifier import PatchTrainResult

    seen = {}

    def fake(model, store, rank=0, **kwargs):
        seen.update(kwargs)
        monkeypatch.setattr(group, "_CURRENT", [group.ProcessGroup(rank, 2)])  # as a joined rank would be
        return PatchTrainResult({}, 0.75, 1, 1, 8, "runs/x/best.keras", "runs/x/log.csv")

    store = _store(tmp_path / "p.h5")
    command = ["train", "vgg16_classifier", "--data", store, "--quiet", "--processes", "2",
               "--coordinator", "10.0.0.1:1234", "--process-id"]
    for rank in (1, 0):
        monkeypatch.setattr(training, "train_patch_classifier", lambda *a, rank=rank, **k: fake(*a, rank=rank, **k))
        assert main(command + [str(rank)]) == 0
        assert (seen["processes"], seen["coordinator"], seen["process_id"]) == (2, "10.0.0.1:1234", rank)
        out = capsys.readouterr().out
        if rank:  # process 1 trains and says nothing
            assert "ROC-AUC" not in out and "checkpoint" not in out, out
        else:
            assert "best validation ROC-AUC 0.7500 (epoch 1 of 1, 8 validation patches)" in out, out
