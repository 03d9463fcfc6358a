"""benchmarks/kernels_unet.py: smoke run on a briefly trained zoo UNet, missing model, label fractions."""

import json
import os

import kernels_unet
import numpy as np
import pytest


@pytest.fixture
def unet_path(tmp_path):
    from keras_medseg import zoo

    model = zoo.build("unet", depth=2, filters=4)
    rng = np.random.default_rng(0)
    x = rng.random((4, 16, 16, 1)).astype("float32")
    model.fit(x, (x > 0.5).astype("float32"), epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "unet.keras"
    model.save(path)
    return str(path)


@pytest.mark.slow
def test_smoke_run(tmp_path, unet_path):
    out = tmp_path / "out"
    result = kernels_unet.run("smoke", out_dir=str(out), progress=False, model_path=unet_path)
    assert result["preset"] == "smoke" and result["settings"] == kernels_unet.PRESETS["smoke"]
    # depth 2: enc0, enc1, bottleneck, dec1, dec0 with two 3x3 convolutions each
    assert len(result["layers"]) == 10 and all("conv" in name for name in result["layers"])
    frac = np.array(result["fractions"])
    assert frac.shape == (10, len(result["labels"])) and np.allclose(frac.sum(axis=1), 1.0)
    assert sum(result["label_counts"].values()) == result["n_kernels"]
    assert 0.0 <= result["indeterminate_share"] <= 1.0
    assert (out / result["csv"]).exists()
    for fig in result["figures"]:
        path = out / fig
        assert fig.endswith(".png") and path.exists() and path.stat().st_size < 300_000
    text = kernels_unet.markdown(result, fig_prefix="results/kernels_unet/")
    assert "| layer | identity | laplacian |" in text
    assert "](results/kernels_unet/clusters.png)" in text
    json.dumps(result)


def test_missing_model_and_bad_preset(tmp_path):
    missing = str(tmp_path / "nope.keras")
    with pytest.raises(FileNotFoundError, match="run benchmarks/lse_lsn_unet.py first"):
        kernels_unet.run("cpu", out_dir=str(tmp_path), model_path=missing)
    with pytest.raises(FileNotFoundError, match="nope.keras"):
        kernels_unet.run("smoke", out_dir=str(tmp_path), model_path=missing)
    with pytest.raises(ValueError, match="preset"):
        kernels_unet.run("huge", model_path=missing)
    assert kernels_unet.default_model_path("cpu").endswith(os.path.join("lse_lsn_unet", "unet.keras"))


def test_label_fractions():
    records = [
        {"layer": "a", "layer_type": "Conv2D", "kernel_size": "3x3", "n_kernels": 4, "median_deviation": 0.2,
         "laplacian": 1, "indeterminate": 3},
        {"layer": "b", "layer_type": "Conv2D", "kernel_size": "3x3", "n_kernels": 2, "median_deviation": 0.1,
         "laplacian": 2, "indeterminate": 0},
    ]
    labels, frac = kernels_unet.label_fractions(records)
    assert labels == ["laplacian", "indeterminate"]
    assert np.allclose(frac, [[0.25, 0.75], [1.0, 0.0]])
