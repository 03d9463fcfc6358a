"""`implicit_conv_solve` against a dense solve of the explicit circulant system."""

import itertools

import numpy as np
import pytest
from keras import ops

from keras_medseg.ops import implicit_conv_solve
from tests.testing import check_op_gradients

pytestmark = pytest.mark.backend_agnostic


def periodic_depthwise_conv(y, c):
    """NumPy periodic cross-correlation of one channel `y (*S)` with `c (*K)`, centred taps."""
    centre = [k // 2 for k in c.shape]
    out = np.zeros_like(y)
    axes = tuple(range(y.ndim))
    for tap in itertools.product(*[range(k) for k in c.shape]):
        shift = tuple(m - t for t, m in zip(tap, centre))
        out += c[tap] * np.roll(y, shift, axis=axes)
    return out


def conv_matrix(c, spatial):
    """Dense matrix of the periodic convolution, built column by column from unit vectors."""
    size = int(np.prod(spatial))
    m = np.zeros((size, size))
    for j in range(size):
        e = np.zeros(size)
        e[j] = 1.0
        m[:, j] = periodic_depthwise_conv(e.reshape(spatial), c).ravel()
    return m


def dense_solve(b, kernel, h):
    """Solve `(I + h C^T C) y = b` per sample and channel with `numpy.linalg.solve`."""
    spatial = b.shape[1:-1]
    out = np.zeros_like(b)
    for ch in range(b.shape[-1]):
        c = conv_matrix(kernel[..., ch], spatial)
        a = np.eye(c.shape[0]) + h * c.T @ c
        rhs = b[..., ch].reshape(b.shape[0], -1).T
        out[..., ch] = np.linalg.solve(a, rhs).T.reshape(b.shape[:-1])
    return out


def test_conv_matrix_reference_is_a_convolution():
    # Sanity check of the reference itself: a centred delta kernel is the identity,
    # a kernel with a single off-centre tap is a cyclic shift.
    delta = np.zeros((3, 3))
    delta[1, 1] = 1.0
    np.testing.assert_array_equal(conv_matrix(delta, (4, 5)), np.eye(20))
    right = np.zeros((3, 3))
    right[1, 2] = 1.0
    y = np.arange(20.0).reshape(4, 5)
    np.testing.assert_array_equal(periodic_depthwise_conv(y, right), np.roll(y, -1, axis=1))


@pytest.mark.parametrize(
    "spatial, kernel_size, h",
    [
        ((6, 7), (3, 3), 0.3),
        ((8, 5), (5, 3), 2.0),
        ((5, 5), (5, 5), 0.6),
        ((7, 6), (1, 3), 1.0),
        ((4, 5, 6), (3, 3, 3), 0.3),
        ((5, 4, 3), (1, 3, 3), 2.0),
        ((5, 5, 4), (5, 3, 1), 0.5),
    ],
)
def test_matches_dense_solve_float64(spatial, kernel_size, h):
    rng = np.random.default_rng(1)
    b = rng.standard_normal((2, *spatial, 3))
    kernel = rng.standard_normal((*kernel_size, 3))
    y = ops.convert_to_numpy(implicit_conv_solve(b, kernel, h))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, dense_solve(b, kernel, h), rtol=1e-10, atol=1e-10)


def test_residual_of_the_system_is_zero():
    # (I + h C^T C) y = b, with C and C^T applied by the NumPy reference convolution.
    rng = np.random.default_rng(2)
    b = rng.standard_normal((1, 9, 8, 2))
    kernel = rng.standard_normal((3, 3, 2))
    h = 0.8
    y = ops.convert_to_numpy(implicit_conv_solve(b, kernel, h))
    for ch in range(2):
        c = kernel[..., ch]
        cy = periodic_depthwise_conv(y[0, ..., ch], c)
        ctcy = periodic_depthwise_conv(cy, c[::-1, ::-1])  # C^T = correlation with the flipped kernel
        np.testing.assert_allclose(y[0, ..., ch] + h * ctcy, b[0, ..., ch], atol=1e-10)


def test_float32_and_dtype_preserved():
    rng = np.random.default_rng(3)
    b = rng.standard_normal((2, 8, 6, 4))
    kernel = rng.standard_normal((3, 3, 4))
    y = implicit_conv_solve(b.astype("float32"), kernel.astype("float32"), 0.5)
    assert ops.convert_to_numpy(y).dtype == np.float32
    np.testing.assert_allclose(ops.convert_to_numpy(y), dense_solve(b, kernel, 0.5), atol=1e-5)


def test_float16_input_solved_in_float32():
    rng = np.random.default_rng(4)
    b = rng.standard_normal((1, 8, 8, 2))
    kernel = rng.standard_normal((3, 3, 2))
    y = implicit_conv_solve(b.astype("float16"), kernel.astype("float16"), 1.0)
    y = ops.convert_to_numpy(y)
    assert y.dtype == np.float16
    ref = dense_solve(b.astype("float16").astype("float64"), kernel.astype("float16").astype("float64"), 1.0)
    np.testing.assert_allclose(y.astype("float64"), ref, atol=1e-2)


def test_zero_kernel_is_identity_and_constant_image_damped():
    rng = np.random.default_rng(5)
    b = rng.standard_normal((2, 6, 6, 3))
    y = implicit_conv_solve(b, np.zeros((3, 3, 3)), 4.0)
    np.testing.assert_allclose(ops.convert_to_numpy(y), b, atol=1e-12)
    # A constant image is the zero-frequency mode: it is divided by 1 + h (sum c)^2.
    kernel = np.full((3, 3, 1), 0.5)
    y = implicit_conv_solve(np.ones((1, 5, 7, 1)), kernel, 2.0)
    np.testing.assert_allclose(ops.convert_to_numpy(y), 1.0 / (1.0 + 2.0 * 4.5**2), rtol=1e-12)


def test_solve_is_a_contraction():
    # C^T C is positive semi-definite, so ||y|| <= ||b||.
    rng = np.random.default_rng(6)
    b = rng.standard_normal((2, 10, 10, 3))
    y = ops.convert_to_numpy(implicit_conv_solve(b, rng.standard_normal((5, 5, 3)), 3.0))
    assert np.linalg.norm(y) <= np.linalg.norm(b)


@pytest.mark.parametrize("spatial, kernel_size", [((6, 5), (3, 3)), ((4, 5, 3), (3, 3, 3))])
def test_gradients_wrt_b_kernel_and_h(spatial, kernel_size):
    rng = np.random.default_rng(7)
    b = rng.standard_normal((2, *spatial, 2))
    kernel = 0.5 * rng.standard_normal((*kernel_size, 2))
    h = np.array(0.7)
    check_op_gradients(implicit_conv_solve, b, kernel, h, rtol=1e-4, max_entries=12)


def test_h_as_tensor():
    rng = np.random.default_rng(8)
    b = rng.standard_normal((1, 6, 6, 2))
    kernel = rng.standard_normal((3, 3, 2))
    y = implicit_conv_solve(ops.convert_to_tensor(b), ops.convert_to_tensor(kernel), ops.convert_to_tensor(1.5))
    np.testing.assert_allclose(ops.convert_to_numpy(y), dense_solve(b, kernel, 1.5), atol=1e-10)


class TestBadInput:
    b = np.zeros((1, 8, 8, 2))
    kernel = np.zeros((3, 3, 2))

    @pytest.mark.parametrize("h", [0.0, -1.0, float("nan"), float("inf")])
    def test_h_not_positive(self, h):
        with pytest.raises(ValueError, match=r"h.*Received: h="):
            implicit_conv_solve(self.b, self.kernel, h)

    def test_h_wrong_type(self):
        with pytest.raises(TypeError, match="h"):
            implicit_conv_solve(self.b, self.kernel, True)

    def test_even_kernel_size(self):
        with pytest.raises(ValueError, match=r"`kernel` must have odd sizes.*\(4, 3\)"):
            implicit_conv_solve(self.b, np.zeros((4, 3, 2)), 1.0)

    def test_kernel_channel_mismatch(self):
        with pytest.raises(ValueError, match=r"one depthwise filter per channel.*kernel.shape=\(3, 3, 5\)"):
            implicit_conv_solve(self.b, np.zeros((3, 3, 5)), 1.0)

    def test_kernel_wrong_rank(self):
        with pytest.raises(ValueError, match=r"`kernel` must have shape.*kernel.shape=\(3, 3, 3, 2\)"):
            implicit_conv_solve(self.b, np.zeros((3, 3, 3, 2)), 1.0)

    @pytest.mark.parametrize("shape", [(8, 8, 2), (1, 8, 2), (1, 4, 4, 4, 4, 2)])
    def test_b_wrong_rank(self, shape):
        with pytest.raises(ValueError, match=r"`b` must be a .*Received: b.shape="):
            implicit_conv_solve(np.zeros(shape), self.kernel, 1.0)

    def test_kernel_larger_than_image(self):
        with pytest.raises(ValueError, match=r"not be larger than the image.*\(4, 8\)"):
            implicit_conv_solve(np.zeros((1, 4, 8, 2)), np.zeros((5, 3, 2)), 1.0)


# --- backend-native FFT, transfer from taps, grouped solve ------------------------------------


@pytest.mark.parametrize("basis", [True, False], ids=["one-contraction", "axis-by-axis"])
@pytest.mark.parametrize("spatial, kernel_size", [((6, 7), (3, 3)), ((8, 5), (5, 3)), ((4, 5, 6), (3, 1, 3))])
def test_kernel_transfer_matches_numpy_fft_of_padded_kernel(spatial, kernel_size, basis, monkeypatch):
    from keras_medseg.ops import implicit
    from keras_medseg.ops.implicit import kernel_transfer

    if not basis:  # the path for large images: force it on these small ones
        monkeypatch.setattr(implicit, "_BASIS_MAX", 0)
    rng = np.random.default_rng(9)
    kernel = rng.standard_normal((*kernel_size, 2))
    real, imag = kernel_transfer(ops.convert_to_tensor(kernel), spatial)
    for ch in range(2):
        padded = np.zeros(spatial)
        padded[tuple(slice(0, k) for k in kernel_size)] = kernel[..., ch]
        padded = np.roll(padded, [-(k // 2) for k in kernel_size], axis=tuple(range(len(spatial))))
        # cross-correlation symbol = conj of the FFT of the (centred) kernel
        ref = np.conj(np.fft.rfftn(padded))
        np.testing.assert_allclose(ops.convert_to_numpy(real)[ch], ref.real, atol=1e-10)
        np.testing.assert_allclose(ops.convert_to_numpy(imag)[ch], ref.imag, atol=1e-10)


@pytest.mark.parametrize("spatial, kernel_size, group_size", [((6, 5), (3, 3), 1), ((6, 5), (3, 3), 2),
                                                               ((4, 5, 3), (3, 3, 1), 2)])
def test_native_fft_equals_keras_ops_fallback(spatial, kernel_size, group_size):
    from keras_medseg.ops.implicit import implicit_conv_solve as solve

    rng = np.random.default_rng(10)
    b = rng.standard_normal((2, *spatial, 4))
    shape = (*kernel_size, group_size, 4) if group_size > 1 else (*kernel_size, 4)
    kernel = rng.standard_normal(shape)
    native = ops.convert_to_numpy(solve(b, kernel, 0.7, group_size=group_size, native_fft=True))
    fallback = ops.convert_to_numpy(solve(b, kernel, 0.7, group_size=group_size, native_fft=False))
    np.testing.assert_allclose(native, fallback, rtol=1e-10, atol=1e-10)


def grouped_dense_solve(b, kernel, h, g):
    """Dense `(I + h C^T C) y = b` for the grouped periodic convolution (all channels at once)."""
    spatial = b.shape[1:-1]
    channels = b.shape[-1]
    p = int(np.prod(spatial))
    c_full = np.zeros((channels * p, channels * p))
    for c in range(channels):
        for i in range(g):
            j = (c // g) * g + i
            c_full[c * p:(c + 1) * p, j * p:(j + 1) * p] = conv_matrix(kernel[..., i, c], spatial)
    a = np.eye(channels * p) + h * c_full.T @ c_full
    rhs = np.moveaxis(b, -1, 1).reshape(b.shape[0], -1).T
    y = np.linalg.solve(a, rhs).T.reshape(b.shape[0], channels, *spatial)
    return np.moveaxis(y, 1, -1)


@pytest.mark.parametrize("spatial, kernel_size, g, channels, h", [
    ((5, 6), (3, 3), 2, 4, 0.8),
    ((4, 4), (3, 1), 3, 3, 2.0),
    ((3, 4, 4), (3, 3, 3), 2, 2, 0.5),
])
def test_grouped_matches_dense_solve(spatial, kernel_size, g, channels, h):
    rng = np.random.default_rng(11)
    b = rng.standard_normal((2, *spatial, channels))
    kernel = rng.standard_normal((*kernel_size, g, channels))
    y = ops.convert_to_numpy(implicit_conv_solve(b, kernel, h, group_size=g))
    np.testing.assert_allclose(y, grouped_dense_solve(b, kernel, h, g), rtol=1e-9, atol=1e-9)


def test_grouped_with_diagonal_kernel_equals_depthwise():
    rng = np.random.default_rng(12)
    b = rng.standard_normal((1, 6, 6, 4))
    depthwise = rng.standard_normal((3, 3, 4))
    grouped = np.zeros((3, 3, 2, 4))
    for c in range(4):
        grouped[..., c % 2, c] = depthwise[..., c]
    np.testing.assert_allclose(ops.convert_to_numpy(implicit_conv_solve(b, grouped, 1.3, group_size=2)),
                               ops.convert_to_numpy(implicit_conv_solve(b, depthwise, 1.3)), atol=1e-10)


def test_grouped_gradients():
    rng = np.random.default_rng(13)
    b = rng.standard_normal((1, 5, 4, 4))
    kernel = 0.5 * rng.standard_normal((3, 3, 2, 4))

    def solve(b, kernel, h):
        return implicit_conv_solve(b, kernel, h, group_size=2)

    check_op_gradients(solve, b, kernel, np.array(0.6), rtol=1e-4, max_entries=12)


class TestBadGroupedInput:
    def test_group_size_not_dividing_channels(self):
        with pytest.raises(ValueError, match=r"multiple of `group_size`.*group_size=2"):
            implicit_conv_solve(np.zeros((1, 6, 6, 3)), np.zeros((3, 3, 2, 3)), 1.0, group_size=2)

    def test_group_axis_mismatch(self):
        with pytest.raises(ValueError, match=r"3 input channels per group.*kernel.shape=\(3, 3, 2, 6\)"):
            implicit_conv_solve(np.zeros((1, 6, 6, 6)), np.zeros((3, 3, 2, 6)), 1.0, group_size=3)

    def test_group_size_not_int(self):
        with pytest.raises(TypeError, match="group_size"):
            implicit_conv_solve(np.zeros((1, 6, 6, 2)), np.zeros((3, 3, 2)), 1.0, group_size=1.5)


@pytest.mark.parametrize("spatial, kernel_size", [((6, 8), (3, 5)), ((3, 4, 7), (3, 1, 3))])
def test_native_gradients_equal_keras_ops_fallback_gradients(spatial, kernel_size):
    """The native path (hand-written gradient on TensorFlow) gives the autodiff gradients of the fallback.

    2D with an even last axis (the real FFT has a Nyquist bin) and a non-square kernel; 3D with an odd last axis
    and a one-tap kernel axis (each case is a compilation on JAX: 4 shapes took 17 CPU s there)."""
    from tests.testing import value_and_grad

    rng = np.random.default_rng(11)
    b = rng.standard_normal((3, *spatial, 2))
    kernel = 0.5 * rng.standard_normal((*kernel_size, 2))
    weights = rng.standard_normal((3, *spatial, 2))

    def loss(native):
        return lambda b, kernel, h: ops.sum(implicit_conv_solve(b, kernel, h, native_fft=native)
                                            * ops.convert_to_tensor(weights))

    h = np.array(0.7)
    value_n, grads_n = value_and_grad(loss(True), b, kernel, h)
    value_f, grads_f = value_and_grad(loss(False), b, kernel, h)
    np.testing.assert_allclose(ops.convert_to_numpy(value_n), ops.convert_to_numpy(value_f), rtol=1e-10)
    for g_n, g_f in zip(grads_n, grads_f):
        np.testing.assert_allclose(ops.convert_to_numpy(g_n), ops.convert_to_numpy(g_f), rtol=1e-9, atol=1e-10)
