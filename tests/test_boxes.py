"""Box utilities against independent NumPy formulas (2D and 3D)."""

import numpy as np
import pytest
from keras import ops

from keras_medseg import boxes as B

pytestmark = pytest.mark.backend_agnostic


def random_boxes(rng, n, d, extent=20.0):
    centres = rng.uniform(0, extent, size=(n, d))
    sizes = rng.uniform(1.0, extent / 2, size=(n, d))
    return np.concatenate([centres, sizes], axis=1)


def iou_reference(a, b):
    """Pairwise IoU of centre-format boxes by explicit per-axis overlap loops."""
    d = a.shape[1] // 2
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            inter, vp, vq = 1.0, 1.0, 1.0
            for k in range(d):
                lo = max(p[k] - p[d + k] / 2, q[k] - q[d + k] / 2)
                hi = min(p[k] + p[d + k] / 2, q[k] + q[d + k] / 2)
                inter *= max(hi - lo, 0.0)
                vp *= p[d + k]
                vq *= q[d + k]
            out[i, j] = inter / (vp + vq - inter)
    return out


def nms_reference(bx, scores, thr):
    order = np.argsort(-scores, kind="stable")
    iou = iou_reference(bx, bx)
    kept = []
    for i in order:
        if all(iou[i, j] <= thr for j in kept):
            kept.append(i)
    return np.array(kept, dtype=int)


@pytest.mark.parametrize("d", [2, 3])
def test_convert_format_values_and_round_trip(d, rng):
    c = random_boxes(rng, 7, d)
    corners = np.asarray(ops.convert_to_numpy(B.convert_format(c, "center", "corners")))
    np.testing.assert_allclose(corners[:, :d], c[:, :d] - c[:, d:] / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(corners[:, d:], c[:, :d] + c[:, d:] / 2, rtol=1e-5, atol=1e-5)
    back = np.asarray(ops.convert_to_numpy(B.convert_format(corners, "corners", "center")))
    np.testing.assert_allclose(back, c, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("d", [2, 3])
def test_iou_matches_numpy_reference(d, rng):
    a, b = random_boxes(rng, 9, d), random_boxes(rng, 6, d)
    got = np.asarray(ops.convert_to_numpy(B.compute_iou(a, b)))
    assert got.shape == (9, 6)
    np.testing.assert_allclose(got, iou_reference(a, b), rtol=1e-4, atol=1e-6)
    assert got.max() > 0.0  # the random sets do overlap somewhere


def test_iou_hand_computed_2d_and_3d():
    got2 = ops.convert_to_numpy(B.compute_iou([[0, 0, 2, 2]], [[1, 0, 3, 2]], box_format="corners"))
    np.testing.assert_allclose(got2, [[2.0 / 6.0]], rtol=1e-6)
    a = [[0, 0, 0, 2, 2, 2]]
    b = [[1, 1, 1, 3, 3, 3]]  # overlap 1 voxel of volume 1, union 8 + 8 - 1
    got3 = ops.convert_to_numpy(B.compute_iou(a, b, box_format="corners"))
    np.testing.assert_allclose(got3, [[1.0 / 15.0]], rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(B.compute_iou(a, a, box_format="corners")), [[1.0]])


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("thr", [0.1, 0.25])
def test_nms_matches_numpy_reference(d, thr, rng):
    bx = random_boxes(rng, 40, d, extent=30.0 if d == 2 else 6.0)
    scores = rng.permutation(40) / 40.0 + 0.01  # distinct scores
    kept, kept_scores = B.non_max_suppression(bx, scores, iou_threshold=thr, max_detections=100)
    ref = nms_reference(bx, scores, thr)
    assert 1 < len(ref) < 40
    np.testing.assert_allclose(kept_scores, scores[ref], rtol=1e-6)
    np.testing.assert_allclose(kept, bx[ref], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("thr", [0.1, 0.3, 0.5])
def test_nms_2d_matches_keras_cv(thr, rng):
    """The one N-D keras.ops NMS gives keras-cv's 2D NonMaxSuppression result (TF backend)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("keras-cv's NMS layer is compared once, on TensorFlow")
    pytest.importorskip("keras_cv")
    bx = random_boxes(rng, 30, 2, extent=30.0)
    scores = rng.permutation(30) / 30.0 + 0.01
    kept, kept_scores = B.non_max_suppression(bx, scores, iou_threshold=thr)
    kcv, kcv_scores = B.non_max_suppression(bx, scores, iou_threshold=thr, implementation="keras_cv")
    assert 1 < len(kept) < 30
    np.testing.assert_allclose(kept_scores, kcv_scores, rtol=1e-6)
    np.testing.assert_allclose(kept, kcv, rtol=1e-4, atol=1e-4)


def test_iou_nd_matches_keras_2d(rng):
    """The N-D keras.ops IoU used by NMS equals keras.utils.bounding_boxes' 2D IoU."""
    c = np.asarray(ops.convert_to_numpy(B.convert_format(random_boxes(rng, 12, 2), "center", "corners")))
    ours = ops.convert_to_numpy(B._iou_corners(ops.convert_to_tensor(c), ops.convert_to_tensor(c)))
    theirs = ops.convert_to_numpy(B.compute_iou(c, c, box_format="corners"))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_nms_score_threshold_and_max_detections():
    bx = np.array([[5, 5, 5, 4, 4, 4], [5, 5, 6, 4, 4, 4], [20, 20, 20, 4, 4, 4], [40, 40, 40, 2, 2, 2]],
                  dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.2])
    kept, s = B.non_max_suppression(bx, scores, iou_threshold=0.5, score_threshold=0.5)
    np.testing.assert_allclose(s, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_allclose(kept, bx[[0, 2]])
    kept, s = B.non_max_suppression(bx, scores, iou_threshold=0.5, max_detections=1)
    assert kept.shape == (1, 6)
    kept, s = B.non_max_suppression(bx, scores, score_threshold=0.95)
    assert kept.shape == (0, 6) and s.shape == (0,)


def test_greedy_nms_on_hand_matrix():
    iou = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.7], [0.0, 0.7, 1.0]], "float32")
    # box 1 is suppressed by box 0, so box 2 survives (greedy, not "any overlap")
    np.testing.assert_array_equal(ops.convert_to_numpy(B.greedy_nms(iou, 0.5)), [1.0, 0.0, 1.0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="boxes"):
        B.convert_format(np.zeros((3, 5)), "center", "corners")
    with pytest.raises(ValueError, match="box_format"):
        B.convert_format(np.zeros((3, 4)), "xywh", "corners")
    with pytest.raises(ValueError, match="boxes1"):
        B.compute_iou(np.zeros((3, 4)), np.zeros((3, 6)))
    with pytest.raises(ValueError, match="iou_threshold"):
        B.non_max_suppression(np.zeros((3, 6)), np.zeros(3), iou_threshold=1.5)
    with pytest.raises(ValueError, match="scores"):
        B.non_max_suppression(np.zeros((3, 6)), np.zeros(2))
    with pytest.raises(ValueError, match="max_detections"):
        B.non_max_suppression(np.zeros((3, 6)), np.zeros(3), max_detections=0)
    with pytest.raises(ValueError, match="implementation"):
        B.non_max_suppression(np.zeros((3, 4)), np.zeros(3), implementation="torchvision")
    with pytest.raises(ValueError, match="implementation='keras_cv'"):
        B.non_max_suppression(np.zeros((3, 6)), np.zeros(3), implementation="keras_cv")
