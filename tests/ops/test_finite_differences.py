"""Replicate padding, stencils and the replicate-padded convolution."""

import keras
import numpy as np
import pytest
import scipy.ndimage as ndi
from keras import ops

from keras_medseg.ops.finite_differences import (
    conv_edge,
    gaussian_kernel,
    normalize_kernel_size,
    pad_edge,
    safe_sqrt,
    stencil_kernel,
)
from keras_medseg.utils.gradients import grad
from tests.testing import check_op_gradients

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("shape,pad", [((2, 4, 3, 2), [(1, 2), (0, 3)]), ((1, 3, 4, 2, 1), [(2, 1), (1, 1), (0, 2)])])
def test_pad_edge_matches_numpy(shape, pad):
    x = np.random.default_rng(0).standard_normal(shape)
    out = np.asarray(ops.convert_to_numpy(pad_edge(ops.convert_to_tensor(x), pad)))
    np.testing.assert_array_equal(out, np.pad(x, [(0, 0)] + pad + [(0, 0)], mode="edge"))


@pytest.mark.parametrize("shape,kshape,dtype", [((2, 6, 5, 2), (3, 5, 2, 3), "float32"),
                                                ((2, 6, 5, 2), (3, 5, 2, 3), "float64"),
                                                ((1, 5, 4, 6, 1), (3, 3, 3, 1, 2), "float64")])
def test_conv_edge_matches_scipy_correlate(shape, kshape, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    k = rng.standard_normal(kshape).astype(dtype)
    out = np.asarray(ops.convert_to_numpy(conv_edge(ops.convert_to_tensor(x), k)))
    ref = np.zeros(shape[:-1] + (kshape[-1],))
    for b in range(shape[0]):
        for j in range(kshape[-1]):
            for c in range(shape[-1]):
                ref[b, ..., j] += ndi.correlate(x[b, ..., c].astype("float64"), k[..., c, j].astype("float64"),
                                                mode="nearest")
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


def test_stencil_kernels_layout():
    k = stencil_kernel("forward", (3, 3, 2, 2))
    np.testing.assert_array_equal(k[:, 1, 0, 0], [0, -1, 1])  # axis 0 (rows)
    np.testing.assert_array_equal(k[1, :, 1, 1], [0, -1, 1])  # axis 1 (cols), every input channel
    assert k[:, :, :, 0].sum() == 0 and np.count_nonzero(k) == 8
    b = stencil_kernel("backward", (5, 5, 5, 1, 3))
    np.testing.assert_array_equal(b[2, 2, 1:4, 0, 2], [-1, 1, 0])
    c = stencil_kernel("central", (3, 3, 2, 1), axis_channel="in")
    np.testing.assert_array_equal(c[:, 1, 0, 0], [-0.5, 0, 0.5])
    np.testing.assert_array_equal(c[1, :, 1, 0], [-0.5, 0, 0.5])


def test_gaussian_kernel_is_normalised_per_channel():
    g = gaussian_kernel(1.0, 3, 2)
    assert g.shape == (7, 7, 7, 2, 2)
    np.testing.assert_allclose(g[..., 0, 0].sum(), 1.0)
    assert g[..., 0, 1].sum() == 0


def test_safe_sqrt_value_and_gradient():
    x = ops.convert_to_tensor(np.array([0.0, 4.0, 2.25]))
    np.testing.assert_allclose(ops.convert_to_numpy(safe_sqrt(x)), [0, 2, 1.5])
    (g,) = grad(lambda a: ops.sum(safe_sqrt(a)), x)
    np.testing.assert_allclose(ops.convert_to_numpy(g), [0, 0.25, 1 / 3])


def test_conv_edge_gradients():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 5, 2))
    k = rng.standard_normal((3, 3, 2, 2))
    assert max(check_op_gradients(conv_edge, x, k).values()) < 1e-6


@pytest.mark.parametrize("shape,kshape", [((2, 6, 5, 3), (3, 5, 3, 2)), ((1, 4, 5, 3, 2), (3, 3, 1, 2, 3))])
def test_torch_contiguous_conv_equals_keras_conv(shape, kshape):
    """The torch float64 branch of `conv_edge` is the same cross-correlation as `keras.ops.conv`."""
    if keras.backend.backend() != "torch":
        pytest.skip("the contiguous-kernel convolution is conv_edge's torch branch")
    from keras_medseg.ops.finite_differences import _torch_conv_contiguous

    rng = np.random.default_rng(3)
    x = ops.convert_to_tensor(rng.standard_normal(shape).astype("float32"))
    k = ops.convert_to_tensor(rng.standard_normal(kshape).astype("float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(_torch_conv_contiguous(x, k)),
                               ops.convert_to_numpy(ops.conv(x, k, padding="valid")), rtol=1e-5, atol=1e-5)


def test_bad_kernel_sizes():
    with pytest.raises(ValueError, match="kernel_size"):
        normalize_kernel_size(4, 2)
    with pytest.raises(ValueError, match="kernel_size"):
        normalize_kernel_size(1, 2)
    with pytest.raises(ValueError, match="kernel_size"):
        normalize_kernel_size((3, 3), 3)
    with pytest.raises(ValueError, match="kind"):
        stencil_kernel("upwind", (3, 3, 1, 2))
