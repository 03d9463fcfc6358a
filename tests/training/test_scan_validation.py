"""Whole-scan validation (`keras_medseg.training.scan_validation`): the Dice of whole validation scans, predicted
by the `predict` path, equals a NumPy computation on the predicted label map and the reference read with nibabel;
the best checkpoint is the epoch with the highest `val_scan_dice`; `train_volumes` and `keras-medseg train` use it
(with the disk cache and the workers on by default)."""

import csv
import json
import os
import warnings

import keras
import nibabel as nib
import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data.cases import find_cases
from keras_medseg.data.scans.io import read_image
from keras_medseg.predict.scans import predict_scan
from keras_medseg.training import runner, train_volumes
from keras_medseg.training.scan_validation import ScanValidation, read_scan_scores
from keras_medseg.training.volumes import resolve_cache_dir
from tests.data.test_volume_dataset import write_cases

SHAPES = ((24, 26, 24), (28, 24, 26), (24, 24, 30), (26, 28, 24))


def _spec(regions=None):
    names = ["ball"] if regions else ["background", "ball"]
    return {"spatial_dims": 3, "spacing": None, "orientation": None, "intensity": {"preset": "zscore"},
            "patch_size": [16, 16, 16], "label_values": [0, 1], "class_names": names, "regions": regions}


def _threshold_model(level, regions=False):
    """A 1x1x1 convolution: foreground where the z-scored voxel is above `level` (softmax of (0, 4 (x - level))),
    or one sigmoid channel of 4 (x - level) for a region model."""
    inputs = keras.Input((None, None, None, 1))
    if regions:
        out = keras.layers.Conv3D(1, 1, activation="sigmoid")(inputs)
        weights = [np.full((1, 1, 1, 1, 1), 4.0, "float32"), np.array([-4.0 * level], "float32")]
    else:
        out = keras.layers.Conv3D(2, 1, activation="softmax")(inputs)
        weights = [np.array([0.0, 4.0], "float32").reshape(1, 1, 1, 1, 2), np.array([0.0, -4.0 * level], "float32")]
    model = keras.Model(inputs, out)
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy" if not regions
                  else "binary_crossentropy")
    return model


def _numpy_dice(pred, truth):
    p, t = pred.astype(bool), truth.astype(bool)
    return 1.0 if p.sum() + t.sum() == 0 else 2.0 * (p & t).sum() / (p.sum() + t.sum())


def _validate(callback, model, epoch=0, epochs=1):
    callback.set_model(model)
    callback.set_params({"epochs": epochs})
    logs = {}
    callback.on_epoch_begin(epoch)
    callback.on_epoch_end(epoch, logs)
    return logs


@pytest.mark.parametrize("regions", [None, [{"name": "ball", "values": [1]}]], ids=["classes", "regions"])
def test_scan_dice_equals_numpy_on_the_predicted_label_map(tmp_path, regions):
    root = write_cases(str(tmp_path / "data"), shapes=SHAPES[:2])
    cases = find_cases(root)
    model = _threshold_model(2.0, regions=bool(regions))  # keeps some noise voxels: a Dice well inside (0, 1)
    csv_path = str(tmp_path / "scan_validation.csv")
    cb = ScanValidation(cases, _spec(regions), every=1, hd95=True, csv_path=csv_path, verbose=0)
    logs = _validate(cb, model)
    dices, hd95 = [], []
    for case in cases:
        pred = predict_scan(model, read_image(case["image"]), _spec(regions), allow_padding=True)
        pred = pred[..., 0] if regions else pred
        truth = np.asarray(nib.load(case["label"]).dataobj) == 1
        dices.append(_numpy_dice(pred == 1, truth))
        assert 0.05 < dices[-1] < 0.95
        assert cb.scores[0][case["name"]]["ball"]["dice"] == pytest.approx(dices[-1], abs=1e-12)
        hd95.append(cb.scores[0][case["name"]]["ball"]["hd95"])
    assert logs["val_scan_dice"] == pytest.approx(np.mean(dices), abs=1e-12)
    assert logs["val_scan_dice_ball"] == pytest.approx(np.mean(dices), abs=1e-12)
    assert logs["val_scan_hd95"] == pytest.approx(np.mean(hd95)) and np.all(np.isfinite(hd95))
    assert read_scan_scores(csv_path, 0)[cases[1]["name"]]["ball"]["dice"] == pytest.approx(dices[1], abs=1e-5)


def test_checkpoint_is_the_epoch_with_the_best_scan_dice(tmp_path):
    """Epoch 1 (of 0, 1, 2) has the best weights; epoch 2 (validated, the last) worse; best.keras is epoch 1's."""
    from keras_medseg.data.scans.volume_dataset import VolumeDataset

    root = write_cases(str(tmp_path / "data"), shapes=SHAPES[:2])
    cases = find_cases(root)
    levels = {0: 3.0, 1: 4.0, 2: 1.5}  # z-score thresholds: 4 keeps the ball (z ~6), 1.5 much of the noise too

    class SetLevel(keras.callbacks.Callback):  # the weights each epoch ends with (the SGD step is 0)
        def on_epoch_end(self, epoch, logs=None):
            self.model.set_weights(_threshold_model(levels[epoch]).get_weights())

    model = _threshold_model(0.0)
    data = VolumeDataset(root, patch_size=16, batch_size=1, steps_per_epoch=1)
    scans = ScanValidation(cases, _spec(), every=2, verbose=0, csv_path=str(tmp_path / "run" / "scans.csv"))
    run = runner.fit(model, data, out_dir=str(tmp_path / "run"), epochs=3, monitor="val_scan_dice", mode="max",
                     callbacks=[SetLevel(), scans], verbose=0)
    dice = run.history["val_scan_dice"]
    assert np.isnan(dice[0]) and dice[1] > dice[2] > 0  # epoch 0 not validated (every=2), epoch 2 is the last
    with open(run.checkpoint + ".best.json") as f:
        assert json.load(f) == {"best": dice[1], "epoch": 1, "monitor": "val_scan_dice"}
    best = keras.saving.load_model(run.checkpoint)
    np.testing.assert_array_equal(best.get_weights()[1], _threshold_model(levels[1]).get_weights()[1])
    rows = list(csv.DictReader(open(run.log)))
    assert rows[0]["val_scan_dice"] == "nan" and float(rows[1]["val_scan_dice"]) == pytest.approx(dice[1])


def test_train_command_validates_whole_scans_with_cache_and_workers(tmp_path, capsys, eager_tf_functions):
    root = write_cases(str(tmp_path / "data"), shapes=SHAPES)
    out = str(tmp_path / "run")
    argv = ["train", "unet", "--data", root, "--spatial-dims", "3", "--patch-size", "16", "--epochs", "2",
            "--steps-per-epoch", "1", "--batch-size", "2", "--out", out, "--arg", "filters=4", "--arg", "depth=2",
            "--val-every", "1", "--val-hd95", "--workers", "2", "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "whole-scan validation Dice of the best checkpoint" in text and "val_scan_dice" in text
    rows = list(csv.DictReader(open(os.path.join(out, "log.csv"))))
    assert {"val_scan_dice", "val_scan_dice_class_1", "val_scan_hd95", "val_scan_hd95_class_1"} <= set(rows[0])
    with open(os.path.join(out, "best.keras.best.json")) as f:
        best = json.load(f)
    assert best["monitor"] == "val_scan_dice"
    assert best["best"] == max(float(r["val_scan_dice"]) for r in rows)
    assert os.listdir(os.path.join(out, "cache"))  # the disk cache is on by default, in the run folder
    scores = read_scan_scores(os.path.join(out, "scan_validation.csv"), best["epoch"])
    assert len(scores) == 1 and set(scores[next(iter(scores))]["class_1"]) == {"dice", "hd95"}


def test_bad_val_every_and_cache_dir_options(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"`val_every` must be an int >= 0"):
        train_volumes("unet", str(tmp_path), val_every=-1)
    with pytest.raises(ValueError, match="val_every"):
        train_volumes("unet", str(tmp_path), val_every=1.5)
    root = write_cases(str(tmp_path / "data"), shapes=SHAPES[:2])
    assert main(["train", "unet", "--data", root, "--spatial-dims", "3", "--patch-size", "16",
                 "--val-every", "-2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "val_every" in err and "-2" in err
    assert resolve_cache_dir("auto", "runs/x") == os.path.join("runs/x", "cache")
    assert resolve_cache_dir("none", "runs/x") is None and resolve_cache_dir(None, "runs/x") is None
    assert resolve_cache_dir(str(tmp_path), "runs/x") == str(tmp_path)
    with pytest.raises(ValueError, match="cache_dir"):
        resolve_cache_dir(3, "runs/x")


def test_two_ranks_score_their_share_and_log_the_same_values(tmp_path, monkeypatch):
    """Simulated 2-process run (two threads, an engine whose `mean` exchanges through a barrier): each rank
    predicts its half of the cases, both log what one process logs, neither waits forever."""
    import threading

    import keras_medseg.training.distribute as distribute
    from keras_medseg.training.distribute.group import ProcessGroup

    root = write_cases(str(tmp_path / "data"), shapes=SHAPES[:3])
    cases = find_cases(root)
    alone = _validate(ScanValidation(cases, _spec(), verbose=0), _threshold_model(3.0))
    barrier, shared, local = threading.Barrier(2, timeout=60), {}, threading.local()

    class Engine:
        def __init__(self, rank):
            self.rank = rank

        def mean(self, values):
            shared[self.rank] = np.asarray(values, np.float64)
            barrier.wait()
            out = (shared[0] + shared[1]) / 2
            barrier.wait()
            return out

        def local_scope(self):
            import contextlib

            return contextlib.nullcontext()

        def local_model(self, model):
            return model

    monkeypatch.setattr(distribute, "current_group", lambda: local.group)
    scored, logs = {0: [], 1: []}, {}

    class Counting(ScanValidation):
        def _score_case(self, model, case):
            scored[local.group.rank].append(case["name"])
            return super()._score_case(model, case)

    models = [_threshold_model(3.0), _threshold_model(3.0)]
    for m in models:  # build the predict functions before the threads share nothing but the exchange
        m.predict_on_batch(np.zeros((1, 16, 16, 16, 1), "float32"))

    def rank(k):
        local.group = ProcessGroup(rank=k, size=2, engine=Engine(k))
        logs[k] = _validate(Counting(cases, _spec(), verbose=0), models[k])

    threads = [threading.Thread(target=rank, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert scored == {0: [cases[0]["name"], cases[2]["name"]], 1: [cases[1]["name"]]}
    for k in (0, 1):
        assert logs[k]["val_scan_dice"] == pytest.approx(alone["val_scan_dice"], abs=1e-12)
        assert logs[k]["val_scan_dice_ball"] == pytest.approx(alone["val_scan_dice_ball"], abs=1e-12)


def test_worker_processes_are_taken_on_every_backend(tmp_path):  # no longer turned into threads with a warning
    with warnings.catch_warnings(), pytest.raises((ValueError, OSError)):
        warnings.simplefilter("error")
        train_volumes("unet", str(tmp_path / "missing"), use_multiprocessing=True, workers=2)
