"""Detection FROC against hand-computed cases and a brute-force reference."""

import numpy as np
import pytest

from keras_medseg.evaluation.detection import detection_froc

pytestmark = pytest.mark.backend_agnostic


def _case_2d():
    gt = [np.array([[5.0, 5.0, 4.0, 4.0]]), np.array([[20.0, 20.0, 4.0, 4.0], [40.0, 40.0, 6.0, 6.0]])]
    pred = [
        np.array([[5.0, 5.0, 4.0, 4.0], [30.0, 30.0, 4.0, 4.0]]),  # exact hit (0.9); far away FP (0.7)
        # IoU 12/20 = 0.6 with B (0.8); IoU 8/24 = 1/3 with B but centre on B's border (0.6); exact C (0.3)
        np.array([[21.0, 20.0, 4.0, 4.0], [22.0, 20.0, 4.0, 4.0], [40.0, 40.0, 6.0, 6.0]]),
    ]
    scores = [np.array([0.9, 0.7]), np.array([0.8, 0.6, 0.3])]
    return pred, scores, gt


def test_hand_computed_2d_iou():
    c = detection_froc(*_case_2d(), hit="iou", iou_threshold=0.5)
    np.testing.assert_allclose(c.thresholds, [np.inf, 0.9, 0.8, 0.7, 0.6, 0.3])
    np.testing.assert_allclose(c.avg_fp, [0, 0, 0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(c.sensitivity, [0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1.0])


def test_hand_computed_2d_centre_and_lower_iou():
    c = detection_froc(*_case_2d(), hit="centre")
    np.testing.assert_allclose(c.avg_fp, [0, 0, 0, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(c.sensitivity, [0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1.0])
    c = detection_froc(*_case_2d(), iou_threshold=0.3)  # the 1/3-IoU box now hits B too
    np.testing.assert_allclose(c.avg_fp, [0, 0, 0, 0.5, 0.5, 0.5])


def test_hand_computed_3d_duplicates_and_empty_image():
    gt = [np.array([[0.0, 0.0, 0.0, 4.0, 4.0, 4.0]]), np.zeros((0, 6))]
    # IoU 27 / 101 = 0.267 with the cube; its centre (3, 3, 3) lies inside; a duplicate exact hit
    pred = [np.array([[1.0, 1.0, 1.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 4.0, 4.0, 4.0]]),
            np.array([[10.0, 10.0, 10.0, 12.0, 12.0, 12.0]])]
    scores = [np.array([0.9, 0.5]), np.array([0.7])]
    c = detection_froc(pred, scores, gt, box_format="corners", iou_threshold=0.5)
    np.testing.assert_allclose(c.thresholds, [np.inf, 0.9, 0.7, 0.5])
    np.testing.assert_allclose(c.avg_fp, [0, 0.5, 1.0, 1.0])  # 2 images in the average
    np.testing.assert_allclose(c.sensitivity, [0, 0, 0, 1.0])
    c = detection_froc(pred, scores, gt, box_format="corners", iou_threshold=0.25)
    np.testing.assert_allclose(c.avg_fp, [0, 0, 0.5, 0.5])  # duplicates of one box are not FPs
    np.testing.assert_allclose(c.sensitivity, [0, 1, 1, 1])
    c = detection_froc(pred, scores, gt, box_format="corners", hit="centre", thresholds=[0.8])
    np.testing.assert_allclose(c.avg_fp, [0.0])
    np.testing.assert_allclose(c.sensitivity, [1.0])


def _iou(a, b):
    d = len(a) // 2
    inter = np.prod([max(min(a[k] + a[d + k] / 2, b[k] + b[d + k] / 2)
                         - max(a[k] - a[d + k] / 2, b[k] - b[d + k] / 2), 0) for k in range(d)])
    return inter / (np.prod(a[d:]) + np.prod(b[d:]) - inter)


@pytest.mark.parametrize("d", [2, 3])
def test_matches_brute_force_on_random_data(d, rng):
    gts, preds, scores = [], [], []
    for _ in range(5):
        k = int(rng.integers(0, 4))
        g = np.concatenate([rng.uniform(0, 20, (k, d)), rng.uniform(2, 8, (k, d))], 1)
        p = np.concatenate([rng.uniform(0, 20, (6, d)), rng.uniform(2, 8, (6, d))], 1)
        p[:len(g)] = g + rng.normal(0, 0.7, g.shape)  # near misses and hits
        gts.append(g), preds.append(p), scores.append(rng.uniform(0, 1, 6))
    gts[0] = np.concatenate([gts[0], [[5.0] * d + [4.0] * d]])
    c = detection_froc(preds, scores, gts, iou_threshold=0.5)
    for t, fp, sens in zip(c.thresholds, c.avg_fp, c.sensitivity):
        n_fp, found = 0, 0
        for p, s, g in zip(preds, scores, gts):
            kept = [b for b, sc in zip(p, s) if sc >= t]
            n_fp += sum(1 for b in kept if not any(_iou(b, q) >= 0.5 for q in g))
            found += sum(1 for q in g if any(_iou(b, q) >= 0.5 for b in kept))
        assert fp == pytest.approx(n_fp / 5)
        assert sens == pytest.approx(found / sum(len(g) for g in gts))
    assert c.sensitivity[-1] > 0 and c.avg_fp[-1] > 0


def test_bad_inputs():
    pred, scores, gt = _case_2d()
    with pytest.raises(ValueError, match="pred_boxes"):
        detection_froc(pred[:1], scores, gt)
    with pytest.raises(ValueError, match="pred_scores"):
        detection_froc(pred, [scores[0], scores[1][:2]], gt)
    with pytest.raises(ValueError, match="hit"):
        detection_froc(pred, scores, gt, hit="center of mass")
    with pytest.raises(ValueError, match="iou_threshold"):
        detection_froc(pred, scores, gt, iou_threshold=0.0)
    with pytest.raises(ValueError, match="gt_boxes"):
        detection_froc(pred, scores, [np.zeros((0, 4)), np.zeros((0, 4))])
    with pytest.raises(ValueError, match="pred_boxes"):
        detection_froc([np.zeros((2, 6)), pred[1]], scores, gt)
    with pytest.raises(ValueError, match="pred_scores"):
        detection_froc(pred, [np.array([0.9, np.nan]), scores[1]], gt)
    with pytest.raises(TypeError, match="gt_boxes"):
        detection_froc(pred, scores, "boxes")
