"""`IMEXBlock`: harness, NumPy ResNet/IMEX step references, gradients, bad input."""

import itertools

import numpy as np
import pytest
from keras import ops

from keras_medseg.layers import IMEXBlock
from tests.ops.test_implicit import dense_solve
from tests.testing import check_layer_gradients, run_layer_test

pytestmark = pytest.mark.backend_agnostic


def conv_same(x, kernel):
    """NumPy 'same' zero-padded cross-correlation: x (N, *S, Cin), kernel (*K, Cin, Cout)."""
    sizes = kernel.shape[:-2]
    d = len(sizes)
    pad = [(0, 0)] + [(k // 2, k // 2) for k in sizes] + [(0, 0)]
    xp = np.pad(x, pad)
    spatial = x.shape[1:-1]
    out = np.zeros((*x.shape[:-1], kernel.shape[-1]))
    for tap in itertools.product(*[range(k) for k in sizes]):
        window = xp[(slice(None),) + tuple(slice(t, t + s) for t, s in zip(tap, spatial))]
        out += np.tensordot(window, kernel[tap], axes=([d + 1], [0]))
    return out


def numpy_step(block, x, implicit):
    """The block's step written out in NumPy (normalization=None, ReLU)."""
    k1 = ops.convert_to_numpy(block.kernel_1)
    b1 = ops.convert_to_numpy(block.bias_1)
    k2 = ops.convert_to_numpy(block.kernel_2)
    f = conv_same(np.maximum(conv_same(x, k1) + b1, 0.0), k2)
    if implicit:
        f = dense_solve(f, ops.convert_to_numpy(block.implicit_kernel), block.h)
    return x + block.h * f


def test_conv_reference_matches_delta():
    # A centred delta kernel mapping channel 0 -> 1 copies that channel.
    x = np.random.default_rng(0).standard_normal((1, 4, 5, 2))
    k = np.zeros((3, 3, 2, 2))
    k[1, 1, 0, 1] = 1.0
    np.testing.assert_array_equal(conv_same(x, k)[..., 1], x[..., 0])


@pytest.mark.parametrize(
    "kwargs, input_shape",
    [
        ({"filters": 3, "implicit": True, "h": 0.5}, (2, 8, 7, 3)),
        ({"filters": 3, "implicit": False}, (2, 8, 7, 3)),
        ({"filters": 2, "kernel_size": (3, 5), "normalization": "instance"}, (2, 7, 9, 2)),
        ({"filters": 2, "implicit": True, "normalization": None}, (2, 5, 6, 5, 2)),
        ({"filters": 2, "implicit": False, "normalization": "layer"}, (2, 5, 6, 5, 2)),
    ],
)
def test_layer_harness(kwargs, input_shape):
    run_layer_test(IMEXBlock, kwargs, input_shape, expected_output_shape=input_shape, atol=1e-5)


@pytest.mark.parametrize("input_shape", [(2, 7, 6, 3), (1, 5, 4, 6, 2)])
@pytest.mark.parametrize("implicit", [False, True])
def test_step_equals_numpy_reference(input_shape, implicit):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(input_shape)
    block = IMEXBlock(input_shape[-1], implicit=implicit, h=0.7, normalization=None, dtype="float64")
    block.build(input_shape)
    block.bias_1.assign(0.1 * rng.standard_normal(block.bias_1.shape))
    y = ops.convert_to_numpy(block(x))
    np.testing.assert_allclose(y, numpy_step(block, x, implicit), rtol=1e-10, atol=1e-10)


def test_explicit_and_implicit_share_parameters_except_L():
    shape = (1, 8, 8, 4)
    explicit = IMEXBlock(4, implicit=False)
    implicit = IMEXBlock(4, implicit=True)
    explicit.build(shape)
    implicit.build(shape)
    names_e = [w.name for w in explicit.weights]
    names_i = [w.name for w in implicit.weights]
    assert [n for n in names_i if n != "implicit_kernel"] == names_e
    assert implicit.count_params() - explicit.count_params() == 3 * 3 * 4
    # Same weights apart from L = 0 (zero implicit kernel): identical steps.
    x = np.random.default_rng(2).standard_normal(shape).astype("float32")
    values = {w.path.split("/", 1)[1]: ops.convert_to_numpy(w) for w in explicit.weights}
    for w in implicit.weights:
        key = w.path.split("/", 1)[1]
        w.assign(np.zeros(w.shape, "float32") if w.name == "implicit_kernel" else values[key])
    np.testing.assert_allclose(ops.convert_to_numpy(implicit(x)), ops.convert_to_numpy(explicit(x)), atol=1e-5)


def test_implicit_step_spreads_information_globally():
    # One implicit step with a nonzero L kernel couples far-away pixels (the
    # inverse of I + hL is dense); the explicit step only sees a 5x5 neighbourhood.
    shape = (1, 16, 16, 2)
    x = np.zeros(shape, "float32")
    x[0, 2, 2, :] = 1.0
    for implicit in (False, True):
        block = IMEXBlock(2, implicit=implicit, normalization=None, h=1.0)
        block.build(shape)
        block.bias_1.assign(np.zeros(2, "float32"))
        y = ops.convert_to_numpy(block(x))
        far = np.abs(y[0, 10:, 10:, :]).max()
        assert (far > 1e-6) == implicit


@pytest.mark.parametrize(
    "kwargs, input_shape",
    [
        ({"filters": 2, "implicit": True, "normalization": None, "activation": "sigmoid"}, (2, 6, 5, 2)),
        ({"filters": 2, "implicit": True, "normalization": None, "activation": "sigmoid"}, (1, 4, 5, 3, 2)),
    ],
)
def test_gradients(kwargs, input_shape):
    # Smooth activation (no ReLU kinks near the finite-difference points) and no
    # normalization: Keras' tanh and its normalization layers compute parts of a
    # float64 input in float32 on JAX, which makes central differences noisy
    # there (the normalization layers are Keras' own, tested by Keras).
    check_layer_gradients(IMEXBlock, kwargs, input_shape, max_entries=10)


class TestBadInput:
    def test_filters_mismatch(self):
        with pytest.raises(ValueError, match=r"`filters` must equal the input channels \(3\). Received: filters=4"):
            IMEXBlock(4)(np.zeros((1, 8, 8, 3), "float32"))

    @pytest.mark.parametrize("h", [0.0, -1.0])
    def test_h_not_positive(self, h):
        with pytest.raises(ValueError, match=r"`h` must be finite and > 0. Received: h="):
            IMEXBlock(4, h=h)

    def test_even_kernel_size(self):
        with pytest.raises(ValueError, match=r"`kernel_size` must be odd.*Received: kernel_size=4"):
            IMEXBlock(4, kernel_size=4)

    def test_filters_not_positive(self):
        with pytest.raises(ValueError, match=r"`filters` must be >= 1. Received: filters=0"):
            IMEXBlock(0)

    def test_unknown_normalization(self):
        with pytest.raises(ValueError, match=r"`normalization` must be one of.*Received: normalization='group'"):
            IMEXBlock(4, normalization="group")

    @pytest.mark.parametrize("shape", [(2, 8, 4), (1, 4, 4, 4, 4, 4)])
    def test_wrong_rank(self, shape):
        with pytest.raises(ValueError, match=r"2D \(N, H, W, C\) or 3D.*Received: input_shape="):
            IMEXBlock(4)(np.zeros(shape, "float32"))
