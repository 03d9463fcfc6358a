"""Tests of `keras-medseg kernels` (CLI)."""

import csv

import keras
import numpy as np

from keras_medseg import cli
from keras_medseg import kernels as K


def test_kernels_command_writes_table_and_plots(tmp_path, capsys):
    inp = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", name="enc")(inp)
    h = keras.layers.Conv2D(4, 1, name="mix")(h)
    h = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="dec")(h)
    model = keras.Model(inp, h)
    sobel = K.reference_kernels()["sobel_y"]
    stencils = (sobel[:, :, None, None] * np.array([1.0, -1.0, 2.0])).repeat(2, axis=2)
    model.get_layer("enc").kernel.assign(stencils.astype("float32"))
    ckpt = str(tmp_path / "m.keras")
    model.save(ckpt)
    out = tmp_path / "report"
    assert cli.main(["kernels", ckpt, "--out", str(out), "--clusters", "2"]) == 0
    with open(out / "kernels.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows] == ["enc", "dec"]
    assert int(rows[0]["sobel"]) == 6 and int(rows[0]["n_kernels"]) == 6
    assert (out / "labels.png").exists() and (out / "clusters_enc.png").exists() and (out / "clusters_dec.png").exists()
    assert "kernels.csv" in capsys.readouterr().out


def test_kernels_command_errors(tmp_path, capsys):
    assert cli.main(["kernels", str(tmp_path / "nope.keras")]) == 2
    assert "nope.keras" in capsys.readouterr().err
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    ckpt = str(tmp_path / "dense.keras")
    model.save(ckpt)
    assert cli.main(["kernels", ckpt, "--out", str(tmp_path / "o")]) == 2
    assert "no convolution kernels" in capsys.readouterr().err
