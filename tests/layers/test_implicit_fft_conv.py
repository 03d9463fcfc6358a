"""`ImplicitFFTConv`: harness, dense-solve agreement, gradients, bad input."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_medseg.layers import ImplicitFFTConv
from tests.ops.test_implicit import dense_solve
from tests.testing import check_layer_gradients, run_layer_test

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize(
    "kwargs, input_shape",
    [
        ({"kernel_size": 3, "h": 0.5}, (2, 8, 7, 3)),
        ({"kernel_size": (3, 5), "h": 2.0, "trainable_h": False}, (2, 9, 6, 2)),
        ({"kernel_size": 3, "h": 1.0}, (2, 5, 6, 7, 2)),
    ],
)
def test_layer_harness(kwargs, input_shape):
    run_layer_test(ImplicitFFTConv, kwargs, input_shape, expected_output_shape=input_shape)


@pytest.mark.parametrize("input_shape, kernel_size", [((2, 7, 6, 3), (3, 5)), ((1, 5, 4, 6, 2), 3)])
def test_equals_dense_solve_with_layer_weights(input_shape, kernel_size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(input_shape)
    layer = ImplicitFFTConv(kernel_size=kernel_size, h=0.8, dtype="float64")
    y = ops.convert_to_numpy(layer(x))
    kernel = ops.convert_to_numpy(layer.kernel)
    h = float(ops.convert_to_numpy(layer.step_size))
    assert h == pytest.approx(0.8, rel=1e-6)
    np.testing.assert_allclose(y, dense_solve(x, kernel, h), rtol=1e-10, atol=1e-10)


def test_h_is_learned_and_stays_positive():
    layer = ImplicitFFTConv(h=0.5)
    layer.build((None, 8, 8, 2))
    assert [w.name for w in layer.trainable_weights] == ["kernel", "log_h"]
    # Whatever the optimiser does to log_h, h = exp(log_h) is positive.
    layer.log_h.assign(-30.0)
    assert float(ops.convert_to_numpy(layer.step_size)) > 0
    frozen = ImplicitFFTConv(h=0.5, trainable_h=False)
    frozen.build((None, 8, 8, 2))
    assert [w.name for w in frozen.trainable_weights] == ["kernel"]
    assert [w.name for w in frozen.non_trainable_weights] == ["log_h"]
    # get_config stores the initial h.
    assert frozen.get_config()["h"] == 0.5


def test_fit_moves_h():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 8, 8, 2)).astype("float32")
    inputs = keras.Input((8, 8, 2))
    layer = ImplicitFFTConv(h=1.0)
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, 0.1 * x, epochs=2, batch_size=4, verbose=0)
    assert float(ops.convert_to_numpy(layer.log_h)) != 0.0
    assert math.isfinite(float(ops.convert_to_numpy(layer.log_h)))


@pytest.mark.parametrize("input_shape", [(2, 6, 5, 2), (1, 4, 5, 3, 2)])
def test_gradients(input_shape):
    check_layer_gradients(ImplicitFFTConv, {"kernel_size": 3, "h": 0.7}, input_shape, max_entries=12)


class TestBadInput:
    @pytest.mark.parametrize("h", [0.0, -0.5])
    def test_h_not_positive(self, h):
        with pytest.raises(ValueError, match=r"`h` must be finite and > 0. Received: h="):
            ImplicitFFTConv(h=h)

    @pytest.mark.parametrize("kernel_size", [2, (3, 4)])
    def test_even_kernel_size(self, kernel_size):
        with pytest.raises(ValueError, match=r"`kernel_size` must be odd.*Received: kernel_size="):
            ImplicitFFTConv(kernel_size=kernel_size)

    def test_kernel_size_type(self):
        with pytest.raises(TypeError, match="kernel_size"):
            ImplicitFFTConv(kernel_size="3")

    def test_kernel_size_rank_mismatch(self):
        with pytest.raises(ValueError, match=r"one entry per spatial axis \(3\)"):
            ImplicitFFTConv(kernel_size=(3, 3))(np.zeros((1, 4, 4, 4, 2), "float32"))

    @pytest.mark.parametrize("shape", [(2, 8, 3), (1, 4, 4, 4, 4, 2)])
    def test_wrong_rank(self, shape):
        with pytest.raises(ValueError, match=r"2D \(N, H, W, C\) or 3D.*Received: input_shape="):
            ImplicitFFTConv()(np.zeros(shape, "float32"))

    def test_kernel_larger_than_image(self):
        with pytest.raises(ValueError, match="not be larger than the image"):
            ImplicitFFTConv(kernel_size=5)(np.zeros((1, 3, 8, 2), "float32"))
