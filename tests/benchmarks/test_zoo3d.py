"""benchmarks/zoo3d.py: the MNI152 tissue task, the held-out split, patches, Dice and the work count."""

import keras
import numpy as np
import pytest
import zoo3d
from _common import dice

pytest.importorskip("nilearn")


def test_tissue_labels_and_hemispheres():
    image, labels = zoo3d.tissue_volume()
    assert image.shape == labels.shape == (99, 117, 95)
    counts = np.bincount(labels.ravel(), minlength=4)
    assert counts.shape == (4,) and np.all(counts > 10_000)  # every tissue is present
    (xl, yl), (xr, yr) = zoo3d.hemispheres(image, labels)
    assert xl.shape[0] + xr.shape[0] == image.shape[0] - 1  # the midline slice is in neither half
    np.testing.assert_array_equal(yl, labels[:zoo3d.SPLIT])
    np.testing.assert_array_equal(yr, labels[zoo3d.SPLIT + 1:])
    for y in (yl, yr):
        assert set(np.unique(y)) == {0, 1, 2, 3}


def test_patches_come_from_the_given_half_only():
    image = np.arange(20 * 18 * 16, dtype="float32").reshape(20, 18, 16)
    labels = (image % 4).astype("int32")
    batches = zoo3d.patch_batches(image, labels, steps=3, batch=2, patch=8, noise=0.0)
    assert len(batches) == 3
    for x, y in batches:
        assert x.shape == (2, 8, 8, 8, 1) and y.shape == (2, 8, 8, 8)
        for xi, yi in zip(x[..., 0], y):
            corner = np.unravel_index(int(xi[0, 0, 0]), image.shape)
            sl = tuple(slice(c, c + 8) for c in corner)
            np.testing.assert_array_equal(xi, image[sl])
            np.testing.assert_array_equal(yi, labels[sl])


def test_dice_per_class_matches_the_pooled_dice(rng):
    t = rng.integers(0, 4, (6, 7, 5))
    p = rng.integers(0, 4, (6, 7, 5))
    assert zoo3d.dice_per_class(t, p) == pytest.approx([dice(t == c, p == c) for c in (1, 2, 3)])


def test_forward_flops_of_a_conv_model():
    inputs = keras.Input((8, 8, 8, 2))
    x = keras.layers.Conv3D(4, 3, padding="same")(inputs)
    x = keras.layers.Conv3DTranspose(3, 2, strides=2)(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    want = 2 * 27 * 2 * 4 * 8 ** 3 + 2 * 8 * 4 * 3 * 8 ** 3 + 2 * 3 * 5 * 16 ** 3
    assert zoo3d.forward_flops(model, 8) == want
