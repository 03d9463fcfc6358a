"""Front window (`LevelSetEvolution(front_window=True)`): same zero level set as the dense evolution, less work."""

import numpy as np
import pytest
from keras import ops

from keras_medseg.layers import EdgeIndicator, LevelSetEvolution
from keras_medseg.ops.level_set_window import choose_window, front_bounds, window_ladder, window_start
from keras_medseg.zoo.level_set import signed_distance_to_sphere

pytestmark = pytest.mark.backend_agnostic

FROZEN = {"trainable_kernels": False, "trainable_coefficients": False}


def edge_indicator(image):
    """The `lse` edge indicator: Gaussian sigma 1, scale adapted to the image."""
    return EdgeIndicator(smoothing_sigma=1.0, trainable_kernels=False, scale="auto")(image)


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def _pair(**kwargs):
    window = LevelSetEvolution(front_window=True, return_steps=True, **FROZEN, **kwargs)
    dense = LevelSetEvolution(front_window=False, return_steps=True, **FROZEN, **kwargs)
    return window, dense


def _run(layer, u0, g):
    u, steps = layer.evolve(ops.convert_to_tensor(u0), ops.convert_to_tensor(g), return_steps=True)
    return _np(u), _np(steps)


def _small_ladder(monkeypatch, sizes):
    """The layer's window ladder with smaller edge lengths, so a small image has windows: the same branches,
    crops and chunks as the default ladder (64, 96, ...) on an image 2-4x larger, at a fraction of the work."""
    from keras_medseg.layers import level_set_evolution

    monkeypatch.setattr(level_set_evolution, "window_ladder", lambda spatial: window_ladder(spatial, sizes=sizes))


def test_window_ladder():
    assert window_ladder((256, 256)) == [(64, 64), (96, 96), (128, 128), (192, 192)]
    # each axis capped at the image; a window of >= 60% of the image is not worth a branch
    assert window_ladder((96, 112)) == [(64, 64)]
    assert window_ladder((128, 128, 128)) == [(64, 64, 64), (96, 96, 96)]
    assert window_ladder((20, 20)) == [] and window_ladder((40, 300)) == [(40, 64), (40, 96), (40, 128)]
    assert window_ladder((50, 70), sizes=(32, 48)) == [(32, 32)]


def test_front_bounds_and_window_choice_match_numpy():
    rng = np.random.default_rng(0)
    u = np.ones((50, 70), "float32")
    u[12:20, 30:45] = -1.0
    u[25, 33] = -1.0
    found, lo, hi = (_np(v)[0] for v in front_bounds(ops.convert_to_tensor(u[None, ..., None])))
    # NumPy reference: voxels whose sign differs from a 4-neighbour's
    inside = u < 0
    front = np.zeros_like(inside)
    for axis in (0, 1):
        change = np.diff(inside, axis=axis) != 0
        pad_lo, pad_hi = [(0, 0), (0, 0)], [(0, 0), (0, 0)]
        pad_lo[axis], pad_hi[axis] = (1, 0), (0, 1)
        front |= np.pad(change, pad_lo) | np.pad(change, pad_hi)
    idx = np.argwhere(front)
    assert bool(found)
    np.testing.assert_array_equal(lo, idx.min(0))
    np.testing.assert_array_equal(hi, idx.max(0))
    # no front: nothing to do (branch 0)
    found0, lo0, hi0 = front_bounds(ops.convert_to_tensor(rng.uniform(1, 2, (1, 50, 70, 1)).astype("float32")))
    assert _np(found0).shape == (1,) and not _np(found0)[0]
    ladder = window_ladder((50, 70), sizes=(32,))
    assert _np(choose_window(found0, lo0, hi0, 5, (50, 70), ladder)).tolist() == [0]
    # the box 8 x 15 grown by 5 on each side fits the 32 x 32 window (branch 1); grown by 20 it needs the image
    index = int(_np(choose_window(ops.convert_to_tensor(True), ops.convert_to_tensor(lo.astype("int32")),
                                  ops.convert_to_tensor(hi.astype("int32")), 5, (50, 70), ladder)))
    assert ladder == [(32, 32)] and index == 1
    index = int(_np(choose_window(ops.convert_to_tensor(True), ops.convert_to_tensor(lo.astype("int32")),
                                  ops.convert_to_tensor(hi.astype("int32")), 20, (50, 70), ladder)))
    assert index == 2
    for margin in (0, 5, 7):  # the box needs 16 x 17 + 2 margin <= 32
        start = _np(window_start(ops.convert_to_tensor(lo.astype("int32")), ops.convert_to_tensor(hi.astype("int32")),
                                 margin, (32, 32), (50, 70)))
        assert np.all(start >= 0) and np.all(start + 32 <= np.array([50, 70]))
        # the window holds the box grown by the margin (clipped to the image)
        assert np.all(start <= np.maximum(idx.min(0) - margin, 0))
        assert np.all(start + 31 >= np.minimum(idx.max(0) + margin, np.array([49, 69])))


def _coins(size=128):
    import skimage.data

    image = skimage.data.coins()[:size, :size].astype("float32")
    u0 = signed_distance_to_sphere(image.shape, (130 * size / 256, 50 * size / 256), 6.0 * size / 256)
    g = _np(edge_indicator(image[None, ..., None]))
    return u0[None, ..., None].astype("float32"), g


@pytest.mark.parametrize("tolerance", [None, 2e-3])
def test_window_gives_the_dense_zero_level_set_on_a_real_image(tolerance):
    # scikit-image's coins (raw 0-255), the seed inside one coin: the front stays in a small box
    u0, g = _coins(128)
    window, dense = _pair(steps=300, alpha=-0.5, dt=0.2, tolerance=tolerance, check_every=25)
    (u_w, s_w), (u_d, s_d) = _run(window, u0, g), _run(dense, u0, g)
    assert _dice(u_w < 0, u_d < 0) >= 0.99
    assert (u_d < 0).sum() > 2 * (u0 < 0).sum()  # the front did move
    # at the front the values agree too; further out they may not (the voxels outside the window keep their
    # values; measured: 0.006 within 0.25 of the front, 0.07 within 2, where the front meets the image border)
    near = np.abs(u_d) < 0.25
    np.testing.assert_allclose(u_w[near], u_d[near], atol=0.02)
    np.testing.assert_array_equal(s_w, s_d)


def test_fast_front_and_long_chunks_stay_inside_the_window():
    # a fast balloon, a large time step and 60 steps between window moves: the margin must follow the front
    size = 160
    truth = signed_distance_to_sphere((size, size), (80, 80), 45.0)
    image = np.where(truth < 0, 200.0, 20.0).astype("float32")
    g = _np(edge_indicator(image[None, ..., None]))
    u0 = signed_distance_to_sphere((size, size), (80, 80), 5.0)[None, ..., None].astype("float32")
    window, dense = _pair(steps=240, alpha=-1.0, beta=0.1, dt=0.4, check_every=60)
    (u_w, _), (u_d, _) = _run(window, u0, g), _run(dense, u0, g)
    assert _dice(u_w < 0, u_d < 0) >= 0.995
    assert _dice(u_d[0, ..., 0] < 0, truth < 0) > 0.9


def test_batch_of_different_images_no_front_and_fronts_everywhere():
    # image 0: one small seed (window); image 1: seeds in every corner (the box is the image: dense branch);
    # image 2: no front at all (u > 0 everywhere: nothing can cross zero)
    u0, g = _coins(128)
    corners = np.minimum.reduce([signed_distance_to_sphere((128, 128), c, 4.0)
                                 for c in [(10, 10), (10, 117), (117, 10), (117, 117)]])
    u = np.concatenate([u0, corners[None, ..., None], np.full_like(u0, 5.0)]).astype("float32")
    gs = np.concatenate([g, g, g])
    window, dense = _pair(steps=100, alpha=-0.5, dt=0.2, check_every=20)
    (u_w, s_w), (u_d, _) = _run(window, u, gs), _run(dense, u, gs)
    for i in range(3):
        assert _dice(u_w[i] < 0, u_d[i] < 0) >= 0.99 or (u_w[i] < 0).sum() == (u_d[i] < 0).sum() == 0
    np.testing.assert_allclose(u_w[1], u_d[1], atol=1e-4)  # dense branch: the same numbers
    assert (u_w[2] > 0).all()
    np.testing.assert_array_equal(s_w, [100, 100, 100])


def test_window_in_3d(monkeypatch):
    # 40^3 with 32^3 windows (the default ladder needs >= 76^3: 96^3 took 24 CPU s on JAX); chunks of 5 steps keep
    # the margin (<= chunk + 4) small enough for the front's box to fit the window (measured: all 8 chunks do)
    _small_ladder(monkeypatch, (32,))
    size = 40
    truth = signed_distance_to_sphere((size,) * 3, (20, 19, 21), 8.0)
    image = np.where(truth < 0, 100.0, 10.0).astype("float32")
    g = _np(edge_indicator(image[None, ..., None]))
    u0 = signed_distance_to_sphere((size,) * 3, (20, 19, 21), 2.5)[None, ..., None].astype("float32")
    window, dense = _pair(steps=40, alpha=-0.5, dt=0.2, check_every=5)
    assert window._windowed(u0.shape) and not dense._windowed(u0.shape)
    (u_w, _), (u_d, _) = _run(window, u0, g), _run(dense, u0, g)
    assert _dice(u_w < 0, u_d < 0) >= 0.99 and (u_d < 0).sum() > 3 * (u0 < 0).sum()  # measured 1.0, 11x
    # the window really ran: voxels outside it kept their values (the dense branch gives the dense numbers)
    assert np.abs(u_w - u_d).max() > 1.0  # measured 4.25


def test_front_window_option_is_checked_and_saved():
    with pytest.raises(TypeError, match="front_window"):
        LevelSetEvolution(front_window="yes")
    layer = LevelSetEvolution(front_window=True)
    assert LevelSetEvolution.from_config(layer.get_config()).front_window is True


def test_front_bounds_and_window_choice_per_image_of_a_batch():
    # three images: a box, a box elsewhere, no front; each image's bounds are its own (checked against one by one)
    u = np.ones((3, 40, 60, 1), "float32")
    u[0, 5:9, 10:20] = -1.0
    u[1, 20:35, 40:58] = -1.0
    found, lo, hi = (_np(v) for v in front_bounds(ops.convert_to_tensor(u)))
    assert found.tolist() == [True, True, False]
    for i in range(2):
        _, lo1, hi1 = (_np(v) for v in front_bounds(ops.convert_to_tensor(u[i:i + 1])))
        np.testing.assert_array_equal(lo[i], lo1[0])
        np.testing.assert_array_equal(hi[i], hi1[0])
    np.testing.assert_array_equal(lo[0], [4, 9])
    np.testing.assert_array_equal(hi[1], [35, 58])
    ladder = window_ladder((40, 60), sizes=(16, 24))
    index = _np(choose_window(ops.convert_to_tensor(found), ops.convert_to_tensor(lo), ops.convert_to_tensor(hi), 2,
                              (40, 60), ladder))
    # image 0: 6 x 12 box + 2 x 2 fits 16 x 16; image 1: 17 x 20 box + 4 needs 24 x 24; image 2: nothing to do
    assert ladder == [(16, 16), (24, 24)] and index.tolist() == [1, 2, 0]


def test_batched_windows_agree_with_each_image_alone():
    # a batch of three disks of different sizes and places, each seeded at its centre: the fronts need different
    # windows; the batch shares the largest, each image has its own corner. Every image ends as it does alone and
    # as the dense evolution does, and each image stops after its own number of steps (the fixed-step batch path,
    # images without a front among them, is tested above)
    size = 128
    disks = [((40, 40), 12.0), ((64, 64), 35.0), ((100, 105), 18.0)]
    images = np.stack([np.where(signed_distance_to_sphere((size, size), c, r) < 0, 200.0, 20.0) for c, r in disks])
    u0 = np.stack([signed_distance_to_sphere((size, size), c, 3.0) for c, _ in disks])[..., None].astype("float32")
    g = _np(edge_indicator(images[..., None].astype("float32")))
    window, dense = _pair(steps=300, alpha=-1.0, dt=0.2, tolerance=2e-3, check_every=20)
    (u_w, s_w), (u_d, s_d) = _run(window, u0, g), _run(dense, u0, g)
    for i, (_, radius) in enumerate(disks):
        u_1, s_1 = _run(window, u0[i:i + 1], g[i:i + 1])
        assert _dice(u_w[i] < 0, u_1[0] < 0) >= 0.995
        assert _dice(u_w[i] < 0, u_d[i] < 0) >= 0.99
        assert (u_w[i] < 0).sum() > 0.8 * np.pi * radius ** 2  # the front reached the disk's edge
        assert s_w[i] == s_1[0] == s_d[i]
    assert len(set(s_w.tolist())) == 3 and s_w.max() < 300, s_w  # each image stopped at its own step


@pytest.mark.parametrize("spatial", [(40, 60), (12, 20, 16)])
def test_crop_and_paste_windows_match_numpy_slices(spatial):
    from keras_medseg.ops.level_set_window import crop_windows, paste_windows

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3,) + spatial + (2,)).astype("float32")
    window = tuple(s // 2 for s in spatial)
    starts = np.stack([rng.integers(0, s - w + 1, 3) for s, w in zip(spatial, window)], axis=1).astype("int32")
    crops = _np(crop_windows(ops.convert_to_tensor(x), ops.convert_to_tensor(starts), window))
    patches = rng.normal(size=crops.shape).astype("float32")
    pasted = _np(paste_windows(ops.convert_to_tensor(x), ops.convert_to_tensor(patches), ops.convert_to_tensor(starts)))
    expected = x.copy()
    for n in range(3):
        box = (n,) + tuple(slice(s, s + w) for s, w in zip(starts[n], window))
        np.testing.assert_array_equal(crops[n], x[box])
        expected[box] = patches[n]
    np.testing.assert_array_equal(pasted, expected)
