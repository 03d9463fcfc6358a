"""Q-tips generator: shapes, values, statistics, determinism, PyDataset."""

import math

import numpy as np
import pytest

from keras_medseg.data import QtipsDataset, normalize_qtips, qtips, qtips_dataset
from keras_medseg.data.synthetic.qtips import BACKGROUND, BRIGHT, DARK, ROD

pytestmark = pytest.mark.backend_agnostic


@pytest.fixture(scope="module")
def sample():
    return qtips(300, seed=3, return_params=True)


def test_shapes_and_dtypes(sample):
    images, labels, _ = sample
    assert images.shape == (300, 64, 64, 1) and images.dtype == np.float32
    assert labels.shape == (300, 64, 64) and labels.dtype == np.int32


def test_values_are_the_reference_intensities(sample):
    images, labels, _ = sample
    assert set(np.unique(images)) <= {BACKGROUND, ROD, BRIGHT, DARK}
    assert np.all(images[labels == 0] == BACKGROUND)
    assert np.all(images[labels > 0] != BACKGROUND)
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_one_class_per_image_and_markers_match_class(sample):
    images, labels, params = sample
    for img, lab, cls in zip(images[..., 0], labels, params["class_id"]):
        classes = np.unique(lab[lab > 0])
        assert classes.tolist() == [cls]
        bright = int(np.sum(img == BRIGHT))
        dark = int(np.sum(img == DARK))
        # each end has a 2x2 marker (4 pixels of the rotated template, give or
        # take rasterisation of the tilted square)
        expected_bright = {1: 8, 2: 4, 3: 0}[cls]
        expected_dark = {1: 0, 2: 4, 3: 8}[cls]
        assert abs(bright - expected_bright) <= 3 and abs(dark - expected_dark) <= 3
        if cls == 1:
            assert dark == 0
        if cls == 3:
            assert bright == 0


def test_statistics_class_balance_and_lengths(sample):
    _, labels, params = sample
    counts = np.bincount(params["class_id"], minlength=4)[1:]
    assert counts.sum() == 300
    assert np.all(np.abs(counts / 300 - 1 / 3) < 0.08)  # uniform over the 3 classes
    assert params["length"].min() >= 32 and params["length"].max() <= 60
    assert params["length"].min() <= 34 and params["length"].max() >= 58  # covers the range
    assert np.all((params["theta"] >= 0) & (params["theta"] < math.pi))
    assert params["theta"].max() - params["theta"].min() > 0.9 * math.pi
    # rod area ~ width 2 x length
    area = (labels > 0).sum(axis=(1, 2))
    np.testing.assert_allclose(area, 2 * params["length"], rtol=0.2)


def test_rod_extent_matches_length(sample):
    _, labels, params = sample
    for lab, length in zip(labels[:50], params["length"][:50]):
        pts = np.argwhere(lab > 0).astype(float)
        extent = np.max(np.linalg.norm(pts[:, None] - pts[None], axis=-1))
        assert length - 3 <= extent <= length + 2


def test_deterministic_per_seed():
    a = qtips(5, seed=11)
    b = qtips(5, seed=11)
    c = qtips(5, seed=12)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_normalize():
    raw, _ = qtips(2, seed=0)
    norm, _ = qtips(2, seed=0, normalize=True)
    np.testing.assert_allclose(norm, (raw - 127.5) / 127.5, rtol=1e-6)
    np.testing.assert_allclose(normalize_qtips(raw), norm)
    assert norm.min() >= -1 and norm.max() <= 1


def test_other_size():
    images, labels = qtips(4, size=32, seed=0)
    assert images.shape == (4, 32, 32, 1) and labels.shape == (4, 32, 32)


def test_pydataset():
    ds = qtips_dataset(10, batch_size=4, seed=1)
    assert isinstance(ds, QtipsDataset)
    assert len(ds) == 3
    x, y = ds[2]
    assert x.shape == (2, 64, 64, 1) and y.shape == (2, 64, 64)
    ref_x, ref_y = qtips(10, seed=1, normalize=True)
    np.testing.assert_array_equal(ds[0][0], ref_x[:4])
    with pytest.raises(IndexError, match="index"):
        ds[3]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": 2, "size": 8}, "size"),
        ({"n": 2, "length_range": (10, 5)}, "length_range"),
        ({"n": 2, "length_range": (32, 62)}, "length_range"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        qtips(**kwargs)
