"""Tests for `keras_medseg.layers.AttentionPool` (harness, NumPy reference, gradients, errors)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_medseg.layers import AttentionPool
from tests.ops.test_attention import np_attention_pool
from tests.testing import check_layer_gradients, run_layer_test

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize(
    "kwargs,input_shape,expected",
    [
        ({"heads": 3}, (2, 6, 5, 4), (2, 12)),
        ({"heads": 2, "flatten": False}, (2, 3, 5, 4, 4), (2, 2, 4)),
        ({"heads": 2, "return_attention": True}, (2, 7, 5, 3), [(2, 6), (2, 7, 5, 2)]),
        ({"heads": 1, "return_attention": True, "flatten": False}, (1, 3, 4, 5, 2), [(1, 1, 2), (1, 3, 4, 5, 1)]),
    ],
)
def test_layer_harness(kwargs, input_shape, expected):
    run_layer_test(AttentionPool, kwargs, input_shape, expected_output_shape=expected)


@pytest.mark.parametrize("shape", [(2, 5, 6, 3), (2, 3, 4, 5, 3)])
def test_layer_matches_numpy(shape, rng):
    layer = AttentionPool(heads=2, return_attention=True)
    z = rng.standard_normal(shape).astype("float32")
    pooled, alpha = layer(z)
    logits = z @ ops.convert_to_numpy(layer.kernel)  # the 1x1 convolution f(z)
    ref_pooled, ref_alpha = np_attention_pool(z, logits)
    np.testing.assert_allclose(ops.convert_to_numpy(pooled), ref_pooled.reshape(shape[0], -1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(alpha), ref_alpha, rtol=1e-5, atol=1e-7)


def test_zero_kernel_is_global_average_pool(rng):
    z = rng.standard_normal((2, 4, 4, 3)).astype("float32")
    out = AttentionPool(heads=2, kernel_initializer="zeros", flatten=False)(z)
    ref = z.mean(axis=(1, 2))
    np.testing.assert_allclose(ops.convert_to_numpy(out), np.stack([ref, ref], 1), rtol=1e-5, atol=1e-6)


def test_mixed_precision_attention_in_float16_sums_to_one(rng):
    keras.config.set_dtype_policy("mixed_float16")
    layer = AttentionPool(heads=2, return_attention=True)
    pooled, alpha = layer(rng.standard_normal((2, 16, 16, 8)).astype("float32"))
    assert keras.backend.standardize_dtype(pooled.dtype) == "float16"
    sums = ops.convert_to_numpy(alpha).astype("float32").sum(axis=(1, 2))
    np.testing.assert_allclose(sums, 1.0, atol=1e-2)


@pytest.mark.parametrize(
    "kwargs,shape",
    [({"heads": 2, "return_attention": True}, (2, 4, 3, 3)), ({"heads": 2, "flatten": False}, (1, 3, 3, 2, 2))],
)
def test_layer_gradients(kwargs, shape):
    errors = check_layer_gradients(AttentionPool, kwargs, shape, max_entries=16)
    assert max(errors.values()) < 1e-4


def test_bad_arguments():
    with pytest.raises(ValueError, match="heads"):
        AttentionPool(heads=0)
    with pytest.raises(TypeError, match="heads"):
        AttentionPool(heads=1.5)
    with pytest.raises(ValueError, match="inputs"):
        AttentionPool()(np.zeros((2, 8, 3), "float32"))
    with pytest.raises(ValueError, match="inputs"):
        AttentionPool()(np.zeros((2, 2, 2, 2, 2, 3), "float32"))
    with pytest.raises(ValueError, match="inputs"):
        AttentionPool().compute_output_shape((2, 8, 8, None))
    layer = AttentionPool()
    layer(np.zeros((1, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match="inputs"):
        layer(np.zeros((1, 4, 4, 5), "float32"))
