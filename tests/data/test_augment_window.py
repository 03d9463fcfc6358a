"""Warped patches read from the box the warp needs (`augment.window`) equal the worst-case margin crop's:
same draws, same values (max error < 1e-5, labels exact), image and labels aligned, on every backend."""

import keras
import numpy as np
import pytest

from keras_medseg.data import VolumeDataset
from keras_medseg.data import augment as A
from keras_medseg.data.augment import window
from keras_medseg.data.scans.volume_dataset import _reseed
from tests.data.test_volume_dataset import write_cases

agnostic = pytest.mark.backend_agnostic
JIT = "auto"  # the dataset's default: compiled on TensorFlow and JAX, eager torch


def _pipeline(intensity=True, turns=False):
    # turns: a flip and a quarter turn first (static axes in their draws; they fold into the affine map)
    layers = [A.RandomFlip(seed=5), A.RandomRotate90(axes=(1, 2), seed=6)] if turns else []
    layers += [A.RandomAffine(rotation=0.3, scaling=0.1, translation=1.0, seed=1),
              A.RandomElastic(magnitude=(1.0, 2.0), spacing=4, seed=2)]
    if intensity:
        layers.append(A.RandomIntensityScaleShift(0.1, 0.1, seed=3))
    return A.Compose(layers, jit_compile=JIT)


def _margin_crop_batch(ds, index):
    """The batch as the margin path makes it: `patch + 2 * margin` crops, the layer with `output_size`."""
    key = [ds.seed, ds.epoch, index]
    rng = np.random.default_rng(key)
    margin = ds.augment.margin(ds.patch_size)
    crops = [ds.sample_patch(*ds.load_case(c), rng, margin)[:2] for c in ds.case_slots(index)]
    _reseed(ds.augment, key)
    out = ds.augment({"image": np.stack([c[0] for c in crops]), "labels": np.stack([c[1] for c in crops])},
                     output_size=ds.patch_size)
    return keras.ops.convert_to_numpy(out["image"]), keras.ops.convert_to_numpy(out["labels"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_cases(str(tmp_path_factory.mktemp("window")))


@agnostic
@pytest.mark.parametrize("turns", [False, True])
def test_window_batches_equal_the_margin_crop_path(folder, turns):
    """Patches at the scans' edges included (16^3 patches of 16-30 voxel scans): same values, same draws."""
    ds = VolumeDataset(folder, patch_size=16, batch_size=2, steps_per_epoch=1 if turns else 2,
                       augment=_pipeline(turns=turns), seed=4)
    margin = ds.augment.margin(ds.patch_size)
    assert window.supports_windows(ds.augment) and min(margin) > 3
    for index in range(len(ds)):
        x, y = ds[index]
        ref_x, ref_y = _margin_crop_batch(ds, index)
        assert x.shape == (2, 16, 16, 16, 1) and y.shape == (2, 16, 16, 16) and y.dtype == np.int32
        np.testing.assert_allclose(x, ref_x, atol=1e-5, rtol=1e-5)  # float32 rounding: folded vs chained maps
        np.testing.assert_array_equal(y, ref_y)
        assert 0 < np.mean(y) < 1 or index  # a positive patch shows the ball


@agnostic
def test_window_keeps_image_and_labels_aligned(tmp_path):
    """The image is the label map itself ("none" intensity, no intensity layer): wherever all interpolation
    corners carry one class (the warped image is exactly 0 or 1) the nearest label is that class."""
    import nibabel as nib

    rng = np.random.default_rng(7)
    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    for i, shape in enumerate([(26, 22, 24), (20, 28, 22)]):
        blocks = rng.integers(0, 2, size=tuple(-(-s // 4) for s in shape))
        labels = blocks.repeat(4, 0).repeat(4, 1).repeat(4, 2)[:shape[0], :shape[1], :shape[2]].astype("uint8")
        nib.save(nib.Nifti1Image(labels.astype("float32"), np.eye(4)), str(tmp_path / "images" / f"c{i}.nii.gz"))
        nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / "labels" / f"c{i}.nii.gz"))
    ds = VolumeDataset(str(tmp_path), patch_size=12, batch_size=2, steps_per_epoch=3, augment=_pipeline(False),
                       seed=1, intensity={"preset": "none"})
    inside, agree, shifted = 0, [], []
    for index in range(len(ds)):
        x, y = ds[index]
        x = x[..., 0]
        pure = (x < 1e-6) | (x > 1 - 1e-6)
        inside += pure.sum()
        np.testing.assert_array_equal(y[pure], np.round(x[pure]).astype(np.int32))
        agree.append(np.mean(y == np.round(x)))
        shifted.append(np.mean(np.roll(y, 1, axis=1)[pure] != np.round(x[pure])))
    assert inside > 0.3 * 3 * 2 * 12**3
    assert np.mean(agree) > 0.9 and np.mean(shifted) > 0.05  # a label map one voxel off fails


def test_box_is_smaller_than_the_margin_crop_and_bucketed():
    low = np.array([[20.3, 21.0, 19.9]])
    high = np.array([[95.2, 93.0, 96.7]])
    size = window.box_size(np.floor(low), high, (146, 148, 146))
    assert size == (80, 80, 80) and all(s % window.BUCKET == 0 for s in size)
    assert window.box_size(np.zeros((1, 3)), np.full((1, 3), 145.0), (146, 146, 146)) == (147, 147, 147)
    with pytest.raises(ValueError, match="Compose"):
        window.warp_patches(A.Compose([A.RandomGamma()]), None, 1, (8, 8, 8))


def test_crop_box_pads_outside_and_views_inside():
    a = np.arange(24).reshape(2, 3, 4)
    inside = window.crop_box(a, (0, 1, 1), (2, 2, 2), -1, view=True)
    assert np.shares_memory(inside, a) and inside.tolist() == a[:, 1:3, 1:3].tolist()
    out = window.crop_box(a, (-1, 2, 3), (2, 2, 2), -1)
    assert out[0].tolist() == [[-1, -1], [-1, -1]] and out[1].tolist() == [[11, -1], [-1, -1]]


@agnostic
def test_window_reads_read_only_memory_maps_of_the_disk_cache(folder, tmp_path):
    """The boxes of a disk-cached case are views of read-only memory maps: the same patches, no torch warning."""
    import warnings

    def make(**kwargs):
        return VolumeDataset(folder, patch_size=12, batch_size=1, steps_per_epoch=2, seed=2,
                             augment=_pipeline(intensity=False), **kwargs)
    cached, plain = make(cache_dir=str(tmp_path)), make()
    cached.fill_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for index in range(len(cached)):
            x, y = cached[index]
            ref_x, ref_y = plain[index]
            np.testing.assert_array_equal(x, ref_x)
            np.testing.assert_array_equal(y, ref_y)


def test_box_nodes_give_the_extremes_of_the_points_over_every_voxel():
    """Affine + elastic (multilinear on each control cell): the points' min and max over a frame's voxels are
    reached at the control nodes and the frame's last voxels; a flip after the elastic warp breaks that."""
    from keras import ops

    from keras_medseg.data.augment import warp

    group = [A.RandomAffine(rotation=0.3, scaling=0.1, translation=1.0, seed=1),
             A.RandomElastic(magnitude=(1.0, 2.0), spacing=4, seed=2)]
    frame = (9, 7, 10)
    assert window.nodes_bound_points(group) and not window.nodes_bound_points(group + [A.RandomFlip(seed=3)])
    draws = warp.draw_group(group, 3, frame)
    active, params = [t for t, _, _ in draws], [(p, a) for _, p, a in draws]
    full = np.reshape(ops.convert_to_numpy(warp.compose_points(active, params, 3, frame)), (3, 3, -1))
    nodes = ops.convert_to_numpy(warp.compose_points(active, params, 3, frame, window.box_nodes(group, frame)))
    assert nodes.shape == (3, 3, 36)  # nodes {0, 4, 8} x {0, 4, 6} x {0, 4, 8, 9}
    np.testing.assert_allclose(nodes.min(-1), full.min(-1), atol=1e-4)
    np.testing.assert_allclose(nodes.max(-1), full.max(-1), atol=1e-4)


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (2, 1, 3, 0)])
def test_folded_affine_maps_equal_the_maps_chained_one_by_one(order):
    """`compose_points` multiplies runs of affine maps into one and turns the elastic control vectors instead
    of the field: the same points as mapping the grid through every transform in turn (with coins)."""
    from keras import ops

    from keras_medseg.data.augment import warp

    frame = (6, 6, 5)
    layers = [A.RandomFlip(probability=0.5, seed=1), A.RandomRotate90(axes=(0, 1), probability=0.5, seed=2),
              A.RandomAffine(rotation=0.3, scaling=0.1, translation=1.0, probability=0.7, seed=3),
              A.RandomElastic(magnitude=(1.0, 2.0), spacing=3, probability=0.7, seed=4)]
    group = [layers[k] for k in order]
    draws = warp.draw_group(group, 4, frame)
    points = ops.broadcast_to(warp.identity_points(frame), (4, 3, 6 * 6 * 5))
    for t, params, apply in reversed(draws):
        points = ops.where(ops.reshape(apply, (-1, 1, 1)), t.map_points(params, points, frame), points)
    folded = warp.compose_points([t for t, _, _ in draws], [(p, a) for _, p, a in draws], 4, frame)
    np.testing.assert_allclose(np.reshape(ops.convert_to_numpy(folded), (4, 3, -1)), ops.convert_to_numpy(points),
                               atol=1e-4)
