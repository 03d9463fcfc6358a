"""The preprocessing spec saved with a model (`save_preprocessing` / `load_preprocessing`)."""

import json
import zipfile

import keras
import numpy as np
import pytest

from keras_medseg.data.scans.preprocess import (
    PREPROCESSING_FILENAME,
    default_preprocessing,
    load_preprocessing,
    resolve_preprocessing,
    save_preprocessing,
)


def _model():
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 1)])


def test_spec_round_trip_inside_keras_file(tmp_path):
    model = _model()
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert load_preprocessing(path) is None
    spec = {"spacing": [0.7, 0.7, 5], "orientation": "ras", "class_names": ["bg", "liver"],
            "intensity": {"preset": "ct_window", "low": -160, "high": 240}, "spatial_dims": 3,
            "patch_size": [96, 96, 32]}
    save_preprocessing(path, spec)
    save_preprocessing(path, spec)  # rewriting replaces the member, never duplicates it
    with zipfile.ZipFile(path) as z:
        assert z.namelist().count(PREPROCESSING_FILENAME) == 1
        assert json.loads(z.read(PREPROCESSING_FILENAME))["orientation"] == "RAS"
    got = load_preprocessing(path)
    assert got["spacing"] == [0.7, 0.7, 5.0] and got["class_names"] == ["bg", "liver"]
    assert got["intensity"] == {"preset": "ct_window", "low": -160, "high": 240}
    reloaded = keras.saving.load_model(path)  # the extra member does not disturb Keras
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_defaults_for_model_without_spec(tmp_path):
    model = _model()
    path = str(tmp_path / "old.keras")
    model.save(path)
    spec = resolve_preprocessing(path, model)
    assert spec["intensity"] == default_preprocessing()["intensity"] == {"preset": "zscore"}
    assert spec["spacing"] is None and spec["orientation"] is None
    assert spec["spatial_dims"] == 2 and spec["patch_size"] == [8, 8]
    assert spec["class_names"] == ["class_0", "class_1", "class_2"]


def test_sidecar_for_non_zip_model(tmp_path):
    path = tmp_path / "model_dir"
    path.mkdir()
    save_preprocessing(str(path), {"spacing": [1, 1, 1]})
    assert load_preprocessing(str(path))["spacing"] == [1.0, 1.0, 1.0]


def test_bad_spec_errors(tmp_path):
    path = str(tmp_path / "m.keras")
    with pytest.raises(FileNotFoundError, match="model_path"):
        save_preprocessing(path, {})
    _model().save(path)
    with pytest.raises(ValueError, match="unknown keys"):
        save_preprocessing(path, {"spacings": [1, 1]})
    with pytest.raises(ValueError, match="spacing"):
        save_preprocessing(path, {"spacing": [1, -1]})
    with pytest.raises(ValueError, match="orientation"):
        save_preprocessing(path, {"orientation": "RAX"})
    with pytest.raises(ValueError, match="preset"):
        save_preprocessing(path, {"intensity": {"preset": "minmax"}})
