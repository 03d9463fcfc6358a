"""The harness itself is tested on Keras layers and functions with known gradients."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.testing import check_layer_gradients, check_op_gradients, numerical_gradient, run_layer_test

pytestmark = pytest.mark.backend_agnostic


def test_numerical_gradient_of_quadratic():
    a = np.array([[2.0, 0.5], [0.5, 1.0]])
    x = np.array([0.3, -1.2])
    g = numerical_gradient(lambda v: float(v @ a @ v), x)
    np.testing.assert_allclose(g, 2 * a @ x, rtol=1e-7, atol=1e-8)


def test_op_gradients_pass_for_smooth_op():
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 1))
    y = np.random.default_rng(1).standard_normal((2, 5, 5, 1))
    errors = check_op_gradients(lambda a, b: ops.exp(0.3 * a) * b + ops.square(a), x, y)
    assert max(errors.values()) < 1e-6


def test_op_gradients_detect_a_wrong_gradient():
    # stop_gradient hides a dependence from autodiff: the check must notice.
    x = np.random.default_rng(0).standard_normal((4,))
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_op_gradients(lambda a: a * ops.stop_gradient(a), x)


def test_layer_harness_on_keras_conv():
    run_layer_test(keras.layers.Conv2D, {"filters": 3, "kernel_size": 3, "padding": "same"}, (2, 7, 5, 2),
                   expected_output_shape=(2, 7, 5, 3))


def test_layer_gradients_on_keras_dense():
    if keras.backend.backend() != "torch":
        errors = check_layer_gradients(keras.layers.Dense, {"units": 3, "activation": "sigmoid"}, (2, 4))
        assert len(errors) == 3 and max(errors.values()) < 1e-6
    # Keras 3.15.1's torch matmul computes float64 operands in float32 (`dtypes.result_type` maps 64-bit
    # dtypes to 32-bit), so on torch Dense is checked in float32; the float32 check runs on every backend.
    errors = check_layer_gradients(keras.layers.Dense, {"units": 3, "activation": "sigmoid"}, (2, 4),
                                   dtype="float32", rtol=1e-3)
    assert len(errors) == 3 and max(errors.values()) < 1e-3


def test_float32_layer_gradient_check_detects_a_wrong_gradient():
    class Detached(keras.layers.Layer):
        def call(self, x):
            return x * ops.stop_gradient(x)

    with pytest.raises(AssertionError, match="gradient check failed"):
        check_layer_gradients(Detached, {}, (2, 3), dtype="float32", rtol=1e-3)
    with pytest.raises(ValueError, match="dtype"):
        check_layer_gradients(Detached, {}, (2, 3), dtype="float16")


def test_value_and_grad_gives_zero_gradients_to_unused_arguments():
    """An argument the value does not reach gets a zero gradient, also when none reaches it (torch raised)."""
    from keras_medseg.utils.gradients import value_and_grad as library_value_and_grad
    from tests.testing import value_and_grad

    x = np.array([1.0, -2.0, 3.0])
    y = np.array([0.5, 0.25])
    for vg in (library_value_and_grad, value_and_grad):
        value, (gx, gy) = vg(lambda a, b: ops.sum(ops.square(a)) + ops.sum(ops.stop_gradient(b)), x, y)
        np.testing.assert_allclose(float(ops.convert_to_numpy(value)), 14.75)
        np.testing.assert_allclose(ops.convert_to_numpy(gx), 2 * x)
        np.testing.assert_array_equal(ops.convert_to_numpy(gy), 0.0)
        value, (gx,) = vg(lambda a: ops.sum(ops.stop_gradient(a)), x)
        np.testing.assert_allclose(float(ops.convert_to_numpy(value)), 2.0)
        np.testing.assert_array_equal(ops.convert_to_numpy(gx), 0.0)
