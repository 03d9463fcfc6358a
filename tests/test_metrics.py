"""Dice/IoU: NumPy table vs scikit-learn, streaming MeanDice vs the table."""

import keras
import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score

from keras_medseg.metrics import MeanDice, dice_iou_table, format_table, segmentation_metrics, to_labels

pytestmark = pytest.mark.backend_agnostic


def _random_labels(rng, shape, k):
    return rng.integers(0, k, size=shape)


def test_table_matches_sklearn(rng):
    y_true = _random_labels(rng, (3, 10, 12), 4)
    y_pred = np.where(rng.random((3, 10, 12)) < 0.7, y_true, _random_labels(rng, (3, 10, 12), 4))
    t = dice_iou_table(y_true, y_pred, num_classes=4)
    labels = [0, 1, 2, 3]
    np.testing.assert_allclose(t["iou"], jaccard_score(y_true.ravel(), y_pred.ravel(), labels=labels, average=None))
    np.testing.assert_allclose(t["dice"], f1_score(y_true.ravel(), y_pred.ravel(), labels=labels, average=None))
    assert t["mean_iou"] == pytest.approx(jaccard_score(y_true.ravel(), y_pred.ravel(), average="macro"))
    assert t["mean_dice"] == pytest.approx(f1_score(y_true.ravel(), y_pred.ravel(), average="macro"))
    assert t["accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    np.testing.assert_array_equal(t["support"], np.bincount(y_true.ravel(), minlength=4))
    np.testing.assert_allclose(t["dice"], 2 * t["iou"] / (1 + t["iou"]))


def test_table_accepts_scores_and_absent_class(rng):
    y_true = np.array([[0, 1, 1, 0]])
    scores = np.zeros((1, 4, 3))
    scores[0, [0, 1, 2, 3], [0, 1, 0, 0]] = 1.0
    t = dice_iou_table(y_true, scores, num_classes=3)
    np.testing.assert_allclose(t["iou"][:2], [2 / 3, 1 / 2])
    assert np.isnan(t["iou"][2]) and np.isnan(t["dice"][2])
    assert t["mean_iou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    sig = np.array([[[0.2], [0.9], [0.4], [0.1]]])
    np.testing.assert_array_equal(to_labels(sig), [[0, 1, 0, 0]])


def test_table_errors():
    with pytest.raises(ValueError, match="y_pred"):
        dice_iou_table(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="y_true"):
        dice_iou_table(np.array([0, 5]), np.array([0, 1]), num_classes=3)


def test_format_table_side_by_side(rng):
    y = _random_labels(rng, (2, 5, 5), 3)
    text = format_table({"imexnet": dice_iou_table(y, y, 3), "resnet": dice_iou_table(y, (y + 1) % 3, 3)})
    lines = text.splitlines()
    assert "imexnet IoU" in lines[0] and "resnet Dice" in lines[0]
    assert lines[-2].startswith("mean") and "1.000" in lines[-2] and "0.000" in lines[-2]


def test_mean_dice_metric_matches_table(rng):
    y_true = _random_labels(rng, (4, 6, 6), 3)
    scores = rng.random((4, 6, 6, 3)).astype("float32")
    m = MeanDice(num_classes=3)
    m.update_state(y_true[:2], scores[:2])
    m.update_state(y_true[2:], scores[2:])
    t = dice_iou_table(y_true, scores, 3)
    assert float(m.result()) == pytest.approx(t["mean_dice"], rel=1e-5)
    iou = keras.metrics.MeanIoU(num_classes=3, sparse_y_pred=False)
    iou.update_state(y_true, scores)
    assert float(iou.result()) == pytest.approx(t["mean_iou"], rel=1e-5)


def test_mean_dice_binary_threshold_and_config(rng):
    y_true = rng.integers(0, 2, size=(3, 5, 5))
    prob = rng.random((3, 5, 5, 1)).astype("float32")
    m = MeanDice(num_classes=2, threshold=0.5)
    m.update_state(y_true, prob)
    t = dice_iou_table(y_true, (prob[..., 0] > 0.5).astype(int), 2)
    assert float(m.result()) == pytest.approx(t["mean_dice"], rel=1e-5)
    m2 = MeanDice.from_config(m.get_config())
    assert m2.threshold == 0.5 and m2.num_classes == 2


def test_segmentation_metrics_names():
    assert [m.name for m in segmentation_metrics(1)] == ["accuracy", "mean_iou", "mean_dice"]
    assert [m.name for m in segmentation_metrics(4)] == ["accuracy", "mean_iou", "mean_dice"]
