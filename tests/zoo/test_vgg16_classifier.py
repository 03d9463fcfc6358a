"""VGG16 patch classifier: architecture, preprocessing, recipe, local weights (never downloaded)."""

import h5py
import keras
import numpy as np
import pytest

from keras_medseg import zoo
from keras_medseg.training.callbacks import ROCAUCEarlyStopping
from keras_medseg.training.recipes import vgg16_recipe as recipe
from keras_medseg.zoo.vgg16_classifier import WEIGHTS_FILE, VGG16Preprocessing


def _write_legacy_weights(model, path):
    """Write `model`'s weights in the legacy Keras .h5 layout of the official notop file."""
    with h5py.File(path, "w") as f:
        names = [layer.name for layer in model.layers if layer.weights]
        f.attrs["layer_names"] = [n.encode() for n in names]
        for layer in model.layers:
            if not layer.weights:
                continue
            g = f.create_group(layer.name)
            g.attrs["weight_names"] = [f"w{i}".encode() for i in range(len(layer.weights))]
            for i, w in enumerate(layer.get_weights()):
                g.create_dataset(f"w{i}", data=w)


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory):
    keras.utils.set_random_seed(123)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    directory = tmp_path_factory.mktemp("keras_home")
    (directory / "models").mkdir()
    path = directory / "models" / WEIGHTS_FILE
    _write_legacy_weights(base, path)
    return directory, path, {layer.name: layer.get_weights() for layer in base.layers if layer.weights}


def test_architecture_and_compile():
    model = zoo.build("vgg16_classifier", input_shape=(32, 32, 3))
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 1) and np.all((y > 0) & (y < 1))
    names = [layer.name for layer in model.layers]
    assert names[:3] == ["vgg16_classifier_input", "vgg16_classifier_preprocessing", "block1_conv1"]
    assert names[-3:] == ["vgg16_classifier_global_max_pool", "vgg16_classifier_head", "vgg16_classifier_probability"]
    assert sum(n.startswith("block") and "conv" in n for n in names) == 13
    assert model.get_layer("block5_conv3").output.shape == (None, 2, 2, 512)
    assert model.get_layer("vgg16_classifier_head").units == 1
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.RMSprop)
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(5e-5)
    assert opt.rho == pytest.approx(0.9) and opt.momentum == pytest.approx(0.9)
    assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
    # same number of weights as the Keras VGG16 base + one dense unit
    assert model.count_params() == 14714688 + 512 + 1


@pytest.mark.backend_agnostic
def test_preprocessing_matches_keras_preprocess_input():
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    ref = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(VGG16Preprocessing()(x)), ref, rtol=1e-6, atol=1e-4)
    with pytest.raises(ValueError, match="3"):
        VGG16Preprocessing()(np.zeros((1, 4, 4, 1), "float32"))


def test_imagenet_weights_from_keras_cache(fake_weights, monkeypatch):
    directory, path, ref = fake_weights
    monkeypatch.setenv("KERAS_HOME", str(directory))
    model = zoo.build("vgg16_classifier", input_shape=(32, 32, 3), weights="imagenet")
    for name, values in ref.items():
        for got, want in zip(model.get_layer(name).get_weights(), values):
            np.testing.assert_array_equal(got, want)
    explicit = zoo.build("vgg16_classifier", input_shape=(64, 64, 3), weights=str(path), freeze_base=True)
    np.testing.assert_array_equal(explicit.get_layer("block3_conv2").get_weights()[0], ref["block3_conv2"][0])
    assert not explicit.get_layer("block1_conv1").trainable
    assert explicit.get_layer("vgg16_classifier_head").trainable


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("keras_medseg.zoo.vgg16_classifier._keras_cache_dirs", lambda: [str(tmp_path / "models")])
    with pytest.raises(FileNotFoundError, match=f"{WEIGHTS_FILE}.*never downloads.*{tmp_path / 'models'}"):
        zoo.build("vgg16_classifier", input_shape=(32, 32, 3), weights="imagenet")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        zoo.build("vgg16_classifier", input_shape=(32, 32, 3), weights=str(tmp_path / "nope.h5"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 32x32"):
        zoo.build("vgg16_classifier", input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="input_shape"):
        zoo.build("vgg16_classifier", input_shape=(32, 32))
    with pytest.raises(ValueError, match="RGB"):
        zoo.build("vgg16_classifier", input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="preprocessing"):
        zoo.build("vgg16_classifier", preprocessing="torch")
    with pytest.raises(ValueError, match="dropout"):
        zoo.build("vgg16_classifier", dropout=1.5)


def test_recipe_and_grayscale_without_preprocessing():
    x = np.zeros((4, 32, 32, 1), "float32")
    y = np.array([0, 1, 0, 1], "float32")
    opt, loss, cbs = recipe(validation_data=(x, y))
    assert isinstance(opt, keras.optimizers.RMSprop) and isinstance(loss, keras.losses.BinaryCrossentropy)
    assert isinstance(cbs[0], ROCAUCEarlyStopping) and cbs[0].patience == 5
    assert isinstance(cbs[1], keras.callbacks.ReduceLROnPlateau) and cbs[1].factor == 0.5 and cbs[1].patience == 3
    assert len(recipe()[2]) == 1
    model = zoo.build("vgg16_classifier", input_shape=(None, None, 1), preprocessing=None, dropout=0.2)
    assert model.predict(np.zeros((1, 48, 40, 1), "float32"), verbose=0).shape == (1, 1)
