"""Surface metrics against an independent brute-force reference (scipy cdist over surface voxels)."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from keras_medseg.evaluation import segmentation_metrics
from keras_medseg.evaluation.surface import binary_surface_metrics, summarize_metrics


def _reference_surface(mask):
    """Surface by explicit face-neighbour shifts (outside the image counts as background)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = np.ones_like(padded)
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis=axis)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    return mask & ~inner[core]


def _reference(p, t, spacing, tol):
    sp, st = _reference_surface(p), _reference_surface(t)
    cp = np.argwhere(sp) * np.asarray(spacing)
    ct = np.argwhere(st) * np.asarray(spacing)
    dist = cdist(cp, ct)
    a, b = dist.min(axis=1), dist.min(axis=0)
    inter = (p & t).sum()
    return {
        "dice": 2 * inter / (p.sum() + t.sum()),
        "iou": inter / (p | t).sum(),
        "hd95": max(np.percentile(a, 95), np.percentile(b, 95)),
        "assd": np.concatenate([a, b]).mean(),
        "surface_dice": ((a <= tol).sum() + (b <= tol).sum()) / (a.size + b.size),
    }


def _ball(shape, centre, radius, spacing):
    g = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing)], indexing="ij")
    return sum(x ** 2 for x in g) <= radius ** 2


def _check(p, t, spacing, tol=1.0):
    got = binary_surface_metrics(p, t, spacing=spacing, tolerance=tol)
    want = _reference(p, t, spacing, tol)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6, err_msg=k)
    return got


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.9, 2.5)])
def test_spheres_at_known_offsets(spacing):
    shape = (30, 28, 14)
    t = _ball(shape, (14, 13, 7), 8.0, spacing)
    p = _ball(shape, (16, 12, 7.5), 7.0, spacing)
    got = _check(p, t, spacing, tol=1.5)
    assert 0 < got["dice"] < 1 and got["hd95"] > 0


def test_cubes_anisotropic_and_2d():
    t = np.zeros((20, 20, 10), bool)
    t[4:12, 5:13, 2:6] = True
    p = np.zeros_like(t)
    p[6:14, 5:13, 3:7] = True  # shifted by 2 voxels on axis 0 and 1 on axis 2
    got = _check(p, t, (0.5, 0.8, 3.0), tol=2.0)
    assert got["hd95"] <= np.hypot(2 * 0.5, 3.0) + 1e-9
    t2 = np.zeros((25, 31), bool)
    t2[3:15, 4:20] = True
    p2 = np.zeros_like(t2)
    p2[5:18, 2:19] = True
    _check(p2, t2, (0.6, 1.3))


def test_mask_touching_the_border_and_single_voxels():
    t = np.zeros((8, 8, 8), bool)
    t[:4, :, :3] = True
    p = np.zeros_like(t)
    p[1:5, 2:, :2] = True
    _check(p, t, (1.0, 2.0, 0.5))
    a = np.zeros((5, 5, 9), bool)
    b = np.zeros_like(a)
    a[1, 1, 1], b[1, 1, 7] = True, True
    got = binary_surface_metrics(a, b, spacing=(1, 1, 2.0))
    assert got["hd95"] == pytest.approx(12.0) and got["assd"] == pytest.approx(12.0)


def test_identical_and_empty_documented_values():
    t = _ball((12, 12, 12), (6, 6, 6), 4, (1, 1, 1))
    same = binary_surface_metrics(t, t)
    assert same == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0, "surface_dice": 1.0}
    empty = np.zeros_like(t)
    for p, g in ((empty, t), (t, empty)):
        m = binary_surface_metrics(p, g, spacing=(1, 1, 2))
        assert m == {"dice": 0.0, "iou": 0.0, "hd95": float("inf"), "assd": float("inf"), "surface_dice": 0.0}
    assert binary_surface_metrics(empty, empty)["dice"] == 1.0


def test_segmentation_metrics_per_class_and_ignore():
    spacing = (0.8, 0.8, 2.0)
    truth = np.zeros((24, 24, 10), np.int32)
    truth[_ball(truth.shape, (8, 8, 5), 5, spacing)] = 1
    truth[_ball(truth.shape, (16, 16, 5), 4, spacing)] = 3
    pred = np.zeros_like(truth)
    pred[_ball(truth.shape, (9, 8, 5), 5, spacing)] = 1
    pred[_ball(truth.shape, (16, 15, 4), 4, spacing)] = 3
    res = segmentation_metrics(pred, truth, spacing=spacing, tolerance=1.0)
    assert sorted(res) == ["1", "3"]
    for cid in (1, 3):
        want = _reference(pred == cid, truth == cid, spacing, 1.0)
        for k in want:
            np.testing.assert_allclose(res[str(cid)][k], want[k], atol=1e-6)
    named = segmentation_metrics(pred, truth, spacing=spacing, classes={1: "liver", 3: "tumour"})
    assert named["liver"] == res["1"]
    ignored = truth.copy()
    ignored[:, :, 0] = 255
    res_ig = segmentation_metrics(pred, ignored, spacing=spacing, ignore_index=255)
    assert "255" not in res_ig
    summary = summarize_metrics({"a": res, "b": segmentation_metrics(np.zeros_like(truth), truth, spacing=spacing)})
    assert summary["1"]["hd95"]["n"] == 2 and summary["1"]["hd95"]["n_infinite"] == 1
    assert summary["1"]["hd95"]["mean"] == pytest.approx(res["1"]["hd95"])


def test_metric_errors():
    with pytest.raises(ValueError, match="prediction.shape"):
        segmentation_metrics(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(np.zeros((3, 3)), np.zeros((3, 3)), spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="tolerance"):
        segmentation_metrics(np.zeros((3, 3)), np.zeros((3, 3)), tolerance=-1)
