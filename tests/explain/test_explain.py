"""Tests of keras_medseg.explain against maps computed by hand."""

import keras
import matplotlib
import numpy as np
import pytest

from keras_medseg import explain
from keras_medseg.explain.occlusion import occlusion_loop, occlusion_patches

matplotlib.use("Agg")

pytestmark = pytest.mark.backend_agnostic


def _linear_model(spatial, channels, classes=3, seed=0):
    inp = keras.Input(spatial + (channels,))
    out = keras.layers.Dense(classes, name="dense")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((int(np.prod(spatial)) * channels, classes)).astype("float32")
    model.get_layer("dense").set_weights([w, rng.standard_normal(classes).astype("float32")])
    return model, w


@pytest.mark.parametrize("spatial", [(6, 5), (3, 4, 5)])
def test_saliency_of_linear_model_equals_its_weights(spatial, rng):
    model, w = _linear_model(spatial, 2)
    x = rng.standard_normal((3,) + spatial + (2,)).astype("float32")
    for c in range(3):
        expected = np.abs(w[:, c].reshape(spatial + (2,))).max(axis=-1)
        maps = explain.saliency(model, x, c, batch_size=2)
        assert maps.shape == (3,) + spatial
        np.testing.assert_allclose(maps, np.broadcast_to(expected, maps.shape), rtol=1e-5, atol=1e-6)


def test_smoothgrad_is_saliency_for_a_linear_model_and_noise_zero(rng):
    model, w = _linear_model((6, 6), 1)
    x = rng.standard_normal((2, 6, 6, 1)).astype("float32")
    expected = np.abs(w[:, 1].reshape(6, 6))
    for noise in (0.0, 0.3):
        maps = explain.smoothgrad(model, x, 1, samples=5, noise=noise, batch_size=4)
        np.testing.assert_allclose(maps, np.broadcast_to(expected, maps.shape), rtol=1e-5, atol=1e-6)


def test_smoothgrad_averages_saliency_of_noisy_copies(rng):
    """Nonlinear model: SmoothGrad equals the mean of per-copy saliency maps with the same noise."""
    inp = keras.Input((5, 5, 1))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="tanh")(inp)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    model = keras.Model(inp, out)
    x = rng.standard_normal((2, 5, 5, 1)).astype("float32")
    maps = explain.smoothgrad(model, x, 0, samples=4, noise=0.2, seed=3)
    noise_rng = np.random.default_rng(3)
    sigma = 0.2 * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    eps = noise_rng.standard_normal((2, 4, 5, 5, 1)).astype("float32")
    expected = []
    for n in range(2):
        copies = x[n][None] + eps[n] * sigma[n]
        expected.append(explain.saliency(model, copies, 0).mean(axis=0))
    np.testing.assert_allclose(maps, np.stack(expected), rtol=1e-4, atol=1e-6)


def _cam_model(spatial, pool):
    conv = keras.layers.Conv2D if len(spatial) == 2 else keras.layers.Conv3D
    gap = keras.layers.GlobalAveragePooling2D if len(spatial) == 2 else keras.layers.GlobalAveragePooling3D
    mp = keras.layers.MaxPooling2D if len(spatial) == 2 else keras.layers.MaxPooling3D
    inp = keras.Input(spatial + (2,))
    h = conv(4, 3, padding="same", activation="relu", name="first_conv")(inp)
    if pool:
        h = mp(2)(h)
    feats = conv(5, 3, padding="same", activation="relu", name="last_conv")(h)
    out = keras.layers.Dense(3, name="fc")(gap()(feats))
    return keras.Model(inp, out)


@pytest.mark.parametrize("spatial,pool", [((8, 8), False), ((8, 6), True), ((4, 4, 6), True)])
def test_gradcam_equals_cam_by_hand(spatial, pool, rng):
    model = _cam_model(spatial, pool)
    x = rng.standard_normal((2,) + spatial + (2,)).astype("float32")
    feats = keras.Model(model.input, model.get_layer("last_conv").output)(x)
    feats = keras.ops.convert_to_numpy(feats)
    w = keras.ops.convert_to_numpy(model.get_layer("fc").kernel)
    n_pos = int(np.prod(feats.shape[1:-1]))
    for c in range(3):
        cam = np.maximum(np.tensordot(feats, w[:, c], axes=(-1, 0)), 0) / n_pos
        got = explain.gradcam(model, x, c, resize=False)  # default layer: the last conv
        np.testing.assert_allclose(got, cam, rtol=1e-4, atol=1e-6)
        full = explain.gradcam(model, x, c, layer="last_conv")
        assert full.shape == (2,) + spatial
        if not pool:
            np.testing.assert_allclose(full, cam, rtol=1e-4, atol=1e-6)
    assert explain.find_last_conv_layer(model).name == "last_conv"
    # the layer's own call is restored afterwards
    assert "call" not in model.get_layer("last_conv").__dict__


def _region_model(spatial, region):
    """A model that only sees `region` (a tuple of slices) of a (*spatial, 1) input."""
    crop = tuple((r.start, s - r.stop) for r, s in zip(region, spatial))
    cropping = keras.layers.Cropping2D if len(spatial) == 2 else keras.layers.Cropping3D
    inp = keras.Input(spatial + (1,))
    h = cropping(crop)(inp)
    out = keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(h))
    model = keras.Model(inp, out)
    k = model.get_layer("fc").kernel.shape[0]
    model.get_layer("fc").set_weights([np.ones((k, 2), "float32"), np.zeros(2, "float32")])
    return model


@pytest.mark.parametrize("spatial,region,patch,stride", [
    ((16, 16), (slice(4, 8), slice(8, 12)), 4, None),
    ((12, 10), (slice(3, 5), slice(6, 9)), (3, 2), (2, 2)),
    ((8, 8, 8), (slice(0, 4), slice(4, 8), slice(2, 4)), 2, None),
])
def test_occlusion_is_zero_away_from_the_region_the_model_sees(spatial, region, patch, stride, rng):
    model = _region_model(spatial, region)
    x = rng.uniform(0.5, 1.0, (2,) + spatial + (1,)).astype("float32")
    maps = explain.occlusion(model, x, 0, patch=patch, stride=stride, batch_size=7)
    assert maps.shape == (2,) + spatial
    # positions no covering patch can reach the region are exactly zero
    d = len(spatial)
    p = (patch,) * d if isinstance(patch, int) else patch
    st = p if stride is None else stride
    reach = np.zeros(spatial, bool)
    corners = occlusion_patches(spatial, p, st)
    for c in corners:
        idx = tuple(slice(a, a + q) for a, q in zip(c, p))
        hits = all(a < r.stop and a + q > r.start for a, q, r in zip(c, p, region))
        if hits:
            reach[idx] = True
    assert np.all(maps[:, ~reach] == 0)
    assert np.all(maps[(slice(None),) + region] > 0)
    np.testing.assert_allclose(maps, occlusion_loop(model, x, 0, patch=patch, stride=stride), rtol=1e-5, atol=1e-5)


def test_occlusion_aligned_tile_drop_is_the_covered_sum(rng):
    model = _region_model((16, 16), (slice(4, 8), slice(8, 12)))
    x = rng.uniform(0.5, 1.0, (1, 16, 16, 1)).astype("float32")
    maps = explain.occlusion(model, x, 1, patch=4)
    np.testing.assert_allclose(maps[0, 4:8, 8:12], x[0, 4:8, 8:12, 0].sum(), rtol=1e-5)
    mean_maps = explain.occlusion(model, x, 1, patch=4, baseline="mean")
    np.testing.assert_allclose(mean_maps[0, 4:8, 8:12], x[0, 4:8, 8:12, 0].sum() - 16 * x[0].mean(), rtol=1e-4)


def _segment_model(segments, k):
    """Score = sum of the input over superpixel k (channel 0), a constant otherwise."""
    spatial = segments.shape
    inp = keras.Input(spatial + (2,))
    out = keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    w = np.zeros(spatial + (2, 2), "float32")
    w[..., 0, 0] = segments == k
    w[..., 1, 1] = 1.0  # the other class looks at everything in channel 1
    model.get_layer("fc").set_weights([w.reshape(-1, 2), np.array([0.5, 0.0], "float32")])
    return model


@pytest.mark.parametrize("spatial", [(12, 12), (6, 6, 6)])
def test_lime_recovers_the_one_superpixel_the_model_depends_on(spatial, rng):
    blocks = np.indices(spatial) // 3
    segments = np.ravel_multi_index(tuple(blocks), tuple(s // 3 for s in spatial))
    k = 5
    model = _segment_model(segments, k)
    x = rng.uniform(0.5, 1.0, (2,) + spatial + (2,)).astype("float32")
    res = explain.lime(model, x, 0, segments=segments, samples=120, top_k=1, batch_size=50)
    assert res.maps.shape == (2,) + spatial
    for n in range(2):
        weights = res.weights[n]
        assert int(np.argmax(weights)) == k
        others = np.delete(weights, k)
        assert weights[k] > 10 * np.abs(others).max()
        np.testing.assert_array_equal(res.top_masks[n], segments == k)
        np.testing.assert_allclose(res.maps[n], weights[segments])
    np.testing.assert_allclose(res.scores, 0.5 + x[:, :, :][..., 0][:, segments == k].sum(axis=1), rtol=1e-5)
    lasso = explain.lime(model, x[:1], 0, segments=segments, samples=120, top_k=1, regressor="lasso", alpha=0.01)
    assert int(np.argmax(lasso.weights[0])) == k
    assert np.sum(np.abs(lasso.weights[0]) > 1e-6) <= 3  # sparse


@pytest.mark.parametrize("channels", [1, 3])
def test_lime_with_slic_superpixels(channels, rng):
    x = np.zeros((1, 24, 24, channels), "float32")
    x[:, 4:12, 4:12] = 1.0
    x[:, 14:22, 10:20] = 0.5
    x += 0.01 * rng.standard_normal(x.shape).astype("float32")
    seg = explain.superpixels(x[0], n_segments=12)
    assert seg.shape == (24, 24) and seg.min() == 0
    region = seg[8, 8]
    model = _segment_model(np.where(seg == region, 1, 0), 1) if channels == 2 else None
    inp = keras.Input((24, 24, channels))
    out = keras.layers.Dense(1, name="fc")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    w = np.zeros((24, 24, channels, 1), "float32")
    w[seg == region] = 1.0
    model.get_layer("fc").set_weights([w.reshape(-1, 1), np.zeros(1, "float32")])
    res = explain.lime(model, x, 0, samples=100, n_segments=12, top_k=1)
    np.testing.assert_array_equal(res.segments[0], seg)
    np.testing.assert_array_equal(res.top_masks[0], seg == region)


def test_activation_maximization_increases_the_score():
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="tanh")(inp)
    out = keras.layers.Dense(2, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    res = explain.activation_maximization(model, 1, steps=15, l2=1e-3, learning_rate=0.2)
    assert res.x.shape == (1, 8, 8, 1)
    assert res.history.shape == (16,)
    assert res.history[-1] > res.history[0] + 1e-3
    assert res.objective[-1] > res.objective[0]
    final = keras.ops.convert_to_numpy(model(res.x))[0, 1]
    np.testing.assert_allclose(final, res.history[-1], rtol=1e-5)


def test_region_score_for_a_segmentation_model(rng):
    """Per-pixel linear model: the gradient of a masked class sum is mask * W[:, c]."""
    inp = keras.Input((6, 7, 3))
    out = keras.layers.Conv2D(2, 1, name="head")(inp)
    model = keras.Model(inp, out)
    w = keras.ops.convert_to_numpy(model.get_layer("head").kernel)[0, 0]  # (3, 2)
    mask = np.zeros((6, 7), "float32")
    mask[1:4, 2:6] = 1
    x = rng.standard_normal((2, 6, 7, 3)).astype("float32")
    score = explain.region_score(1, mask)
    maps = explain.saliency(model, x, score)
    np.testing.assert_allclose(maps, np.broadcast_to(mask * np.abs(w[:, 1]).max(), maps.shape), rtol=1e-5)
    y = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(score(model(x))), (y[..., 1] * mask).sum(axis=(1, 2)),
                               rtol=1e-5)
    # an int class index on a dense output sums over the whole grid
    whole = explain.saliency(model, x, 0)
    np.testing.assert_allclose(whole, np.abs(w[:, 0]).max() * np.ones((2, 6, 7)), rtol=1e-5)
    cam = explain.gradcam(model, x, score)
    assert cam.shape == (2, 6, 7)


def test_overlay_2d_and_volume_slices(rng):
    ax = explain.overlay(rng.random((10, 12)), rng.random((10, 12)), title="t")
    assert len(ax.images) == 2
    ax = explain.overlay(rng.random((1, 6, 10, 12, 1)), rng.random((1, 6, 10, 12)), axis=1, index=3)
    assert ax.images[1].get_array().shape == (6, 12)
    np.testing.assert_array_equal(explain.take_slice(np.arange(24).reshape(2, 3, 4), 2, 1),
                                  np.arange(24).reshape(2, 3, 4)[:, :, 1])
    ax = explain.overlay(rng.random((10, 12, 3)), rng.random((10, 12)), colorbar=True)
    assert ax.images[0].get_array().shape == (10, 12, 3)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_bad_inputs_raise_clear_errors(rng):
    model, _ = _linear_model((4, 4), 1)
    x = rng.standard_normal((1, 4, 4, 1)).astype("float32")
    with pytest.raises(ValueError, match="x.shape"):
        explain.saliency(model, x[0], 0)
    with pytest.raises(ValueError, match="class_index"):
        explain.saliency(model, x, -1)
    with pytest.raises(ValueError, match="class_index"):
        explain.saliency(model, x, 3)
    with pytest.raises(TypeError, match="class_index"):
        explain.saliency(model, x, "cat")
    with pytest.raises(ValueError, match="samples"):
        explain.smoothgrad(model, x, 0, samples=0)
    with pytest.raises(ValueError, match="noise"):
        explain.smoothgrad(model, x, 0, noise=-1.0)
    with pytest.raises(ValueError, match="patch"):
        explain.occlusion(model, x, 0, patch=5)
    with pytest.raises(ValueError, match="stride"):
        explain.occlusion(model, x, 0, patch=2, stride=0)
    with pytest.raises(ValueError, match="baseline"):
        explain.occlusion(model, x, 0, patch=2, baseline="median")
    with pytest.raises(ValueError, match="samples"):
        explain.lime(model, x, 0, segments=np.zeros((4, 4), int), samples=1)
    with pytest.raises(ValueError, match="segments"):
        explain.lime(model, x, 0, segments=np.zeros((5, 4), int))
    with pytest.raises(ValueError, match="regressor"):
        explain.lime(model, x, 0, segments=np.zeros((4, 4), int), regressor="svm")
    with pytest.raises(ValueError, match="convolution"):
        explain.gradcam(model, x, 0)
    cam_model = _cam_model((8, 8), False)
    with pytest.raises(ValueError, match="layer"):
        explain.gradcam(cam_model, rng.standard_normal((1, 8, 8, 2)), 0, layer="nope")
    with pytest.raises(ValueError, match="feature map"):
        explain.gradcam(cam_model, rng.standard_normal((1, 8, 8, 2)), 0, layer="fc")
    with pytest.raises(ValueError, match="steps"):
        explain.activation_maximization(model, 0, steps=0)
    with pytest.raises(ValueError, match="l2"):
        explain.activation_maximization(model, 0, l2=-1.0)
    with pytest.raises(ValueError, match="heatmap"):
        explain.overlay(np.zeros((4, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="axis"):
        explain.overlay(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), axis=3)
    with pytest.raises(ValueError, match="dense output"):
        explain.saliency(model, x, explain.region_score(0))
    with pytest.raises(ValueError, match="mask"):
        seg_model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 1)])
        explain.saliency(seg_model, x, explain.region_score(0, np.ones((3, 3))))
