"""`keras-medseg list/train/evaluate/demo` smoke tests with tiny sizes (in-process)."""

import csv
import os

import numpy as np
import pytest
import skimage.io

from keras_medseg import zoo
from keras_medseg.cli import main
from keras_medseg.commands.train import parse_model_args
from tests.testing import eager_tf_functions

TINY_UNET = ["--arg", "filters=2", "--arg", "depth=1"]


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in zoo.list():
        assert name in out
    assert main(["list", "unet"]) == 0
    out = capsys.readouterr().out
    assert "filters" in out and "spatial_dims: 2, 3" in out


def test_list_unknown_model(capsys):
    assert main(["list", "unte"]) == 2
    assert "Did you mean 'unet'" in capsys.readouterr().err


def test_parse_model_args():
    assert parse_model_args(["filters=8", "batch_norm=False", "name=seg", "stages=((1, 4),)"]) == {
        "filters": 8, "batch_norm": False, "name": "seg", "stages": ((1, 4),)}
    with pytest.raises(ValueError, match="name=value"):
        parse_model_args(["filters"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    with eager_tf_functions():
        rc = main(["train", "unet", "--n-train", "8", "--n-val", "4", "--size", "16", "--epochs", "2",
                   "--batch-size", "8", "--out", str(out), "--quiet", "--class-balance"] + TINY_UNET)
    return rc, out


def test_train_writes_outputs(trained):
    rc, out = trained
    assert rc == 0
    for f in ("best.keras", "log.csv", "predictions.png", "history.png"):
        assert os.path.getsize(out / f) > 0
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and "val_loss" in rows[0] and "mean_iou" in rows[0]


def test_evaluate_prints_table(trained, capsys, tmp_path):
    _, out = trained
    plot = tmp_path / "eval.png"
    assert main(["evaluate", str(out / "best.keras"), "--n", "4", "--size", "16", "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    for row in ("background", "rod, both ends bright", "rod, one end bright, one dark", "rod, both ends dark", "mean"):
        assert row in text
    assert "unet IoU" not in text and "IoU" in text
    assert plot.exists()


def test_evaluate_errors(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.keras")]) == 2
    assert "missing.keras" in capsys.readouterr().err
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    assert main(["evaluate", str(bad)]) == 2
    assert "bad.keras" in capsys.readouterr().err


def test_train_errors(tmp_path, capsys):
    assert main(["train", "unte", "--out", str(tmp_path), "--n-train", "4", "--n-val", "2", "--size", "16"]) == 2
    assert "Did you mean 'unet'" in capsys.readouterr().err
    assert main(["train", "unet", "--arg", "filtres=3", "--out", str(tmp_path), "--n-train", "4",
                 "--n-val", "2", "--size", "16"]) == 2
    assert "filtres" in capsys.readouterr().err
    assert main(["train", "unet", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path)]) == 2
    assert "nodata" in capsys.readouterr().err


def test_train_on_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(4):
        img = rng.integers(0, 255, size=(8, 8), dtype=np.uint8)
        skimage.io.imsave(data / "images" / f"c{i}.png", img, check_contrast=False)
        skimage.io.imsave(data / "masks" / f"c{i}.png", ((img > 128) * 255).astype(np.uint8), check_contrast=False)
    out = tmp_path / "run"
    with eager_tf_functions():
        assert main(["train", "unet", "--data", str(data), "--epochs", "1", "--out", str(out), "--quiet"]
                    + TINY_UNET) == 0
    assert (out / "best.keras").exists()
    text = capsys.readouterr().out
    assert "class 1" in text
    (data / "masks" / "c3.png").unlink()
    assert main(["train", "unet", "--data", str(data), "--out", str(out), "--quiet"] + TINY_UNET) == 2
    assert "c3.png" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not {"imexnet", "resnet_seg"} <= set(zoo.list()), reason="imexnet/resnet_seg not registered")
def test_demo_fast(tmp_path, capsys):
    with eager_tf_functions():
        assert main(["demo", "--fast", "--out", str(tmp_path), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "imexnet IoU" in text and "resnet_seg IoU" in text
    assert "rod, both ends bright" in text and "README headline" in text.strip().splitlines()[-1]
    for f in ("predictions.png", "history.png", "imexnet.keras", "resnet_seg.keras"):
        assert (tmp_path / f).exists()
