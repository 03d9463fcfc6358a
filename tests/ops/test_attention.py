"""NumPy references and gradient checks for `keras_medseg.ops.attention`."""

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy.interpolate import interpn

from keras_medseg.ops import attention_pool, resize_matrix, resize_spatial
from tests.testing import check_op_gradients

pytestmark = pytest.mark.backend_agnostic


def np_attention_pool(features, logits):
    """Reference: flatten space, softmax per head, weighted sum."""
    n, c, h = features.shape[0], features.shape[-1], logits.shape[-1]
    z = features.reshape(n, -1, c).astype("float64")
    f = logits.reshape(n, -1, h).astype("float64")
    e = np.exp(f - f.max(axis=1, keepdims=True))
    alpha = e / e.sum(axis=1, keepdims=True)
    pooled = np.einsum("nph,npc->nhc", alpha, z)
    return pooled, alpha.reshape(logits.shape)


def np_area_resize(x, size):
    """Reference box resize: nearest-upsample every axis to lcm(in, out), then block-average."""
    for k, out in enumerate(size):
        axis = k + 1
        n_in = x.shape[axis]
        fine = math.lcm(n_in, out)
        x = np.repeat(x, fine // n_in, axis=axis)
        shape = x.shape[:axis] + (out, fine // out) + x.shape[axis + 1:]
        x = x.reshape(shape).mean(axis=axis + 1)
    return x


def np_linear_resize(x, size):
    """Reference linear resize (half-pixel centres, clamped) via scipy interpn."""
    in_size = x.shape[1:-1]
    grids = [np.arange(s, dtype="float64") for s in in_size]
    coords = [np.clip((np.arange(o) + 0.5) * (i / o) - 0.5, 0, i - 1) for i, o in zip(in_size, size)]
    pts = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1).reshape(-1, len(size))
    out = np.empty((x.shape[0],) + tuple(size) + (x.shape[-1],))
    for n in range(x.shape[0]):
        for c in range(x.shape[-1]):
            out[n, ..., c] = interpn(grids, x[n, ..., c], pts, method="linear").reshape(size)
    return out


@pytest.mark.parametrize("shape,heads", [((2, 5, 7, 3), 2), ((2, 3, 4, 5, 3), 3), ((1, 6, 6, 1), 1)])
def test_attention_pool_matches_numpy(shape, heads, rng):
    z = rng.standard_normal(shape).astype("float32")
    f = 3 * rng.standard_normal(shape[:-1] + (heads,)).astype("float32")
    pooled, alpha = attention_pool(z, f)
    ref_pooled, ref_alpha = np_attention_pool(z, f)
    assert tuple(pooled.shape) == (shape[0], heads, shape[-1])
    assert tuple(alpha.shape) == shape[:-1] + (heads,)
    np.testing.assert_allclose(ops.convert_to_numpy(pooled), ref_pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(alpha), ref_alpha, rtol=1e-5, atol=1e-7)
    sums = ops.convert_to_numpy(alpha).sum(axis=tuple(range(1, len(shape) - 1)))
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)


def test_attention_pool_seed_example():
    # alpha = [[.1, .2], [.3, .4]] from logits log(alpha); features = a one-hot of the positions
    alpha = np.array([[0.1, 0.2], [0.3, 0.4]])
    logits = np.log(alpha).reshape(1, 2, 2, 1)
    features = np.eye(4).reshape(1, 2, 2, 4)
    pooled, att = attention_pool(features, logits)
    np.testing.assert_allclose(ops.convert_to_numpy(pooled)[0, 0], alpha.reshape(-1), rtol=1e-12)
    np.testing.assert_allclose(ops.convert_to_numpy(att)[0, ..., 0], alpha, rtol=1e-12)


def test_attention_pool_constant_logits_is_average_pool(rng):
    z = rng.standard_normal((2, 4, 4, 4, 3))
    pooled, _ = attention_pool(z, np.zeros((2, 4, 4, 4, 2)))
    ref = z.mean(axis=(1, 2, 3))
    np.testing.assert_allclose(ops.convert_to_numpy(pooled), np.stack([ref, ref], axis=1), rtol=1e-12)


def test_attention_pool_large_logits_stay_finite(rng):
    z = rng.standard_normal((1, 8, 8, 2)).astype("float32")
    f = np.zeros((1, 8, 8, 1), "float32")
    f[0, 3, 5, 0] = 1e4
    pooled, alpha = attention_pool(z, f)
    np.testing.assert_allclose(ops.convert_to_numpy(pooled)[0, 0], z[0, 3, 5], rtol=1e-6)
    assert np.all(np.isfinite(ops.convert_to_numpy(alpha)))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_attention_pool_dtypes(dtype, rng):
    z = rng.standard_normal((2, 16, 16, 4))
    f = 4 * rng.standard_normal((2, 16, 16, 2))
    pooled, alpha = attention_pool(z.astype(dtype), f.astype(dtype))
    assert keras.backend.standardize_dtype(pooled.dtype) == dtype
    assert keras.backend.standardize_dtype(alpha.dtype) == dtype
    ref_pooled, _ = np_attention_pool(z.astype(dtype), f.astype(dtype))
    tol = 2e-3 if dtype == "float16" else 1e-5
    np.testing.assert_allclose(ops.convert_to_numpy(pooled).astype("float64"), ref_pooled, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(2, 4, 5, 3), (1, 3, 3, 4, 2)])
def test_attention_pool_gradients(shape, rng):
    z = rng.standard_normal(shape)
    f = rng.standard_normal(shape[:-1] + (2,))
    check_op_gradients(lambda a, b: attention_pool(a, b), z, f, max_entries=16)


def test_attention_pool_bad_inputs():
    with pytest.raises(ValueError, match="features"):
        attention_pool(np.zeros((2, 8, 3)), np.zeros((2, 8, 1)))
    with pytest.raises(ValueError, match="logits"):
        attention_pool(np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 1)))
    with pytest.raises(ValueError, match="logits"):
        attention_pool(np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 7, 1)))
    with pytest.raises(ValueError, match="logits"):
        attention_pool(np.zeros((2, 4, 8, 8, 3)), np.zeros((2, 8, 8, 1)))


@pytest.mark.parametrize(
    "in_shape,size",
    [((2, 12, 8, 1), (4, 4)), ((1, 10, 7, 2), (4, 3)), ((1, 3, 5, 1), (6, 10)), ((2, 6, 9, 4, 1), (3, 2, 4))],
)
def test_resize_area_matches_numpy(in_shape, size, rng):
    x = rng.random(in_shape)
    out = resize_spatial(x, size, method="area")
    np.testing.assert_allclose(ops.convert_to_numpy(out), np_area_resize(x, size), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "in_shape,size", [((1, 4, 6, 2), (9, 13)), ((2, 8, 8, 1), (3, 5)), ((1, 3, 4, 5, 1), (6, 7, 8))]
)
def test_resize_linear_matches_numpy(in_shape, size, rng):
    x = rng.random(in_shape)
    out = resize_spatial(x, size, method="linear")
    np.testing.assert_allclose(ops.convert_to_numpy(out), np_linear_resize(x, size), rtol=1e-10, atol=1e-12)


def test_resize_linear_upsampling_matches_keras_image_resize(rng):
    x = rng.random((2, 5, 7, 3)).astype("float32")
    ours = resize_spatial(x, (15, 21), method="linear")
    theirs = ops.image.resize(x, (15, 21), interpolation="bilinear", antialias=False)
    np.testing.assert_allclose(ops.convert_to_numpy(ours), ops.convert_to_numpy(theirs), atol=1e-5)


def test_resize_area_keeps_mass_fraction():
    mask = np.zeros((1, 64, 64, 1), "float32")
    mask[:, :, :32] = 1
    coarse = ops.convert_to_numpy(resize_spatial(mask, 8))
    assert coarse.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(coarse[0, :, :4, 0], 1.0)
    np.testing.assert_array_equal(coarse[0, :, 4:, 0], 0.0)
    assert np.allclose(resize_matrix(3, 7).sum(axis=1), 1.0)


def test_resize_bool_and_int_masks_become_float():
    out = resize_spatial(np.ones((1, 4, 4, 1), dtype="bool"), 2)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_array_equal(ops.convert_to_numpy(out), 1.0)


def test_resize_gradients(rng):
    x = rng.random((1, 5, 6, 2))
    check_op_gradients(lambda a: resize_spatial(a, (3, 4)), x, max_entries=12)
    x3 = rng.random((1, 2, 3, 4, 1))
    check_op_gradients(lambda a: resize_spatial(a, (4, 3, 2), method="linear"), x3, max_entries=12)


def test_resize_bad_inputs():
    x = np.zeros((1, 8, 8, 1))
    with pytest.raises(ValueError, match="size"):
        resize_spatial(x, (4, 4, 4))
    with pytest.raises(ValueError, match="size"):
        resize_spatial(x, (0, 4))
    with pytest.raises(ValueError, match="method"):
        resize_spatial(x, 4, method="cubic")
    with pytest.raises(ValueError, match="x"):
        resize_spatial(np.zeros((8, 8)), 4)
