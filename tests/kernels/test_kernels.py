"""Tests of keras_medseg.kernels: stencils, extraction, clustering, spectral identification."""

import csv
import itertools

import keras
import matplotlib
import numpy as np
import pytest
from scipy import ndimage

from keras_medseg import kernels as K

matplotlib.use("Agg")

pytestmark = pytest.mark.backend_agnostic


def dense_periodic_operator(kernel, grid):
    """Explicit matrix of periodic cross-correlation with `kernel` (centre at size // 2)."""
    grid = tuple(grid)
    n = int(np.prod(grid))
    centre = tuple(s // 2 for s in kernel.shape)
    a = np.zeros((n, n))
    for p in itertools.product(*[range(g) for g in grid]):
        row = np.ravel_multi_index(p, grid)
        for o in itertools.product(*[range(s) for s in kernel.shape]):
            q = tuple((pi + oi - ci) % g for pi, oi, ci, g in zip(p, o, centre, grid))
            a[row, np.ravel_multi_index(q, grid)] += kernel[o]
    return a


@pytest.mark.parametrize("kshape,grid", [((3, 3), (6, 7)), ((5, 5), (8, 8)), ((2, 3), (5, 4)),
                                         ((3, 3, 3), (4, 5, 4)), ((3, 2, 3), (4, 3, 5))])
def test_conv_singular_values_equal_svd_of_the_explicit_operator(kshape, grid, rng):
    for _ in range(3):
        kernel = rng.standard_normal(kshape)
        a = dense_periodic_operator(kernel, grid)
        if all(s % 2 == 1 for s in kshape):  # the matrix is the periodic correlation
            u = rng.standard_normal(grid)
            np.testing.assert_allclose(a @ u.ravel(), ndimage.correlate(u, kernel, mode="wrap").ravel(),
                                       atol=1e-10)
        expected = np.linalg.svd(a, compute_uv=False)
        got = K.conv_singular_values(kernel, grid)
        assert got.shape == (int(np.prod(grid)),)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_conv_singular_values_is_batched(rng):
    ks = rng.standard_normal((4, 2, 3, 3))
    got = K.conv_singular_values(ks, (5, 5))
    assert got.shape == (4, 2, 25)
    np.testing.assert_allclose(got[2, 1], K.conv_singular_values(ks[2, 1], (5, 5)))


def test_reference_kernels_values():
    r = K.reference_kernels(3)
    np.testing.assert_array_equal(r["laplacian"], [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    np.testing.assert_array_equal(r["edge"], [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(r["sharpen"], [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    np.testing.assert_array_equal(r["sobel_x"], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    np.testing.assert_array_equal(r["sobel_y"], r["sobel_x"].T)
    np.testing.assert_allclose(r["gaussian_blur"], np.outer([1, 2, 1], [1, 2, 1]) / 16)
    np.testing.assert_allclose(r["local_mean"], np.full((3, 3), 1 / 9))
    # applied (as correlation) to u = 3x + 2y^2 they give the finite differences
    yy, xx = np.mgrid[0:7, 0:7].astype(float)
    u = 3 * xx + 2 * yy ** 2
    c = (3, 3)
    assert ndimage.correlate(u, r["forward_difference_x"])[c] == pytest.approx(3.0)
    assert ndimage.correlate(u, r["backward_difference_x"])[c] == pytest.approx(3.0)
    assert ndimage.correlate(u, r["central_difference_x"])[c] == pytest.approx(3.0)
    assert ndimage.correlate(u, r["forward_difference_y"])[c] == pytest.approx(2 * (4 ** 2 - 3 ** 2))
    assert ndimage.correlate(u, r["central_difference_y"])[c] == pytest.approx(2 * (16 - 4) / 2)
    assert ndimage.correlate(u, r["laplacian"])[c] == pytest.approx(4.0)
    assert ndimage.correlate(u, r["identity"])[c] == pytest.approx(u[c])
    r3 = K.reference_kernels(3, spatial_dims=3)
    assert r3["laplacian"][1, 1, 1] == -6 and np.count_nonzero(r3["laplacian"]) == 7
    assert r3["edge"][1, 1, 1] == 26 and r3["edge"].sum() == 0
    assert set(r3) >= {"sobel_z", "central_difference_z", "forward_difference_y"}
    r5 = K.reference_kernels(5)
    assert r5["laplacian"].shape == (5, 5) and r5["laplacian"][2, 2] == -4
    np.testing.assert_allclose(r5["gaussian_blur"].sum(), 1.0)


@pytest.mark.parametrize("d", [2, 3])
def test_identify_labels_references_and_scaled_copies_as_themselves(d):
    for name, ref in K.reference_kernels(3, spatial_dims=d).items():
        family = K.spectral_family(name)
        for scale in (1.0, 2.5, -0.3, 1e-3):
            res = K.identify(scale * ref)
            assert res.label == family, (name, scale, res)
            assert name in res.equivalent
            assert res.distance < 1e-7 and res.deviation < 1e-6


def test_identify_labels_noise_indeterminate(rng):
    for seed in (1, 2, 3):
        noise = np.random.default_rng(seed).standard_normal((3, 3))
        res = K.identify(noise)
        assert res.label == K.INDETERMINATE, res
        assert res.deviation > 0.1
    labels, dist, dev, families = K.identify_many(rng.standard_normal((400, 3, 3)))
    assert np.mean(labels == K.INDETERMINATE) > 0.85
    labels3, *_ = K.identify_many(rng.standard_normal((100, 3, 3, 3)))
    assert np.mean(labels3 == K.INDETERMINATE) > 0.85
    assert K.identify(np.zeros((3, 3))).label == K.INDETERMINATE


def test_identify_small_perturbation_keeps_label_and_definition(rng):
    lap = K.reference_kernels()["laplacian"]
    res = K.identify(lap + 0.01 * rng.standard_normal((3, 3)), grid_shape=(10, 10))
    assert res.label == "laplacian"
    # the definition, computed independently
    s = K.conv_singular_values(lap + 0.0, (8, 8))
    other = K.reference_kernels()["sharpen"]
    t = K.conv_singular_values(other, (8, 8))
    res = K.identify(other)
    assert res.distances["laplacian"] == pytest.approx(np.abs(s / s[0] - t / t[0]).mean())


def test_identify_bad_inputs():
    with pytest.raises(ValueError, match="references"):
        K.identify(np.ones((4, 4)))
    with pytest.raises(ValueError, match="grid_shape"):
        K.identify(np.ones((3, 3)), grid_shape=(2, 2))
    with pytest.raises(ValueError, match="grid_shape"):
        K.conv_singular_values(np.ones((3, 3)), (8,))
    with pytest.raises(ValueError, match="kernel"):
        K.identify(np.ones(3))
    with pytest.raises(ValueError, match="tolerance"):
        K.identify(np.ones((3, 3)), tolerance=-1)
    with pytest.raises(ValueError, match="size"):
        K.reference_kernels(4)
    with pytest.raises(ValueError, match="spatial_dims"):
        K.reference_kernels(3, spatial_dims=1)


def _conv_zoo_model():
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", groups=2, name="grouped")(h)
    h = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(h)
    h = keras.layers.SeparableConv2D(5, 3, padding="same", name="separable")(h)
    h = keras.layers.Conv2D(6, 1, name="pointwise")(h)
    h = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="transpose")(h)
    return keras.Model(inp, h)


def test_extract_kernels_with_channel_indices():
    model = _conv_zoo_model()
    layers = {lk.layer: lk for lk in K.extract_kernels(model)}
    assert list(layers) == ["conv", "grouped", "depthwise", "separable", "transpose"]  # 1x1 skipped
    w = keras.ops.convert_to_numpy(model.get_layer("conv").kernel)
    lk = layers["conv"]
    assert lk.kernels.shape == (12, 3, 3) and lk.layer_type == "Conv2D" and lk.kernel_size == (3, 3)
    for k, i, o in zip(lk.kernels, lk.in_channels, lk.out_channels):
        np.testing.assert_array_equal(k, w[:, :, i, o])
    assert sorted(zip(lk.in_channels, lk.out_channels)) == sorted(itertools.product(range(3), range(4)))
    # grouped: 2 groups of 2 in -> 2 out
    g = layers["grouped"]
    assert g.kernels.shape == (8, 3, 3)
    assert set(zip(g.in_channels, g.out_channels)) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)}
    wg = keras.ops.convert_to_numpy(model.get_layer("grouped").kernel)
    for k, i, o in zip(g.kernels, g.in_channels, g.out_channels):
        np.testing.assert_array_equal(k, wg[:, :, i % 2, o])
    dw = layers["depthwise"]
    wd = keras.ops.convert_to_numpy(model.get_layer("depthwise").kernel)
    assert dw.kernels.shape == (8, 3, 3) and sorted(dw.out_channels) == list(range(8))
    for k, i, o in zip(dw.kernels, dw.in_channels, dw.out_channels):
        np.testing.assert_array_equal(k, wd[:, :, i, o % 2])
        assert o // 2 == i
    tr = layers["transpose"]
    wt = keras.ops.convert_to_numpy(model.get_layer("transpose").kernel)  # (3, 3, out=2, in=6)
    assert tr.kernels.shape == (12, 3, 3)
    for k, i, o in zip(tr.kernels, tr.in_channels, tr.out_channels):
        np.testing.assert_array_equal(k, wt[:, :, o, i])
    model3 = keras.Sequential([keras.Input((4, 4, 4, 2)), keras.layers.Conv3D(3, 3, name="c3")])
    (lk3,) = K.extract_kernels(model3)
    assert lk3.kernels.shape == (6, 3, 3, 3)
    res3 = K.cluster_kernels(lk3, n_clusters=2, plot=False)
    assert res3.centers.shape == (2, 3, 3, 3) and "sobel_z" in res3.reference_points
    with pytest.raises(TypeError, match="model"):
        K.extract_kernels(np.ones(3))


def test_cluster_kernels_separates_two_stencils(rng):
    refs = K.reference_kernels()
    stack = np.concatenate([
        rng.uniform(0.5, 2, (20, 1, 1)) * refs["laplacian"] + 0.05 * rng.standard_normal((20, 3, 3)),
        rng.uniform(0.5, 2, (20, 1, 1)) * refs["sobel_x"] + 0.05 * rng.standard_normal((20, 3, 3)),
    ])
    res = K.cluster_kernels(stack, n_clusters=2)
    assert len(set(res.labels[:20])) == 1 and len(set(res.labels[20:])) == 1
    assert res.labels[0] != res.labels[20]
    assert sorted(res.nearest_reference) == ["laplacian", "sobel_x"]
    assert res.points.shape == (40, 2) and set(res.reference_points) == set(refs)
    # the references are projected by the same PCA as the kernels (check linearity of the plane)
    from sklearn.decomposition import PCA

    flat = stack.reshape(40, -1)
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    pca = PCA(2, random_state=0).fit(unit)
    lap = refs["laplacian"].ravel() / np.linalg.norm(refs["laplacian"])
    np.testing.assert_allclose(res.reference_points["laplacian"], pca.transform(lap[None])[0], atol=1e-8)
    assert res.figure is not None
    layer = K.extract_kernels(_conv_zoo_model())[0]
    res = K.cluster_kernels(layer, n_clusters=3, plot=False)
    assert res.centers.shape == (3, 3, 3) and res.figure is None
    with pytest.raises(ValueError, match="kernels"):
        K.cluster_kernels(np.ones((1, 3, 3)))
    import matplotlib.pyplot as plt

    plt.close("all")


def test_identify_model_table_csv_and_plot(tmp_path):
    model = _conv_zoo_model()
    lap = K.reference_kernels()["laplacian"]
    conv = model.get_layer("conv")
    conv.kernel.assign(np.broadcast_to(lap[:, :, None, None] * np.arange(1, 5), (3, 3, 3, 4)).astype("float32"))
    records = K.identify_model(model, progress=False)
    assert [r["layer"] for r in records] == ["conv", "grouped", "depthwise", "separable", "transpose"]
    first = records[0]
    assert first["n_kernels"] == 12 and first["laplacian"] == 12 and first["indeterminate"] == 0
    for rec in records:
        labels = {k: v for k, v in rec.items()
                  if k not in ("layer", "layer_type", "kernel_size", "n_kernels", "median_deviation")}
        assert sum(labels.values()) == rec["n_kernels"]
    path = K.write_csv(records, tmp_path / "kernels.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["layer"] == "conv" and int(rows[0]["laplacian"]) == 12
    ax = K.plot_label_counts(records)
    assert len(ax.get_xticklabels()) == len(records)
    with pytest.raises(ValueError, match="records"):
        K.write_csv([], tmp_path / "x.csv")
    import matplotlib.pyplot as plt

    plt.close("all")
