"""`keras_medseg.training`: data resolution, class weights, train/evaluate helpers."""

import numpy as np
import pytest

from keras_medseg import zoo
from keras_medseg.data import load_data
from keras_medseg.training import build_for_data, class_balance_weights, evaluate, train


def test_class_balance_weights():
    y = np.array([[0, 0, 0, 1], [0, 0, 0, 2]])
    w = class_balance_weights(y, 3, power=1.0)
    counts = np.array([6, 1, 1])
    expected = (8 / (3 * counts))[y]
    np.testing.assert_allclose(w, expected / expected.mean(), rtol=1e-6)
    assert w.mean() == pytest.approx(1.0)
    assert w[0, 3] > w[0, 0]


def test_load_data_qtips_and_arrays():
    d = load_data("qtips", n_train=4, n_val=2, size=32, seed=0)
    assert d.x_train.shape == (4, 32, 32, 1) and d.num_classes == 4 and d.spatial_dims == 2
    assert d.x_train.min() >= -1 and d.x_train.max() <= 1
    arrays = load_data(((d.x_train, d.y_train), (d.x_val, d.y_val)))
    assert arrays.num_classes == 4
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        load_data("no_such_dir")
    with pytest.raises(ValueError, match="data"):
        load_data(3)


def test_build_for_data_fills_arguments():
    d = load_data("qtips", n_train=2, n_val=2, size=16, seed=0)
    model = build_for_data("unet", d, depth=2, filters=2)
    assert model.inputs[0].shape == (None, 16, 16, 1) and model.outputs[0].shape[-1] == 4


def test_train_and_evaluate_with_a_model_instance(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 1)).astype("float32")
    y = (x[..., 0] > 0).astype("int32")
    model = zoo.build("unet", depth=1, filters=2)  # one-channel sigmoid head
    result = train(model, ((x[:6], y[:6]), (x[6:], y[6:])), epochs=1, out_dir=tmp_path, batch_size=6,
                   verbose=0, class_balance=True)
    assert result.table["classes"] == [0, 1] and result.predictions.shape == (2, 8, 8)
    table, names = evaluate(result.checkpoint, (x, y))
    assert names is None and len(table["iou"]) == 2
    with pytest.raises(ValueError, match="epochs"):
        train(model, ((x, y), (x, y)), epochs=0, out_dir=tmp_path)
    with pytest.raises(TypeError, match="model_or_name"):
        train(3, ((x, y), (x, y)), epochs=1, out_dir=tmp_path)
