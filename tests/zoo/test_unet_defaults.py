"""The default `unet` (instance norm, Dice + CE) scores the same in `predict` as in training mode
after a short run; batch norm stays available; the compile default runs on every backend."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_medseg import zoo
from keras_medseg.losses import DiceCELoss

pytestmark = pytest.mark.backend_agnostic


def _blobs(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.5, size=(n, size, size, 1)).astype("float32")
    y = np.zeros((n, size, size), "int32")
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(8, size - 8, 2)
        r = rng.integers(3, 7)
        y[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        x[i, ..., 0] += 1.5 * y[i]
    return x, y


def _dice(prob, y):
    pred = np.argmax(np.asarray(ops.convert_to_numpy(prob)), -1)
    return 2 * np.sum((pred == 1) & (y == 1)) / max(np.sum(pred == 1) + np.sum(y == 1), 1)


def test_default_unet_predict_scores_like_training_mode():
    x, y = _blobs(32)
    model = zoo.build("unet", num_classes=2, depth=2, filters=8, learning_rate=3e-3)
    assert isinstance(model.loss, DiceCELoss)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    model.fit(x, y, batch_size=8, epochs=6, verbose=0)  # 24 steps: far too few for batch-norm statistics
    train_mode = _dice(model(x, training=True), y)
    inference = _dice(model.predict(x, verbose=0), y)
    assert train_mode > 0.5
    assert abs(inference - train_mode) <= 0.1, (inference, train_mode)


@pytest.mark.parametrize("kwargs,layer_type,count", [
    ({"normalization": "batch"}, keras.layers.BatchNormalization, 6),
    ({"batch_norm": True}, keras.layers.BatchNormalization, 6),
    ({"normalization": "group"}, keras.layers.GroupNormalization, 6),
    ({"normalization": None}, keras.layers.GroupNormalization, 0),
    ({"batch_norm": False}, keras.layers.BatchNormalization, 0),
])
def test_normalization_options(kwargs, layer_type, count):
    model = zoo.build("unet", spatial_dims=3, num_classes=3, depth=1, filters=4, **kwargs)
    assert sum(isinstance(layer, layer_type) for layer in model.layers) == count
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 8, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=(1, 8, 8, 8)).astype("int32")
    # one step: eager on TensorFlow is cheaper than tracing it (3.6 -> 0.7 CPU s); the compiled step of the
    # default model runs in test_default_unet_predict_scores_like_training_mode; JAX compiles (cheaper there)
    model.run_eagerly = keras.backend.backend() == "tensorflow"
    loss = model.train_on_batch(x, y)
    assert np.isfinite(np.ravel(loss)[0])


def test_bad_normalization_and_loss():
    with pytest.raises(ValueError, match="normalization"):
        zoo.build("unet", normalization="weird")
    with pytest.raises(ValueError, match="loss"):
        zoo.build("unet", loss="hinge")
