"""The fused warp: the sampler against scipy.ndimage.map_coordinates, a Compose of geometric transforms
sampled once on its composed grid, image and labels aligned, the crop-plus-margin path against warping the
whole volume, the margin against every draw, MONAI's "label" key, compiled against eager calls."""

import keras
import numpy as np
import pytest
import scipy.ndimage as ndi
from keras import ops

from keras_medseg.data import augment as A
from keras_medseg.data.augment import warp
from keras_medseg.ops import map_coordinates, map_image_and_labels

# The sampler, the fused grid, alignment and the compiled paths run on every backend; margins, the crop path and
# the dict keys are the same keras.ops code on each, so they run on TensorFlow only (the suite's time budget).
agnostic = pytest.mark.backend_agnostic
SCIPY_MODE = {"constant": "grid-constant", "nearest": "nearest"}
# Eager JAX compiles every operation for every new shape: one jitted program is quicker, even for one call.
# TensorFlow and torch run eagerly in the tests that are not about compiling (their first call is quicker).
JIT = keras.backend.backend() == "jax"


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _scipy(volume, coords, order, mode, cval=0.0):
    """Per sample and channel `scipy.ndimage.map_coordinates` in float64: `(N, *S_out, C)`."""
    return np.stack([np.stack([ndi.map_coordinates(volume[n, ..., c].astype("float64"), coords[n].astype("float64"),
                                                   order=order, mode=SCIPY_MODE[mode], cval=cval)
                               for c in range(volume.shape[-1])], -1) for n in range(volume.shape[0])])


def _pipeline(d, jit_compile=JIT, seed=0, magnitude=1.0, padding_mode="constant"):
    return A.Compose([A.RandomFlip(seed=seed + 1),
                      A.RandomAffine(rotation=0.3, scaling=0.15, translation=1.0, padding_mode=padding_mode,
                                     seed=seed + 2),
                      A.RandomElastic(magnitude=(0.5, magnitude), spacing=4, seed=seed + 3),
                      A.RandomIntensityScaleShift(0.0, 0.0, seed=seed + 4)], jit_compile=jit_compile)


def _coordinates(transforms, batch_size, frame):
    """`warp.group_coordinates` from the transforms' current seed states (jitted on JAX, for speed)."""
    if keras.backend.backend() != "jax":
        return _np(warp.group_coordinates(transforms, batch_size, frame))
    import jax

    variables = [t.seed_generator.state for t in transforms]
    key = (tuple(id(t) for t in transforms), batch_size, tuple(frame))
    if key not in _JITTED:

        def pure(state):
            with keras.StatelessScope(state_mapping=list(zip(variables, state))):
                return warp.group_coordinates(transforms, batch_size, frame)
        _JITTED[key] = jax.jit(pure)
    return _np(_JITTED[key]([v.value for v in variables]))


_JITTED = {}


def _reseed(layer, value):
    for k, t in enumerate(layer.transforms):
        t.seed_generator.state.assign(np.array([value, k], dtype=keras.backend.standardize_dtype(
            t.seed_generator.state.dtype)))


@agnostic
@pytest.mark.parametrize("d", [2, 3])
def test_sampler_matches_scipy_map_coordinates(d):
    rng = np.random.default_rng(d)
    spatial = (7, 9) if d == 2 else (5, 7, 6)
    vol = rng.normal(size=(2,) + spatial + (2,)).astype("float32")
    labels = rng.integers(0, 4, size=(2,) + spatial + (1,)).astype("int32")
    coords = rng.uniform(-2.5, max(spatial) + 1.5, size=(2, d, 4, 5)).astype("float32")
    coords[0, :, 0, :3] = np.array([[0.0, 1.0, 2.0]] * d)  # integer points, the corners included
    coords[0, :, 0, 3] = np.array(spatial) - 1.0
    for mode in ("constant", "nearest"):
        out = _np(map_coordinates(vol, coords, order=1, padding_mode=mode, fill_value=0.7))
        assert out.dtype == np.float32 and out.shape == (2, 4, 5, 2)
        np.testing.assert_allclose(out, _scipy(vol, coords, 1, mode, 0.7), atol=1e-5)
        near = _np(map_coordinates(labels, coords, order=0, padding_mode=mode))
        assert near.dtype == np.int32
        np.testing.assert_array_equal(near, _scipy(labels, coords, 0, mode).astype(np.int32))
        image, lab = map_image_and_labels(vol, labels, coords, padding_mode=mode, fill_value=0.7)
        np.testing.assert_array_equal(_np(image), out)
        np.testing.assert_array_equal(_np(lab), near)
    # integer coordinates reproduce the input bit for bit (flips, identity)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in spatial], indexing="ij"))[None].repeat(2, 0)
    np.testing.assert_array_equal(_np(map_coordinates(vol, grid.astype("float32"))), vol)


@agnostic
@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the torch path of the linear sampler")
@pytest.mark.parametrize("channels", [1, 2])
def test_torch_linear_path_equals_the_keras_ops_path(monkeypatch, channels):
    import torch

    from keras_medseg.ops import sampling
    rng = np.random.default_rng(channels)
    vol = torch.tensor(rng.normal(size=(2, 6, 9, 7, channels)).astype("float32"))
    coords = torch.tensor(rng.uniform(-1.5, 9.5, size=(2, 3, 5, 4, 3)).astype("float32"))
    fast = {mode: _np(map_coordinates(vol, coords, padding_mode=mode, fill_value=0.3))
            for mode in ("constant", "nearest")}
    monkeypatch.setattr(sampling, "_tracks_gradients", lambda flat, grid: True)  # the keras.ops blend
    for mode, out in fast.items():
        np.testing.assert_allclose(out, _np(map_coordinates(vol, coords, padding_mode=mode, fill_value=0.3)),
                                   rtol=0, atol=2e-6)
    monkeypatch.undo()
    # with autograd recording, the keras.ops path runs and the coordinates get gradients
    coords.requires_grad_(True)
    out = map_coordinates(vol, coords, padding_mode="nearest")
    np.testing.assert_allclose(_np(out.detach()), fast["nearest"], rtol=0, atol=2e-6)
    out.sum().backward()
    assert coords.grad is not None and float(coords.grad.abs().sum()) > 0


@agnostic
def test_sampler_errors_name_the_argument():
    vol = np.zeros((1, 4, 4, 1), "float32")
    with pytest.raises(ValueError, match="coords"):
        map_coordinates(vol, np.zeros((1, 3, 2, 2), "float32"))
    with pytest.raises(ValueError, match="order"):
        map_coordinates(vol, np.zeros((1, 2, 2, 2), "float32"), order=3)
    with pytest.raises(ValueError, match="padding_mode"):
        map_coordinates(vol, np.zeros((1, 2, 2, 2), "float32"), padding_mode="wrap")
    with pytest.raises(ValueError, match="volume"):
        map_coordinates(np.zeros((4, 4), "float32"), np.zeros((1, 2, 2, 2), "float32"))


@agnostic
@pytest.mark.parametrize("d", [2, 3])
def test_compose_samples_once_on_the_composed_grid(d):
    """Flip + affine + elastic: one sampling, equal to scipy's map_coordinates on the composed coordinates."""
    spatial = (12, 10) if d == 2 else (8, 9, 7)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2,) + spatial + (1,)).astype("float32")
    y = rng.integers(0, 3, size=(2,) + spatial).astype("int32")
    pipe = _pipeline(d)
    assert [kind for kind, _ in warp.plan(pipe.transforms)] == ["group", "layer"]
    _reseed(pipe, 11)
    out = pipe({"image": x, "labels": y})
    _reseed(pipe, 11)
    coords = _coordinates(pipe.transforms[:3], 2, spatial)
    np.testing.assert_allclose(_np(out["image"]), _scipy(x, coords, 1, "constant"), atol=1e-4)
    np.testing.assert_array_equal(_np(out["labels"]), _scipy(y[..., None], coords, 0, "constant")[..., 0])
    # the coordinates are the maps chained: flip(affine(elastic(o))) read from the input
    assert not np.allclose(coords, np.stack(np.meshgrid(*[np.arange(s) for s in spatial], indexing="ij")))


@agnostic
def test_image_and_labels_stay_aligned():
    """The one-hot image of a label map, warped linearly, agrees with the label map warped by nearest."""
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 3, size=(2, 4, 4, 4))
    labels = coarse.repeat(4, 1).repeat(4, 2).repeat(4, 3).astype("int32")  # 16^3 blocks: many interior voxels
    onehot = np.eye(3, dtype="float32")[labels]
    pipe = _pipeline(3, magnitude=1.5, padding_mode="nearest")  # the edge one-hot and the edge label outside
    out = pipe({"image": onehot, "label": labels})
    warped, lab = _np(out["image"]), _np(out["label"])
    interior = warped.max(-1) > 1 - 1e-5  # all 2**3 corners of the point carry one class
    assert interior.mean() > 0.3
    np.testing.assert_array_equal(lab[interior], warped.argmax(-1)[interior])
    # elsewhere the nearest label is one of the corners: it has a positive share of the interpolated one-hot
    share = np.take_along_axis(warped, lab[..., None], -1)[..., 0]
    assert np.all(share >= 1 / 8 - 1e-5)
    assert np.mean(lab == warped.argmax(-1)) > 0.97
    shifted = np.roll(lab, 1, axis=1)  # a label map one voxel off fails the interior check
    assert np.mean(shifted[interior] != warped.argmax(-1)[interior]) > 0.05


@pytest.mark.parametrize("d", [2, 3])
def test_crop_with_margin_equals_warping_the_whole_volume(d):
    """A patch cropped with `margin` and warped with `output_size` equals the whole volume warped, then cropped."""
    size = 30 if d == 2 else 22
    patch = (8,) * d
    rng = np.random.default_rng(2)
    vol = ndi.gaussian_filter(rng.normal(size=(2,) + (size,) * d), [0] + [1.5] * d)[..., None].astype("float32")
    lab = (vol[..., 0] > 0).astype("int32")
    layers = lambda: A.Compose([A.RandomFlip(seed=1), A.RandomRotate90(axes=(0, 1), seed=2),  # noqa: E731
                                A.RandomAffine(rotation=0.3, scaling=0.1, translation=1.0, seed=3)], jit_compile=JIT)
    whole, cropped = layers(), layers()
    margin = cropped.margin(patch)
    assert all(0 < m <= (size - 8) // 2 for m in margin)
    lo = [(size - 8) // 2 - m for m in margin]
    region = (slice(None),) + tuple(slice(a, a + 8 + 2 * m) for a, m in zip(lo, margin))
    out = cropped({"image": vol[region], "labels": lab[region]}, output_size=patch)
    ref = whole({"image": vol, "labels": lab})
    centre = (slice(None),) + (slice((size - 8) // 2, (size - 8) // 2 + 8),) * d
    np.testing.assert_allclose(_np(out["image"]), _np(ref["image"])[centre], atol=1e-5)
    # nearest rounding may differ where a coordinate lies within float error of a half voxel
    assert np.mean(_np(out["labels"]) == _np(ref["labels"])[centre]) > 0.995


def test_crop_with_margin_equals_whole_volume_with_elastic_at_any_position():
    """The same with an elastic warp and patches at the volume's edges, against scipy on the whole volume."""
    rng = np.random.default_rng(3)
    vol = rng.normal(size=(1, 20, 18, 16, 1)).astype("float32")
    lab = rng.integers(0, 3, size=(1, 20, 18, 16, 1)).astype("int32")
    pipe = _pipeline(3, magnitude=1.0)
    patch = (6, 6, 6)
    margin = pipe.margin(patch)
    for start in ((0, 0, 0), (14, 3, 10), (7, 12, 1)):
        region_lo = [s - m for s, m in zip(start, margin)]
        pad = [(max(0, -a), max(0, a + 6 + 2 * m - full)) for a, m, full in zip(region_lo, margin, vol.shape[1:4])]
        big, big_lab = (np.pad(v, [(0, 0)] + pad + [(0, 0)]) for v in (vol, lab))  # outside the volume: 0
        sl = tuple(slice(a + p[0], a + p[0] + 6 + 2 * m) for a, p, m in zip(region_lo, pad, margin))
        _reseed(pipe, 5)
        out = pipe({"image": big[(slice(None),) + sl], "labels": big_lab[(slice(None),) + sl]}, output_size=patch)
        _reseed(pipe, 5)
        coords = _coordinates(pipe.transforms[:3], 1, patch) + np.reshape(start, (1, 3, 1, 1, 1))
        np.testing.assert_allclose(_np(out["image"]), _scipy(vol, coords, 1, "constant"), atol=1e-4)
        np.testing.assert_array_equal(_np(out["labels"]), _scipy(lab, coords, 0, "constant").astype(np.int32))


@pytest.mark.parametrize("d", [2, 3])
def test_margin_holds_every_draw(d):
    patch = (8, 8) if d == 2 else (6, 8, 8)  # a square plane for the quarter turns
    transforms = [A.RandomRotate90(axes=(0, 1) if d == 2 else (1, 2), seed=1),
                  A.RandomAffine(rotation=0.5, scaling=(0.8, 1.3), translation=2.0, isotropic=False, seed=2),
                  A.RandomElastic(magnitude=(1.0, 2.0), spacing=3, seed=3), A.RandomFlip(seed=4)]
    pipe = A.Compose(transforms)
    margin = np.array(pipe.margin(patch))
    coords = _coordinates(transforms, 64, patch).reshape(64, d, -1)
    low, high = coords.min(axis=(0, 2)), coords.max(axis=(0, 2))
    assert np.all(low >= -margin - 1e-4) and np.all(high <= np.array(patch) - 1 + margin + 1e-4)
    assert A.Compose([A.RandomGamma()]).margin(patch) == (0,) * d


def test_affine_margin_is_close_to_the_largest_reach():
    """In 2D the farthest point an affine draw reaches is known: (cos a + sin a) h / s_min + t."""
    angle, s_min, shift, half = 0.4, 0.8, 2.0, 15.5  # a 32 x 32 patch
    margin = A.RandomAffine(rotation=angle, scaling=(s_min, 1.2), translation=shift).margin((32, 32))
    reach = (np.cos(angle) + np.sin(angle)) * half / s_min + shift - half
    assert all(np.ceil(reach) <= m <= 1.1 * reach + 1 for m in margin)


def test_label_key_alias_and_unknown_keys():
    x = np.random.default_rng(4).normal(size=(2, 12, 12, 1)).astype("float32")
    y = (x[..., 0] > 0).astype("int32")
    first = A.RandomAffine(rotation=0.5, seed=3)({"image": x, "labels": y})
    second = A.RandomAffine(rotation=0.5, seed=3)({"image": x, "label": y})
    assert sorted(second) == ["image", "label"]
    np.testing.assert_array_equal(_np(second["label"]), _np(first["labels"]))
    assert not np.array_equal(_np(second["label"]), y)  # warped, not passed through
    with pytest.raises(ValueError, match="Unknown key.*mask"):
        A.RandomAffine(rotation=0.5)({"image": x, "mask": y})
    with pytest.raises(ValueError, match="not both"):
        A.Compose([A.RandomFlip()])({"image": x, "labels": y, "label": y})
    with pytest.raises(ValueError, match="output_size"):
        A.Compose([A.RandomAffine(rotation=0.1)])({"image": x, "labels": y}, output_size=(14, 8))


@agnostic
def test_compiled_call_equals_eager_and_stays_seeded():
    x = np.random.default_rng(5).normal(size=(2, 10, 12, 1)).astype("float32")
    y = (x[..., 0] > 0).astype("int32")
    backend = keras.backend.backend()
    compiled = _pipeline(2, jit_compile=True if backend != "torch" else "auto")  # torch.compile: a minute
    eager = _pipeline(2, jit_compile=False)
    _reseed(compiled, 1)
    _reseed(eager, 1)
    a = compiled({"image": x, "labels": y}, output_size=(6, 8))
    b = eager({"image": x, "labels": y}, output_size=(6, 8))
    assert _np(a["image"]).shape == (2, 6, 8, 1) and _np(a["labels"]).shape == (2, 6, 8)
    if backend != "tensorflow":  # XLA draws TensorFlow's random numbers with another algorithm
        np.testing.assert_allclose(_np(a["image"]), _np(b["image"]), atol=1e-5)
        np.testing.assert_array_equal(_np(a["labels"]), _np(b["labels"]))
    c = compiled({"image": x, "labels": y}, output_size=(6, 8))  # the seed states moved on
    assert not np.array_equal(_np(c["image"]), _np(a["image"]))
    _reseed(compiled, 1)  # the same seeds give the same patch again
    np.testing.assert_array_equal(_np(compiled({"image": x, "labels": y}, output_size=(6, 8))["image"]),
                                  _np(a["image"]))


@agnostic
def test_runs_inside_a_compiled_training_step():
    """Augmentation on the device: the fused warp inside a model trained with the backend's compiler."""
    inputs = keras.Input((12, 12, 1))
    h = A.Compose([A.RandomAffine(rotation=0.3, seed=1), A.RandomElastic(magnitude=1.0, spacing=4, seed=2)])(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(h))
    model.compile(optimizer="sgd", loss="mse", jit_compile="auto")
    x = np.random.default_rng(6).normal(size=(4, 12, 12, 1)).astype("float32")
    history = model.fit(x, x, epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.allclose(_np(model(x, training=True)), _np(model(x, training=False)))
