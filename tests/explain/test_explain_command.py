"""Tests of `keras-medseg explain` (CLI)."""

import os

import keras
import numpy as np
import pytest

from keras_medseg import cli
from keras_medseg.commands import explain as explain_command
from keras_medseg.explain.image import METHODS, load_checkpoint, prepare_input


def test_command_method_choices_match_the_library():
    assert explain_command.METHODS == METHODS
    assert not hasattr(explain_command, "load_checkpoint")  # no forwarding alias: it lives in explain.image


def _checkpoint(tmp_path, spatial=(16, 16)):
    conv = keras.layers.Conv2D if len(spatial) == 2 else keras.layers.Conv3D
    gap = keras.layers.GlobalAveragePooling2D if len(spatial) == 2 else keras.layers.GlobalAveragePooling3D
    inp = keras.Input(spatial + (1,))
    h = conv(4, 3, padding="same", activation="relu", name="conv")(inp)
    out = keras.layers.Dense(2, activation="softmax")(gap()(h))
    path = str(tmp_path / "model.keras")
    keras.Model(inp, out).save(path)
    return path


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "gradcam", "occlusion", "lime"])
def test_explain_command_writes_png_and_map(method, tmp_path, rng):
    ckpt = _checkpoint(tmp_path)
    img = tmp_path / "image.npy"
    np.save(img, rng.random((20, 18)).astype("float32"))  # resized to the model's 16x16
    out = tmp_path / "maps" / f"{method}.png"
    rc = cli.main(["explain", ckpt, str(img), "--method", method, "--class", "1", "--samples", "8",
                   "--patch", "4", "--out", str(out)])
    assert rc == 0
    assert out.exists() and out.stat().st_size > 0
    heat = np.load(str(out).replace(".png", ".npy"))
    assert heat.shape == (16, 16) and np.isfinite(heat).all()


def test_explain_command_on_a_volume_default_class(tmp_path, rng):
    ckpt = _checkpoint(tmp_path, (6, 8, 8))
    img = tmp_path / "vol.npz"
    np.savez(img, vol=rng.random((6, 8, 8)).astype("float32"))
    out = tmp_path / "cam.png"
    assert cli.main(["explain", ckpt, str(img), "--axis", "2", "--index", "3", "--out", str(out)]) == 0
    assert np.load(tmp_path / "cam.npy").shape == (6, 8, 8)


def test_explain_command_errors(tmp_path, rng, capsys):
    assert cli.main(["explain", str(tmp_path / "missing.keras"), "x.npy"]) == 2
    assert "missing.keras" in capsys.readouterr().err
    inp = keras.Input((4, 4, 1))
    out = keras.layers.Dense(1)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: 2.0 * t)(inp)))
    path = str(tmp_path / "lambda.keras")
    keras.Model(inp, out).save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        load_checkpoint(path)
    img = tmp_path / "img.npy"
    np.save(img, rng.random((4, 4)))
    assert cli.main(["explain", path, str(img)]) == 2
    assert "Lambda" in capsys.readouterr().err
    ckpt = _checkpoint(tmp_path)
    np.save(img, rng.random((4, 4, 4, 4)))
    assert cli.main(["explain", ckpt, str(img)]) == 2
    assert "IMAGE" in capsys.readouterr().err
    model = keras.saving.load_model(ckpt)
    with pytest.raises(ValueError, match="channels"):
        prepare_input(rng.random((16, 16, 5)), model)
    assert prepare_input(rng.random((16, 16, 3)), model).shape == (1, 16, 16, 1)
    assert os.path.exists(ckpt)


def test_one_sigmoid_output_is_explained_as_binary(tmp_path, rng, capsys):
    """A one-unit sigmoid model: the map is labelled "foreground probability"; `--class 1` is refused in one line."""
    inp = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(h))
    ckpt = str(tmp_path / "binary.keras")
    keras.Model(inp, out).save(ckpt)
    img = tmp_path / "image.npy"
    np.save(img, rng.random((16, 16)).astype("float32"))
    png = tmp_path / "map.png"
    assert cli.main(["explain", ckpt, str(img), "--method", "saliency", "--out", str(png)]) == 0
    assert "foreground probability" in capsys.readouterr().out
    assert cli.main(["explain", ckpt, str(img), "--method", "saliency", "--class", "1", "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert "one sigmoid output" in err and len(err.strip().splitlines()) == 1


def _normalised_by_hand(raw, preset):
    """Independent NumPy formulas of the two presets used below (z-score, CT window)."""
    if preset["preset"] == "zscore":
        return (raw - raw.mean()) / (raw.std() + 1e-6)
    return (np.clip(raw, preset["low"], preset["high"]) - preset["low"]) / (preset["high"] - preset["low"])


@pytest.mark.parametrize("preset", [{"preset": "zscore"}, {"preset": "ct_window", "low": -160.0, "high": 240.0}],
                         ids=["zscore", "ct_window"])
@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_explain_applies_the_stored_normalisation(preset, method, tmp_path, rng, capsys):
    """A model stored with its training normalisation, explained on a raw-intensity image, gives the map of the
    same model without a spec explained on the image normalised by hand."""
    from keras_medseg.data.scans.preprocess import save_preprocessing
    from keras_medseg.explain.image import explain_file

    plain = _checkpoint(tmp_path)
    (tmp_path / "stored").mkdir()
    stored = str(tmp_path / "stored" / "model.keras")
    with open(plain, "rb") as src, open(stored, "wb") as dst:
        dst.write(src.read())
    save_preprocessing(stored, {"intensity": preset})
    from skimage.transform import resize

    raw = (rng.random((20, 18)) * 600.0 - 300.0).astype("float32")  # HU-like, resized to 16x16 by explain
    np.save(tmp_path / "raw.npy", raw)
    on_grid = resize(raw, (16, 16), order=1, preserve_range=True).astype("float64")  # normalised on the grid
    np.save(tmp_path / "norm.npy", _normalised_by_hand(on_grid, preset).astype("float32"))

    got = explain_file(stored, str(tmp_path / "raw.npy"), method=method, class_index=1)
    want = explain_file(plain, str(tmp_path / "norm.npy"), method=method, class_index=1)
    as_given = explain_file(plain, str(tmp_path / "raw.npy"), method=method, class_index=1)
    np.testing.assert_allclose(got.x, want.x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.heat, want.heat, rtol=1e-4, atol=1e-6)
    assert not np.allclose(got.x, as_given.x)  # the stored spec changed what the model saw
    assert got.normalisation.startswith(preset["preset"]) and want.normalisation == "image as given"
    # spec=None overrides the stored spec
    np.testing.assert_allclose(explain_file(stored, str(tmp_path / "raw.npy"), method=method, class_index=1,
                                            spec=None).heat, as_given.heat, rtol=1e-5, atol=1e-7)
    # the command says which normalisation it applied
    out = tmp_path / "map.png"
    assert cli.main(["explain", stored, str(tmp_path / "raw.npy"), "--method", method, "--class", "1",
                     "--out", str(out)]) == 0
    assert f"input intensity: {preset['preset']}" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "map.npy"), got.heat, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fill", ["one", "all"])
def test_explain_refuses_nan_input_in_one_line(fill, tmp_path, capsys):
    from keras_medseg.explain.image import explain_image

    ckpt = _checkpoint(tmp_path)
    img = np.zeros((16, 16), "float32")
    if fill == "all":
        img[:] = np.nan
    else:
        img[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", img)
    assert cli.main(["explain", ckpt, str(tmp_path / "nan.npy"), "--out", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nan.npy" in err and "NaN" in err, err
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "m.npy").exists()
    model = load_checkpoint(ckpt)
    n = 256 if fill == "all" else 1
    with pytest.raises(ValueError, match=rf"IMAGE has {n} NaN and 0 Inf"):
        prepare_input(img, model)
    with pytest.raises(ValueError, match=rf"`x` has {n} NaN and 0 Inf"):
        explain_image(model, img[None, ..., None], method="saliency")

def test_a_model_trained_on_a_folder_is_explained_on_raw_images_as_it_was_trained(tmp_path, rng,
                                                                                 eager_tf_functions):
    """`train` on a folder z-scores each image and stores that in best.keras; explain on a raw 0-255 image
    then equals explaining the hand-z-scored image with the spec switched off."""
    from keras_medseg.data.scans.preprocess import load_preprocessing
    from keras_medseg.explain.image import explain_file
    from keras_medseg.training import train

    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(4):
        img = (rng.random((16, 16)) * 255.0).astype("float32")
        np.save(tmp_path / "data" / "images" / f"c{i}.npy", img)
        np.save(tmp_path / "data" / "masks" / f"c{i}.npy", (img > 128).astype("uint8"))
    result = train("unet", str(tmp_path / "data"), epochs=1, out_dir=str(tmp_path / "run"), batch_size=4,
                   model_kwargs={"filters": 2, "depth": 1}, verbose=0)
    spec = load_preprocessing(result.checkpoint)
    assert spec["intensity"] == {"preset": "zscore"} and spec["spatial_dims"] == 2
    raw = np.load(tmp_path / "data" / "images" / "c0.npy")
    np.save(tmp_path / "z.npy", ((raw - raw.mean()) / (raw.std() + 1e-6)).astype("float32"))
    got = explain_file(result.checkpoint, str(tmp_path / "data" / "images" / "c0.npy"), method="saliency",
                       class_index=1)
    want = explain_file(result.checkpoint, str(tmp_path / "z.npy"), method="saliency", class_index=1, spec=None)
    np.testing.assert_allclose(got.heat, want.heat, rtol=1e-4, atol=1e-6)
    assert got.normalisation == "zscore"
