"""Stopping terms of the level-set balloon: robust edge level, Otsu, region mask, propagation image, front speed."""

import numpy as np
import pytest
from keras import ops

from keras_medseg.ops import edge_indicator
from keras_medseg.ops.level_set_stopping import (
    front_speed,
    otsu_threshold,
    robust_edge_level,
    seed_interval_mask,
    seed_region_mask,
    threshold_propagation,
)
from keras_medseg.zoo.level_set import signed_distance_to_sphere

pytestmark = pytest.mark.backend_agnostic


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def test_robust_edge_level_equals_numpy_median_and_mad():
    rng = np.random.default_rng(0)
    m = rng.gamma(2.0, 1.0, (2, 13, 11)).astype("float32")
    m[0, :5] = 0.0  # a flat background: left out of the statistics
    got = _np(robust_edge_level(m, k=2.5))
    for n in range(2):
        values = m[n][m[n] > 1e-3 * m[n].max()]
        med = np.median(values)
        want = med + 2.5 * 1.4826 * np.median(np.abs(values - med))
        np.testing.assert_allclose(got[n], want, rtol=1e-5)
    # an all-zero image falls back to its maximum (0)
    np.testing.assert_allclose(_np(robust_edge_level(np.zeros((1, 4, 4), "float32"))), [0.0])
    with pytest.raises(ValueError, match="k"):
        robust_edge_level(m, k=-1.0)


def test_otsu_threshold_matches_scikit_image():
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(1)
    images = np.stack([np.concatenate([rng.normal(0.2, 0.05, 300), rng.normal(0.7, 0.1, 200)]),
                       np.concatenate([rng.normal(-50.0, 10.0, 400), rng.normal(100.0, 30.0, 100)])]).astype("float32")
    t, low, high = (_np(a) for a in otsu_threshold(images.reshape(2, 20, 25)))
    def between(x, threshold):
        low_class, high_class = x[x <= threshold], x[x > threshold]
        return low_class.size * high_class.size * (low_class.mean() - high_class.mean()) ** 2

    for n in range(2):
        want = threshold_otsu(images[n])
        # the same split to within a few values (scikit-image bins the histogram), and at least as good a one
        assert np.mean((images[n] <= t[n]) != (images[n] <= want)) <= 0.01
        assert between(images[n], t[n]) >= between(images[n], want) * (1 - 1e-5)
        np.testing.assert_allclose(low[n], images[n][images[n] <= t[n]].mean(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(high[n], images[n][images[n] > t[n]].mean(), rtol=1e-4, atol=1e-4)
    flat = _np(otsu_threshold(np.full((1, 4, 4), 3.0, "float32"))[0])
    np.testing.assert_allclose(flat, [3.0])


def test_seed_region_mask_follows_the_seed_side_and_margin():
    image = np.zeros((1, 20, 20, 1), "float32")
    image[0, 5:15, 5:15] = 1.0  # bright square on a dark background
    image[0, 0:3, 0:3] = 0.25  # a dim patch: within a margin of 0.5 of the class-mean gap, not of 0.1
    bright_seed = signed_distance_to_sphere((20, 20), (10, 10), 2.0)[None, ..., None].astype("float32")
    dark_seed = signed_distance_to_sphere((20, 20), (17, 17), 1.5)[None, ..., None].astype("float32")
    wide = _np(seed_region_mask(image, bright_seed, margin=0.5))[0, ..., 0]
    narrow = _np(seed_region_mask(image, bright_seed, margin=0.1))[0, ..., 0]
    assert narrow[5:15, 5:15].all() and narrow.sum() == 100
    assert wide[0:3, 0:3].all() and wide.sum() == 109
    dark = _np(seed_region_mask(image, dark_seed, margin=0.1))[0, ..., 0]
    np.testing.assert_array_equal(dark, 1.0 - narrow)
    # no seed: nothing is gated
    assert _np(seed_region_mask(image, np.ones_like(image), margin=0.1)).all()
    with pytest.raises(ValueError, match="margin"):
        seed_region_mask(image, bright_seed, margin=-0.1)


def _interval_reference(image, u0, k, floor):
    """NumPy reference of `seed_interval_mask` (per image: seed mean and std, Otsu's class means by scikit-image)."""
    from skimage.filters import threshold_otsu

    out = np.ones(image.shape[:-1] + (1,), "float32")
    for n in range(image.shape[0]):
        grey = image[n].astype("float64").mean(-1)
        seed = u0[n, ..., 0] < 0
        if not seed.any():
            continue
        t = threshold_otsu(grey)
        gap = grey[grey > t].mean() - grey[grey <= t].mean()
        half = k * max(grey[seed].std(), floor * gap)
        out[n, ..., 0] = np.abs(grey - grey[seed].mean()) <= half
    return out


def test_seed_interval_mask_equals_numpy_formula():
    rng = np.random.default_rng(3)
    # a bright square, a mid-grey square (same Otsu class as the bright one) and noise; three images:
    # a seed with its own spread, a flat seed (the floor decides), no seed
    image = np.zeros((3, 24, 24, 2), "float32")
    image[:, 3:11, 3:11] = 1.0
    image[:, 13:21, 13:21] = 0.6
    image += rng.normal(0.0, 0.05, image.shape).astype("float32")
    image[1] = np.round(image[1] * 4) / 4  # quantised: the seed's std is 0
    u0 = np.stack([signed_distance_to_sphere((24, 24), (7, 7), 2.5), signed_distance_to_sphere((24, 24), (7, 7), 1.5),
                   np.ones((24, 24))])[..., None].astype("float32")
    for k, floor in ((3.0, 0.05), (2.0, 0.0), (4.0, 0.3)):
        got = _np(seed_interval_mask(image, u0, k=k, floor=floor))
        want = _interval_reference(image, u0, k, floor)
        # only pixels within float32 rounding of the interval's edge may differ
        assert (got != want).mean() <= 0.002, (k, floor)
    got = _np(seed_interval_mask(image, u0, k=3.0, floor=0.05))[..., 0]
    assert got[0, 3:11, 3:11].mean() > 0.95 and got[0, 13:21, 13:21].max() == 0.0  # bright allowed, mid-grey not
    assert got[1, 3:11, 3:11].mean() > 0.95  # the flat seed (std 0) still allows its square: the floor
    assert got[2].all()  # no seed: nothing is gated
    with pytest.raises(ValueError, match="k"):
        seed_interval_mask(image, u0, k=0.0)
    with pytest.raises(ValueError, match="floor"):
        seed_interval_mask(image, u0, floor=-0.1)


def test_threshold_propagation_is_zero_on_strong_edges():
    g = np.linspace(0.0, 1.0, 11, dtype="float32").reshape(1, 11, 1, 1)
    p = _np(threshold_propagation(g, 0.4))[0, :, 0, 0]
    np.testing.assert_allclose(p, np.maximum(np.linspace(0, 1, 11) - 0.4, 0) / 0.6, atol=1e-6)
    per_image = _np(threshold_propagation(np.concatenate([g, g]), np.array([0.0, 0.5], "float32")))
    np.testing.assert_allclose(per_image[0], g[0], atol=1e-6)
    assert per_image[1][g[0] <= 0.5].max() == 0.0


def test_edge_indicator_threshold_channel():
    image = 0.02 * np.random.default_rng(3).standard_normal((1, 24, 24, 1)).astype("float32")  # noise: not edges
    image[0, 6:18, 6:18] += 1.0
    g2 = _np(edge_indicator(image, scale="auto", threshold="auto"))
    assert g2.shape == (1, 24, 24, 2)
    np.testing.assert_allclose(g2[..., :1], _np(edge_indicator(image, scale="auto")), atol=1e-6)
    assert g2[0, 6, 10, 1] == 0.0 and g2[0, 12, 12, 1] > 0.5  # stopped on the edge, free inside
    fixed = _np(edge_indicator(image, scale="auto", threshold=0.5))
    np.testing.assert_allclose(fixed[..., 1], np.maximum(fixed[..., 0] - 0.5, 0.0) / 0.5, atol=1e-6)
    # the automatic threshold, like the automatic scale, ignores the intensity units
    hu = _np(edge_indicator(3000.0 * image - 1000.0, scale="auto", threshold="auto"))
    np.testing.assert_allclose(hu, g2, atol=1e-4)
    for bad in (0.0, 1.0, "otsu", True):
        with pytest.raises(ValueError, match="threshold"):
            edge_indicator(image, threshold=bad)


def test_front_speed_measures_the_fronts_displacement():
    before = signed_distance_to_sphere((40, 40), (20, 20), 8.0)[None, ..., None].astype("float32")
    after = signed_distance_to_sphere((40, 40), (20, 20), 9.0)[None, ..., None].astype("float32")
    speed = _np(front_speed(before, after, 10))
    np.testing.assert_allclose(speed, [0.1], rtol=0.25)  # one voxel in 10 steps (measured 0.118: a pixelised circle)
    assert _np(front_speed(before, before, 10))[0] == 0.0
    # values far from the front do not count (a stopped front whose inside keeps sinking)
    sunk = np.where(before < -1.0, before - 5.0, before)
    assert _np(front_speed(before, sunk, 10))[0] == 0.0
