"""Tests of the GAN demo sets in `keras_medseg.data.synthetic.translation` (NumPy only)."""

import numpy as np
import pytest
from skimage import data as skdata
from skimage.color import rgb2hed

from keras_medseg.data.synthetic import translation as T

pytestmark = pytest.mark.backend_agnostic


def test_labelled_shapes_shapes_range_and_balance():
    x, y = T.labelled_shapes(40, image_size=16, num_classes=4, seed=1)
    assert x.shape == (40, 16, 16, 1) and x.dtype == np.float32
    assert y.shape == (40,) and y.dtype == np.int32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert np.bincount(y).tolist() == [10, 10, 10, 10]
    # every image shows an object on a -1 background
    assert np.all(x.reshape(40, -1).max(axis=1) > 0.5)
    assert np.all(x[:, 0, 0, 0] < -0.9)


def test_labelled_shapes_classes_are_distinct():
    # the mean image of a disc and of a ring differ at the object centre
    x, y = T.labelled_shapes(10, image_size=33, num_classes=10, seed=0)
    grid = T._grid(33, 2)
    disc = T._shape_mask(0, (grid - 16.5) / 10.0)
    ring = T._shape_mask(3, (grid - 16.5) / 10.0)
    assert disc[16, 16] and not ring[16, 16] and ring[16, 26]
    assert disc.sum() > ring.sum()
    # two-dots class has two connected components
    from scipy import ndimage

    dots = T._shape_mask(9, (grid - 16.5) / 10.0)
    assert ndimage.label(dots)[1] == 2


def test_labelled_shapes_3d_and_channels():
    x, y = T.labelled_shapes(3, image_size=8, num_classes=3, channels=2, spatial_dims=3)
    assert x.shape == (3, 8, 8, 8, 2)
    np.testing.assert_array_equal(x[..., 0], x[..., 1])


def test_labelled_shapes_deterministic():
    a = T.labelled_shapes(5, image_size=8, seed=3)
    b = T.labelled_shapes(5, image_size=8, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_paired_shapes_are_paired_and_unpaired_are_not():
    a, b = T.paired_shapes(12, image_size=32, seed=0)
    assert a.shape == b.shape == (12, 32, 32, 1)
    assert set(np.unique(a)) <= {-1.0, 1.0}
    assert b.min() >= -1.0 and b.max() <= 1.0
    paired = [np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(12)]
    ua, ub = T.unpaired_shapes(12, image_size=32, seed=0)
    unpaired = [np.corrcoef(ua[i].ravel(), ub[i].ravel())[0, 1] for i in range(12)]
    assert min(paired) > 0.7
    assert np.mean(unpaired) < 0.5


def test_paired_shapes_3d():
    a, b = T.paired_shapes(2, image_size=8, spatial_dims=3)
    assert a.shape == b.shape == (2, 8, 8, 8, 1)


def test_ihc_stains_match_colour_deconvolution():
    h, dab = T.ihc_stains()
    hed = rgb2hed(skdata.immunohistochemistry())
    assert h.shape == dab.shape == (512, 512)
    assert h.min() == -1.0 and h.max() == 1.0
    # monotone rescaling of the rgb2hed channels: rank correlation ~ 1 where not clipped
    for stain, channel in ((h, 0), (dab, 2)):
        ref = hed[..., channel]
        inside = (stain > -1.0) & (stain < 1.0)
        lo, hi = np.percentile(ref, [0.5, 99.5])
        np.testing.assert_allclose(stain[inside], ((ref[inside] - lo) / (hi - lo)) * 2 - 1, atol=1e-5)


def _dihedral(img):
    for flip0 in (False, True):
        for flip1 in (False, True):
            for rot in range(4):
                out = img[::-1] if flip0 else img
                out = out[:, ::-1] if flip1 else out
                yield (flip0, flip1, rot), np.rot90(out, rot)


def test_paired_stains_are_the_same_crop_of_both_stains():
    h, dab = T.ihc_stains()
    a, b = T.paired_stains(3, patch_size=512, seed=5)
    assert a.shape == b.shape == (3, 512, 512, 1)
    for i in range(3):
        matches = [t for t, v in _dihedral(h) if np.array_equal(v, a[i, ..., 0])]
        assert matches
        transformed_dab = dict(_dihedral(dab))[matches[0]]
        np.testing.assert_array_equal(transformed_dab, b[i, ..., 0])


def test_unpaired_stains_shapes_and_independence():
    a, b = T.unpaired_stains(16, patch_size=32, seed=0)
    pa, pb = T.paired_stains(16, patch_size=32, seed=0)
    assert a.shape == b.shape == (16, 32, 32, 1)
    np.testing.assert_array_equal(a, pa)  # same crops of domain A, different B crops
    assert not np.array_equal(b, pb)


def test_translation_dataset_dispatch():
    a, b = T.translation_dataset("shapes", n=2, image_size=8, paired=True)
    assert a.shape == (2, 8, 8, 1)
    a, b = T.translation_dataset("stains", n=2, image_size=16, paired=False)
    assert b.shape == (2, 16, 16, 1)


def test_to_unit_range():
    np.testing.assert_allclose(T.to_unit_range(np.array([-2.0, -1.0, 0.0, 1.0])), [0.0, 0.0, 0.5, 1.0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_classes"):
        T.labelled_shapes(4, num_classes=11)
    with pytest.raises(ValueError, match="n"):
        T.labelled_shapes(0)
    with pytest.raises(ValueError, match="spatial_dims"):
        T.paired_shapes(2, spatial_dims=4)
    with pytest.raises(ValueError, match="patch_size"):
        T.paired_stains(2, patch_size=600)
    with pytest.raises(ValueError, match="kind"):
        T.translation_dataset("mnist")
    with pytest.raises(ValueError, match="spatial_dims"):
        T.translation_dataset("stains", spatial_dims=3)
