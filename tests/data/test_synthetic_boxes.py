"""Synthetic bright squares/cubes: the boxes are exact and the objects never overlap."""

import numpy as np
import pytest

from keras_medseg.data import synthetic_boxes


@pytest.mark.parametrize("shape", [(40, 48), (16, 20, 24)])
def test_boxes_match_the_bright_objects(shape):
    x, boxes = synthetic_boxes(6, image_shape=shape, num_objects=(1, 3), size_range=(3, 6), noise=0.0, seed=3)
    d = len(shape)
    assert x.shape == (6, *shape, 1) and x.dtype == np.float32
    assert len(boxes) == 6
    for img, b in zip(x, boxes):
        assert b.shape[1] == 2 * d and 1 <= len(b) <= 3
        mask = np.zeros(shape, bool)
        for box in b:
            c, s = box[:d][::-1], box[d:][::-1]  # (x, y[, z]) -> array-axis order
            lo, hi = (c - s / 2).astype(int), (c + s / 2).astype(int)
            np.testing.assert_array_equal(lo, c - s / 2)  # faces on voxel borders
            region = tuple(slice(a, e) for a, e in zip(lo, hi))
            assert np.all(img[(*region, 0)] == 1.0)
            assert not mask[region].any()  # no overlap
            mask[region] = True
        assert np.all(img[..., 0][~mask] == 0.0)  # nothing bright outside the boxes
        assert np.all(b[:, d:] >= 3) and np.all(b[:, d:] <= 6)


def test_isotropic_noise_and_seed():
    x1, b1 = synthetic_boxes(3, image_shape=(32, 32, 32), seed=5)
    x2, b2 = synthetic_boxes(3, image_shape=(32, 32, 32), seed=5)
    np.testing.assert_array_equal(x1, x2)
    for a, b in zip(b1, b2):
        np.testing.assert_array_equal(a, b)
        assert np.all(a[:, 3:] == a[:, 3:4])  # cubes
    assert 0.1 < float(np.std(x1[x1 < 0.5])) < 0.3


def test_bad_inputs():
    with pytest.raises(ValueError, match="image_shape"):
        synthetic_boxes(1, image_shape=(32,))
    with pytest.raises(ValueError, match="size_range"):
        synthetic_boxes(1, image_shape=(8, 8), size_range=(4, 12))
    with pytest.raises(ValueError, match="num_objects"):
        synthetic_boxes(1, image_shape=(16, 16), num_objects=(3, 1))
    with pytest.raises(ValueError, match="num_objects"):
        synthetic_boxes(1, image_shape=(8, 8), num_objects=5, size_range=(6, 6))
    with pytest.raises(ValueError, match="n"):
        synthetic_boxes(0)
