"""Level-set ops against independent NumPy references (np.pad mode="edge" + slices)."""

import numpy as np
import pytest
import scipy.ndimage as ndi
from keras import ops

from keras_medseg.ops import curvature, edge_indicator, stencil_kernel, upwind_advection, upwind_grad_norm
from tests.testing import check_op_gradients

pytestmark = pytest.mark.backend_agnostic

SHAPES = [(2, 7, 5), (2, 5, 4, 6)]  # (N, *S), odd sizes, 2D and 3D
DTYPES = [("float32", 1e-5), ("float64", 1e-12)]


# ---------------------------------------------------------------- references
def _shift(p, axis, offset):
    """Interior of an edge-padded array shifted by `offset` along spatial `axis`."""
    d = p.ndim - 1
    idx = [slice(None)] + [slice(1, -1)] * d
    idx[axis + 1] = slice(1 + offset, p.shape[axis + 1] - 1 + offset)
    return p[tuple(idx)]


def np_differences(u):
    """Forward, backward and central differences of `u` (N, *S) with replicate padding."""
    d = u.ndim - 1
    p = np.pad(u, [(0, 0)] + [(1, 1)] * d, mode="edge")
    fwd = [_shift(p, k, 1) - _shift(p, k, 0) for k in range(d)]
    bwd = [_shift(p, k, 0) - _shift(p, k, -1) for k in range(d)]
    cen = [(_shift(p, k, 1) - _shift(p, k, -1)) / 2 for k in range(d)]
    return fwd, bwd, cen


def np_edge_indicator(image):
    total = image.sum(axis=-1)  # channels are summed inside each convolution
    _, _, cen = np_differences(total)
    return 1.0 / (1.0 + sum(c**2 for c in cen))


def np_upwind_advection(u, velocity):
    fwd, bwd, _ = np_differences(u)
    v = np.moveaxis(velocity, -1, 0)
    return sum(np.maximum(v[k], 0) * fwd[k] - np.maximum(-v[k], 0) * bwd[k] for k in range(len(fwd)))


def np_upwind_grad_norm(u, speed):
    fwd, bwd, _ = np_differences(u)
    pos = sum(np.maximum(b, 0) ** 2 + np.minimum(f, 0) ** 2 for f, b in zip(fwd, bwd))
    neg = sum(np.maximum(f, 0) ** 2 + np.minimum(b, 0) ** 2 for f, b in zip(fwd, bwd))
    return np.sqrt(np.where(speed >= 0, pos, neg))


def np_curvature(u, eps):
    _, _, grad = np_differences(u)
    norm = np.sqrt(sum(g**2 for g in grad))
    return sum(np_differences(g / (norm + eps))[2][k] for k, g in enumerate(grad))


def _data(shape, dtype, seed=0, channels=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape + (channels,)).astype(dtype)


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


# ---------------------------------------------------------------- numerics
@pytest.mark.parametrize("shape", SHAPES)
def test_edge_indicator_matches_numpy(shape):
    for (dtype, tol), channels in [(DTYPES[0], 1), (DTYPES[1], 1), (DTYPES[1], 3)]:
        image = _data(shape, dtype, channels=channels)
        out = edge_indicator(image)
        assert tuple(out.shape) == shape + (1,)
        assert str(_np(out).dtype) == dtype
        np.testing.assert_allclose(_np(out)[..., 0], np_edge_indicator(image.astype("float64")), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", SHAPES)
def test_upwind_advection_matches_numpy(shape):
    for dtype, tol in DTYPES:
        u = _data(shape, dtype)
        velocity = _data(shape, dtype, seed=1, channels=len(shape) - 1)
        out = upwind_advection(u, velocity)
        assert tuple(out.shape) == shape + (1,) and str(_np(out).dtype) == dtype
        ref = np_upwind_advection(u[..., 0].astype("float64"), velocity.astype("float64"))
        np.testing.assert_allclose(_np(out)[..., 0], ref, rtol=tol, atol=tol)


def test_upwind_advection_with_gradient_velocity_approximates_dot_product():
    # V = grad g for smooth g, u smooth: sum_k V_k d_k u up to O(h).
    y, x = np.meshgrid(np.linspace(0, 1, 81), np.linspace(0, 1, 81), indexing="ij")
    h = 1 / 80
    u = np.sin(2 * x + y) / h  # so that unit-spacing differences approximate derivatives
    vy, vx = np.cos(3 * x), -np.sin(2 * y)
    out = _np(upwind_advection(u[None, ..., None], np.stack([vy, vx], -1)[None]))[0, ..., 0]
    exact = vy * np.cos(2 * x + y) + vx * 2 * np.cos(2 * x + y)
    assert np.abs(out - exact)[2:-2, 2:-2].max() < 0.05


@pytest.mark.parametrize("shape", SHAPES)
def test_upwind_grad_norm_matches_numpy(shape):
    for dtype, tol in DTYPES:
        u = _data(shape, dtype)
        speed = _data(shape, dtype, seed=2)
        out = upwind_grad_norm(u, speed)
        assert str(_np(out).dtype) == dtype
        ref = np_upwind_grad_norm(u[..., 0].astype("float64"), speed[..., 0])
        np.testing.assert_allclose(_np(out)[..., 0], ref, rtol=tol, atol=tol)
        # the two sides really differ, so the sign of the speed matters
        assert np.abs(ref - np_upwind_grad_norm(u[..., 0].astype("float64"), -speed[..., 0])).max() > 0.1


def test_upwind_grad_norm_of_linear_function_is_exact_inside():
    z, y, x = np.meshgrid(*[np.arange(7.0)] * 3, indexing="ij")
    u = (2 * x - y + 2 * z)[None, ..., None]
    for s in (1.0, -1.0):
        out = _np(upwind_grad_norm(u, np.full_like(u, s)))[0, 1:-1, 1:-1, 1:-1, 0]
        np.testing.assert_allclose(out, 3.0, rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_curvature_matches_numpy(shape):
    for dtype, tol in [("float32", 1e-4), ("float64", 1e-11)]:
        u = _data(shape, dtype)
        out = curvature(u, eps=1e-3)
        assert str(_np(out).dtype) == dtype
        ref = np_curvature(u[..., 0].astype("float64"), 1e-3)
        np.testing.assert_allclose(_np(out)[..., 0], ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("spatial_dims,radius", [(2, 12.0), (3, 9.0)])
def test_curvature_of_signed_distance(spatial_dims, radius):
    n = 41 if spatial_dims == 2 else 29
    centre = (n - 1) / 2 + 0.3
    grids = np.meshgrid(*[np.arange(n, dtype="float64")] * spatial_dims, indexing="ij")
    dist = np.sqrt(sum((g - centre) ** 2 for g in grids))
    u = dist - radius  # negative inside
    kappa = _np(curvature(u[None, ..., None]))[0, ..., 0]
    band = np.abs(u) < 0.5
    expected = (spatial_dims - 1) / radius
    # near the interface kappa = 1/r (2/r); pointwise it is (d-1)/|x - c| and
    # the second-order stencils are within a few percent of that at this resolution
    assert abs(kappa[band].mean() - expected) < 0.02 * expected
    np.testing.assert_allclose(kappa[band], (spatial_dims - 1) / dist[band], rtol=0.03)


def test_custom_kernels_equal_default_stencils():
    u = _data((2, 6, 5), "float64")
    v = _data((2, 6, 5), "float64", seed=3, channels=2)
    fwd = stencil_kernel("forward", (3, 3, 1, 2))
    bwd = stencil_kernel("backward", (3, 3, 1, 2))
    np.testing.assert_allclose(_np(upwind_advection(u, v, fwd, bwd)), _np(upwind_advection(u, v)), atol=1e-14)
    # a 5x5 kernel holding the same stencil gives the same result
    fwd5 = stencil_kernel("forward", (5, 5, 1, 2))
    bwd5 = stencil_kernel("backward", (5, 5, 1, 2))
    np.testing.assert_allclose(_np(upwind_grad_norm(u, v[..., :1], fwd5, bwd5)),
                               _np(upwind_grad_norm(u, v[..., :1])), atol=1e-14)


def test_edge_indicator_with_random_kernels_matches_scipy_correlate():
    rng = np.random.default_rng(4)
    image = rng.standard_normal((2, 7, 6, 2))
    kernels = rng.standard_normal((5, 3, 2, 4))
    responses = np.zeros((2, 7, 6, 4))
    for b in range(2):
        for j in range(4):
            for c in range(2):
                responses[b, ..., j] += ndi.correlate(image[b, ..., c], kernels[..., c, j], mode="nearest")
    ref = 1 / (1 + (responses**2).sum(-1))
    np.testing.assert_allclose(_np(edge_indicator(image, kernels))[..., 0], ref, rtol=1e-12)


def test_curvature_custom_kernels_shape_checked_and_used():
    u = _data((1, 5, 5), "float64")
    grad_k = 2.0 * stencil_kernel("central", (3, 3, 1, 2))
    div_k = stencil_kernel("central", (3, 3, 2, 1), axis_channel="in")
    # scaling the gradient kernels does not change the normal (up to eps)
    np.testing.assert_allclose(_np(curvature(u, 1e-12, grad_k, div_k)), _np(curvature(u, 1e-12)), atol=1e-9)
    with pytest.raises(ValueError, match="divergence_kernels"):
        curvature(u, 1e-8, grad_k, grad_k)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("shape", [(2, 5, 4), (1, 4, 3, 5)])
def test_op_gradients(shape):
    d = len(shape) - 1
    u = _data(shape, "float64")
    image = _data(shape, "float64", seed=5, channels=2)
    velocity = _data(shape, "float64", seed=6, channels=d)
    speed = _data(shape, "float64", seed=7)
    assert max(check_op_gradients(edge_indicator, image, max_entries=8).values()) < 1e-4
    assert max(check_op_gradients(upwind_advection, u, velocity, max_entries=8).values()) < 1e-4
    assert max(check_op_gradients(upwind_grad_norm, u, speed, wrt=(0,), max_entries=8).values()) < 1e-4
    assert max(check_op_gradients(lambda a: curvature(a, eps=1e-2), u, max_entries=8).values()) < 1e-4


def test_op_gradients_wrt_kernels():
    u = _data((1, 5, 4), "float64")
    v = _data((1, 5, 4), "float64", seed=1, channels=2)
    rng = np.random.default_rng(8)
    fwd = stencil_kernel("forward", (3, 3, 1, 2)) + 0.1 * rng.standard_normal((3, 3, 1, 2))
    bwd = stencil_kernel("backward", (3, 3, 1, 2)) + 0.1 * rng.standard_normal((3, 3, 1, 2))
    errors = check_op_gradients(lambda f, b: upwind_advection(u, v, f, b), fwd, bwd, max_entries=8)
    assert max(errors.values()) < 1e-4
    errors = check_op_gradients(lambda f, b: upwind_grad_norm(u, v[..., :1], f, b), fwd, bwd, max_entries=8)
    assert max(errors.values()) < 1e-4
    grad_k = stencil_kernel("central", (3, 3, 1, 2)) + 0.1 * rng.standard_normal((3, 3, 1, 2))
    div_k = stencil_kernel("central", (3, 3, 2, 1), "in") + 0.1 * rng.standard_normal((3, 3, 2, 1))
    errors = check_op_gradients(lambda g, s: curvature(u, 1e-2, g, s), grad_k, div_k, max_entries=8)
    assert max(errors.values()) < 1e-4


def test_grad_norm_gradient_is_finite_on_flat_region():
    from keras_medseg.utils.gradients import grad

    u = ops.zeros((1, 5, 5, 1), dtype="float64")
    (g,) = grad(lambda a: ops.sum(upwind_grad_norm(a, ops.ones_like(a)) + curvature(a)), u)
    assert np.all(np.isfinite(_np(g)))


# ---------------------------------------------------------------- bad input
def test_wrong_rank():
    with pytest.raises(ValueError, match="image"):
        edge_indicator(np.zeros((4, 4, 1)))
    with pytest.raises(ValueError, match="u"):
        upwind_advection(np.zeros((1, 4, 1)), np.zeros((1, 4, 1)))
    with pytest.raises(ValueError, match="u"):
        curvature(np.zeros((1, 3, 3, 3, 3, 1)))  # 4 spatial dims


def test_channel_mismatch():
    u = np.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="velocity"):
        upwind_advection(u, np.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="velocity"):
        upwind_advection(u, np.zeros((1, 4, 5, 2)))
    with pytest.raises(ValueError, match="u"):
        upwind_grad_norm(np.zeros((1, 4, 4, 2)), u)
    with pytest.raises(ValueError, match="speed"):
        upwind_grad_norm(u, np.zeros((1, 4, 4, 2)))
    with pytest.raises(ValueError, match="kernels"):
        edge_indicator(np.zeros((1, 4, 4, 2)), np.zeros((3, 3, 1, 2)))


def test_bad_eps():
    with pytest.raises(ValueError, match="eps"):
        curvature(np.zeros((1, 4, 4, 1)), eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        curvature(np.zeros((1, 4, 4, 1)), eps=-1e-3)


def test_even_kernel_size():
    u = np.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="forward_kernels"):
        upwind_advection(u, np.zeros((1, 4, 4, 2)), forward_kernels=np.zeros((2, 2, 1, 2)))
    with pytest.raises(ValueError, match="kernels"):
        edge_indicator(u, np.zeros((4, 3, 1, 2)))


def test_reinitialize_recovers_the_distance_near_the_front():
    """A level set with the zero set of a circle but |grad u| far from 1 becomes the signed distance near it
    (reference: SciPy's exact Euclidean distance transform of the inside / outside masks)."""
    from scipy import ndimage

    from keras_medseg.ops import reinitialize

    n = 48
    yy, xx = np.mgrid[:n, :n].astype("float64")
    r = np.hypot(yy - 23.5, xx - 24.2)
    u = (r - 12.0) * (0.3 + 2.0 * xx / n)  # same zero set, slope between 0.3 and 2.3
    inside = u < 0
    sdf = ndimage.distance_transform_edt(~inside) - ndimage.distance_transform_edt(inside)
    sdf = np.where(inside, sdf + 0.5, sdf - 0.5)  # pixel centres: distance to the boundary between pixels
    phi = np.asarray(ops.convert_to_numpy(reinitialize(u[None, ..., None], iterations=30)))[0, ..., 0]
    assert np.count_nonzero((phi < 0) != inside) <= 4  # the front stays (2 of 454 inside pixels flip, measured)
    band = np.abs(r - 12.0) < 4
    before = np.abs(u - (r - 12.0))[band].mean()
    after = np.abs(phi - (r - 12.0))[band].mean()
    assert after < 0.15 and before > 0.5  # measured: 0.08 after, 0.81 before
    assert np.abs(phi - (r - 12.0))[np.abs(r - 12.0) < 1].max() < 0.25
    assert np.abs(phi - sdf)[band].mean() < 0.6
    with pytest.raises(ValueError, match="iterations"):
        reinitialize(u[None, ..., None], iterations=0)
    with pytest.raises(ValueError, match="dt"):
        reinitialize(u[None, ..., None], dt=-1.0)


def test_auto_edge_scale_is_intensity_invariant_and_matches_numpy():
    from keras_medseg.ops.level_set import AUTO_EDGE_PERCENTILE, AUTO_EDGE_TARGET

    rng = np.random.default_rng(0)
    image = rng.random((2, 20, 17, 1))
    g = np.asarray(ops.convert_to_numpy(edge_indicator(image, scale="auto")))
    g_scaled = np.asarray(ops.convert_to_numpy(edge_indicator(250.0 * image + 40.0, scale="auto")))
    np.testing.assert_allclose(g_scaled, g, rtol=1e-5)
    for i in range(2):
        _, _, cen = np_differences(image[i : i + 1, ..., 0])
        magnitude = np.sqrt(sum(c**2 for c in cen))
        s = AUTO_EDGE_TARGET / np.percentile(magnitude, AUTO_EDGE_PERCENTILE)
        np.testing.assert_allclose(g[i, ..., 0], 1.0 / (1.0 + (s * magnitude[0]) ** 2), rtol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        edge_indicator(image, scale="fast")
    with pytest.raises(ValueError, match="scale"):
        edge_indicator(image, scale=0.0)
