"""Augmentation layers: same warp for image and labels, identity at strength/probability 0, seeds,
2D/3D, and numbers against scipy.ndimage (affine_transform, gaussian_filter) and NumPy formulas."""

import os
import tempfile

import keras
import numpy as np
import pytest
import scipy.ndimage as ndi
from keras import ops

from keras_medseg.data import augment as A
from keras_medseg.ops import map_coordinates

pytestmark = pytest.mark.backend_agnostic


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _smooth_batch(spatial, n=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + spatial).astype("float32")
    x = np.stack([ndi.gaussian_filter(v, 2.0) for v in x])
    x = (x - x.mean()) / x.std()
    return x[..., None].astype("float32")


SPATIAL = {2: (24, 24), 3: (16, 16, 16)}

# (factory, geometric) with a clearly non-trivial strength
STRONG = {
    "flip": (lambda s: A.RandomFlip(seed=s), True),
    "rot90": (lambda s: A.RandomRotate90(axes=(0, 1), seed=s), True),
    "affine": (lambda s: A.RandomAffine(rotation=0.4, scaling=0.15, translation=2.0, seed=s), True),
    "elastic": (lambda s: A.RandomElastic(magnitude=(1.5, 2.0), spacing=6, seed=s), True),
    "gamma": (lambda s: A.RandomGamma((0.5, 2.0), seed=s), False),
    "noise": (lambda s: A.RandomGaussianNoise(0.2, seed=s), False),
    "blur": (lambda s: A.RandomGaussianBlur((0.8, 1.2), seed=s), False),
    "scale_shift": (lambda s: A.RandomIntensityScaleShift(0.2, 0.3, seed=s), False),
    "lowres": (lambda s: A.RandomLowResolution((0.4, 0.6), seed=s), False),
}
# the same transforms at strength 0
ZERO = {
    "flip": lambda: A.RandomFlip(axes=()),
    "affine": lambda: A.RandomAffine(rotation=0.0, scaling=0.0, translation=0.0),
    "elastic": lambda: A.RandomElastic(magnitude=0.0, spacing=6),
    "gamma": lambda: A.RandomGamma((1.0, 1.0)),
    "noise": lambda: A.RandomGaussianNoise(0.0),
    "blur": lambda: A.RandomGaussianBlur((0.0, 0.0)),
    "scale_shift": lambda: A.RandomIntensityScaleShift(0.0, 0.0),
    "lowres": lambda: A.RandomLowResolution((1.0, 1.0)),
}


@pytest.mark.parametrize("d", [2, 3])
def test_image_and_labels_get_the_same_draw(d):
    for name in sorted(STRONG):
        _check_same_draw(name, d)


def _check_same_draw(name, d):
    factory, geometric = STRONG[name]
    x = _smooth_batch(SPATIAL[d])
    y = (x[..., 0] > 0.2).astype("int32")
    out = factory(3)({"image": x, "labels": y})
    xi, yo = _np(out["image"]), _np(out["labels"])
    assert xi.shape == x.shape and yo.shape == y.shape and yo.dtype == np.int32
    assert not np.allclose(xi, x)  # it did something
    if not geometric:
        np.testing.assert_array_equal(yo, y)
        return
    # A linear sample is a convex combination of the 2**d corners around the point, one of which is
    # the nearest voxel that gives the label; so where the thresholded warped image and the warped
    # labels disagree, the image lies within d * (largest neighbour difference) of the threshold.
    padded = np.pad(x[..., 0], [(0, 0)] + [(1, 1)] * d)  # constant padding fills 0
    step = max(np.abs(np.diff(padded, axis=a)).max() for a in range(1, d + 1))
    mismatch = (xi[..., 0] > 0.2) != (yo == 1)
    assert np.all(np.abs(xi[..., 0][mismatch] - 0.2) <= d * step + 1e-5)
    agree = 1.0 - mismatch.mean()
    assert agree > 0.85
    if name in ("affine", "elastic"):  # continuous draws: another seed moves things elsewhere
        other = factory(99)({"image": x, "labels": y})
        assert np.mean((_np(other["image"])[..., 0] > 0.2) == (yo == 1)) < agree


@pytest.mark.parametrize("d", [2, 3])
def test_flip_and_rot90_keep_thresholded_labels_exactly(d):
    x = _smooth_batch(SPATIAL[d], n=4)
    y = (x[..., 0] > 0.0).astype("int32")
    pipe = A.Compose([A.RandomFlip(seed=1), A.RandomRotate90(axes=(0, 1), seed=2)])
    out = pipe((x, y))
    np.testing.assert_array_equal(_np(out[1]), (_np(out[0])[..., 0] > 0.0).astype("int32"))


@pytest.mark.parametrize("d", [2, 3])
def test_strength_zero_is_identity(d):
    x = _smooth_batch(SPATIAL[d])
    y = (x[..., 0] > 0.2).astype("int32")
    for name in sorted(ZERO):
        out = ZERO[name]()({"image": x, "labels": y})
        np.testing.assert_allclose(_np(out["image"]), x, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(_np(out["labels"]), y, err_msg=name)


@pytest.mark.parametrize("d", [2, 3])
def test_probability_zero_and_inference_are_identity(d):
    x = _smooth_batch(SPATIAL[d])
    y = (x[..., 0] > 0.2).astype("int32")
    for name in sorted(STRONG):
        layer = STRONG[name][0](1)
        layer.probability = 0.0
        out = layer({"image": x, "labels": y})
        np.testing.assert_array_equal(_np(out["image"]), x, err_msg=name)
        np.testing.assert_array_equal(_np(out["labels"]), y, err_msg=name)
        out = STRONG[name][0](1)((x, y), training=False)
        np.testing.assert_array_equal(_np(out[0]), x, err_msg=name)


@pytest.mark.parametrize("d", [2, 3])
def test_seed_reproduces_the_draw(d):
    x = _smooth_batch(SPATIAL[d], n=3)
    for name in sorted(STRONG):
        a = _np(STRONG[name][0](7)(x))
        b = _np(STRONG[name][0](7)(x))
        c = _np(STRONG[name][0](8)(x))
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert not np.array_equal(a, c), name


def test_probability_selects_about_that_fraction_of_samples():
    x = _smooth_batch((8, 8), n=200)
    out = _np(A.RandomIntensityScaleShift(0.0, 1.0, probability=0.3, seed=0)(x))
    changed = np.any(out != x, axis=(1, 2, 3))
    assert 0.18 < changed.mean() < 0.42


@pytest.mark.parametrize("d", [2, 3])
def test_affine_matches_scipy_affine_transform(d):
    spatial = SPATIAL[d]
    x = _smooth_batch(spatial, n=2)
    y = (x[..., 0] > 0.2).astype("int32")
    layer = A.RandomAffine(rotation=0.5, scaling=(0.8, 1.2), translation=3.0, isotropic=False, seed=5)
    params = layer.draw(2, spatial)
    xi = _np(layer.transform_image(ops.convert_to_tensor(x), params))
    yo = _np(layer.transform_labels(ops.convert_to_tensor(y[..., None]), params))[..., 0]
    matrix, shift = _np(params["matrix"]), _np(params["shift"])
    centre = (np.array(spatial) - 1) / 2.0
    for n in range(2):
        offset = centre + shift[n] - matrix[n] @ centre
        ref = ndi.affine_transform(x[n, ..., 0].astype("float64"), matrix[n].astype("float64"), offset,
                                   order=1, mode="grid-constant", cval=0.0)
        np.testing.assert_allclose(xi[n, ..., 0], ref, atol=2e-4)
        ref_y = ndi.affine_transform(y[n], matrix[n].astype("float64"), offset, order=0, mode="grid-constant")
        assert np.mean(yo[n] == ref_y) > 0.998  # rounding ties at exactly .5 may differ


def test_resample_nearest_padding_matches_scipy():
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(1, 7, 9, 2)).astype("float32")
    coords = rng.uniform(-3, 11, size=(1, 2, 5, 6)).astype("float32")
    out = _np(map_coordinates(ops.convert_to_tensor(vol), ops.convert_to_tensor(coords), order=1,
                              padding_mode="nearest"))
    for c in range(2):
        ref = ndi.map_coordinates(vol[0, ..., c].astype("float64"), coords[0].astype("float64"), order=1,
                                  mode="nearest")
        np.testing.assert_allclose(out[0, ..., c], ref, atol=1e-5)


@pytest.mark.parametrize("d", [2, 3])
def test_blur_matches_scipy_gaussian_filter(d):
    x = np.random.default_rng(1).normal(size=(2,) + SPATIAL[d] + (1,)).astype("float32")
    sigma = np.array([0.7, 1.3], "float32")
    radius = 4
    out = _np(A.gaussian_blur(ops.convert_to_tensor(x), ops.convert_to_tensor(sigma), radius))
    for n in range(2):
        ref = ndi.gaussian_filter(x[n, ..., 0].astype("float64"), float(sigma[n]), mode="nearest",
                                  truncate=radius / float(sigma[n]))
        np.testing.assert_allclose(out[n, ..., 0], ref, atol=1e-5)


def test_gamma_and_scale_shift_match_numpy():
    x = _smooth_batch((9, 11), n=2)
    out = _np(A.RandomGamma((1.7, 1.7))(x))
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out, lo + (hi - lo) * ((x - lo) / (hi - lo)) ** 1.7, atol=1e-5)
    layer = A.RandomIntensityScaleShift(0.3, 0.5, seed=2)
    params = layer.draw(2, (9, 11))
    out = _np(layer.transform_image(ops.convert_to_tensor(x), params))
    a, b = _np(params["a"])[:, None, None, None], _np(params["b"])[:, None, None, None]
    np.testing.assert_allclose(out, x * (1 + a) + b, atol=1e-5)


def test_low_resolution_matches_strided_downsampling_and_linear_upsampling():
    x = np.random.default_rng(2).normal(size=(1, 9, 1)).astype("float32")
    x2 = np.repeat(x[:, :, None, :], 3, axis=2)  # (1, 9, 3, 1): coarsen axis 0 only
    out = _np(A.RandomLowResolution((0.5, 0.5), axes=(0,))(x2))[0, :, 0, 0]
    coarse = x[0, ::2, 0]
    ref = np.interp(np.arange(9) * 0.5, np.arange(coarse.size), coarse)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_low_resolution_equals_the_two_node_blend_per_axis_in_3d():
    """Per sample and axis, output voxel `o` blends input voxels `round(m / z)` and `round((m + 1) / z)` of the
    coarse nodes `m = floor(o z)` around `o z` (a NumPy gather, axis after axis)."""
    x = np.random.default_rng(3).normal(size=(2, 7, 9, 8, 2)).astype("float32")
    layer = A.RandomLowResolution((0.3, 0.9), per_axis=True, seed=4)
    params = layer.draw(2, x.shape[1:-1])
    out = _np(layer.transform_image(ops.convert_to_tensor(x), params))
    zoom = _np(params["zoom"])
    ref = x.astype("float64")
    for a in range(3):
        size = x.shape[a + 1]
        for n in range(2):
            z = np.float32(zoom[n, a])
            q = np.arange(size, dtype="float32") * z
            m0 = np.floor(q)
            i0 = np.clip(np.floor(m0 / z + np.float32(0.5)), 0, size - 1).astype(int)
            i1 = np.clip(np.floor((m0 + 1) / z + np.float32(0.5)), 0, size - 1).astype(int)
            f = (q - m0).reshape([-1 if k == a else 1 for k in range(3)] + [1])
            ref[n] = (1 - f) * np.take(ref[n], i0, axis=a) + f * np.take(ref[n], i1, axis=a)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_random_draw_gives_keras_numbers_eagerly_and_its_distribution_compiled():
    """`random_draw` is `keras.random`'s draw (TensorFlow: Philox named instead of `auto_select`, the same numbers
    eagerly); compiled (XLA on TensorFlow, `jax.jit`), uniform within its range and normal with its deviation."""
    from keras_medseg.data.augment.base import random_draw

    a, b = keras.random.SeedGenerator(5), keras.random.SeedGenerator(5)
    for kind, kw in (("uniform", {"minval": -1.0, "maxval": 2.0}), ("normal", {"stddev": 0.5})):
        np.testing.assert_array_equal(_np(random_draw(kind, (3, 4), a, **kw)),
                                      _np(getattr(keras.random, kind)((3, 4), seed=b, **kw)))
    layer = A.RandomGaussianNoise((0.5, 0.5), seed=1)
    layer.jit_compile = True
    compose = A.Compose([A.RandomIntensityScaleShift(0.0, 1.0, seed=2), layer], jit_compile=True)
    outs = [_np(compose(np.zeros((2, 16, 16, 16, 1), "float32"))) for _ in range(2)]
    assert not np.array_equal(outs[0], outs[1])  # the seed generators moved on
    for out in outs:
        noise = out - out.mean(axis=(1, 2, 3, 4), keepdims=True)  # the shift is per sample, in [-1, 1)
        assert abs(noise.std() - 0.5) < 0.02 and np.all(np.abs(out.mean(axis=(1, 2, 3, 4))) < 1.05)


def test_noise_standard_deviation():
    x = np.zeros((1, 64, 64, 1), "float32")
    out = _np(A.RandomGaussianNoise((0.5, 0.5), seed=0)(x))
    assert abs(out.std() - 0.5) < 0.02


def test_config_round_trip_and_saving_inside_a_model():
    pipe = A.Compose([A.RandomAffine(rotation=0.2, scaling=0.1, seed=1), A.RandomGamma(seed=2),
                      A.RandomElastic(magnitude=1.0, spacing=8, probability=0.5, seed=3)])
    clone = A.Compose.from_config(pipe.get_config())
    assert [type(t).__name__ for t in clone.transforms] == ["RandomAffine", "RandomGamma", "RandomElastic"]
    assert clone.transforms[0].get_config() == pipe.transforms[0].get_config()
    inputs = keras.Input((16, 16, 1))
    h = A.RandomGaussianNoise(0.1, seed=0)(inputs)
    h = A.RandomIntensityScaleShift(0.1, 0.1, seed=1)(h)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(h))
    x = _smooth_batch((16, 16))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(_np(loaded.predict(x, verbose=0)), _np(model.predict(x, verbose=0)), atol=1e-6)
    # inside a model, augmentation acts in training mode only
    assert not np.allclose(_np(model(x, training=True)), _np(model(x, training=False)))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="probability"):
        A.RandomFlip(probability=1.5)
    with pytest.raises(ValueError, match="seed"):
        A.RandomGamma(seed="a")
    with pytest.raises(ValueError, match="gamma"):
        A.RandomGamma((2.0, 1.0))
    with pytest.raises(ValueError, match="padding_mode"):
        A.RandomAffine(padding_mode="wrap")
    with pytest.raises(ValueError, match="spacing"):
        A.RandomElastic(spacing=1)
    with pytest.raises(ValueError, match="zoom"):
        A.RandomLowResolution((0.5, 1.5))
    with pytest.raises(ValueError, match="square plane"):
        A.RandomRotate90(axes=(0, 1))(np.zeros((1, 4, 6, 1), "float32"))
    with pytest.raises(ValueError, match="image.shape"):
        A.RandomGamma()(np.zeros((4, 6), "float32"))
    with pytest.raises(ValueError, match="labels.shape"):
        A.RandomFlip()({"image": np.zeros((1, 4, 6, 1), "float32"), "labels": np.zeros((1, 4, 5), "int32")})
    with pytest.raises(ValueError, match="transforms"):
        A.Compose([lambda x: x])
