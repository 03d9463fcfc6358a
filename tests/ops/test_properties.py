"""Property-based tests (hypothesis) of the ops over shapes, dimensions and dtypes.

Invariants that hold for any input: ranges, conservation, contraction,
constants mapped to zero. The NumPy reference tests of each op live in the
op's own test file.
"""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keras import ops

from keras_medseg.ops import (
    attention_pool,
    curvature,
    edge_indicator,
    implicit_conv_solve,
    upwind_advection,
    upwind_grad_norm,
)

pytestmark = pytest.mark.backend_agnostic

# JAX compiles every new shape, so it gets fewer examples than TensorFlow.
SETTINGS = settings(max_examples=15 if keras.backend.backend() == "tensorflow" else 6, deadline=None)


@st.composite
def grids(draw, channels=None):
    d = draw(st.sampled_from([2, 3]))
    sizes = draw(st.lists(st.integers(3, 7 if d == 3 else 11), min_size=d, max_size=d))
    n = draw(st.integers(1, 2))
    c = channels if channels is not None else draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    seed = draw(st.integers(0, 2**16))
    x = np.random.default_rng(seed).standard_normal((n, *sizes, c)).astype(dtype)
    return x


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


@SETTINGS
@given(grids())
def test_edge_indicator_is_in_zero_one(image):
    g = _np(edge_indicator(image))
    assert g.shape == image.shape[:-1] + (1,)
    assert g.dtype == image.dtype
    assert np.all(g > 0) and np.all(g <= 1)
    const = _np(edge_indicator(np.ones_like(image)))
    np.testing.assert_allclose(const, 1.0)


@SETTINGS
@given(grids(channels=1), st.floats(-3, 3))
def test_upwind_grad_norm_is_nonnegative_and_zero_on_constants(u, speed_value):
    speed = np.full_like(u, speed_value)
    norm = _np(upwind_grad_norm(u, speed))
    assert norm.shape == u.shape and np.all(norm >= 0)
    flat = _np(upwind_grad_norm(np.full_like(u, 2.5), speed))
    np.testing.assert_allclose(flat, 0.0, atol=1e-3)


@SETTINGS
@given(grids(channels=1))
def test_upwind_advection_vanishes_without_velocity(u):
    d = u.ndim - 2
    zero_velocity = np.zeros(u.shape[:-1] + (d,), u.dtype)
    np.testing.assert_allclose(_np(upwind_advection(u, zero_velocity)), 0.0)


@SETTINGS
@given(grids(channels=1))
def test_curvature_of_a_constant_is_zero(u):
    kappa = _np(curvature(np.full_like(u, -1.0)))
    assert kappa.shape == u.shape
    np.testing.assert_allclose(kappa, 0.0, atol=1e-6)
    assert np.all(np.isfinite(_np(curvature(u))))


@SETTINGS
@given(grids(), st.floats(1e-3, 10.0), st.integers(0, 2**16))
def test_implicit_solve_contracts_and_keeps_the_mean(b, h, seed):
    d = b.ndim - 2
    k = 3
    kernel = np.random.default_rng(seed).standard_normal((k,) * d + (b.shape[-1],)).astype(b.dtype)
    y = _np(implicit_conv_solve(b, kernel, h))
    assert y.shape == b.shape and y.dtype == b.dtype
    # (I + h C^T C)^-1 has eigenvalues in (0, 1]: the solve never amplifies.
    axes = tuple(range(1, d + 1))
    assert np.all(np.linalg.norm(y.reshape(-1, b.shape[-1]), axis=0)
                  <= np.linalg.norm(b.reshape(-1, b.shape[-1]), axis=0) * (1 + 1e-4) + 1e-5)
    # A zero-sum kernel leaves the constant mode (the mean) untouched.
    kernel0 = kernel - kernel.mean(axis=tuple(range(d)), keepdims=True)
    y0 = _np(implicit_conv_solve(b, kernel0, h))
    np.testing.assert_allclose(y0.mean(axis=axes), b.mean(axis=axes), rtol=1e-3, atol=1e-4)


@SETTINGS
@given(grids(), st.integers(1, 3), st.integers(0, 2**16))
def test_attention_pool_is_a_convex_combination(features, heads, seed):
    logits = np.random.default_rng(seed).standard_normal(features.shape[:-1] + (heads,)).astype(features.dtype)
    pooled, alpha = (_np(t) for t in attention_pool(features, logits))
    d = features.ndim - 2
    np.testing.assert_allclose(alpha.sum(axis=tuple(range(1, d + 1))), 1.0, rtol=1e-5)
    assert np.all(alpha >= 0)
    lo = features.min(axis=tuple(range(1, d + 1)))[:, None, :]
    hi = features.max(axis=tuple(range(1, d + 1)))[:, None, :]
    assert pooled.shape == (features.shape[0], heads, features.shape[-1])
    assert np.all(pooled >= lo - 1e-5) and np.all(pooled <= hi + 1e-5)
