"""`metrics.confusion_matrix` / `MeanIoU` / `MeanDice` against scikit-learn and Keras' own MeanIoU."""

import keras
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from keras_medseg import metrics

pytestmark = pytest.mark.backend_agnostic


def test_confusion_matrix_equals_sklearn_with_weights_and_out_of_range_ids(rng):
    y_true = rng.integers(-1, 5, (3, 7, 9))  # -1 and 4 lie outside 0..3: counted nowhere
    y_pred = rng.integers(0, 5, (3, 7, 9))
    w = rng.random((3, 7, 9)).astype("float32")
    got = keras.ops.convert_to_numpy(metrics.confusion_matrix(y_true, y_pred, 4, w.reshape(-1)))
    keep = (y_true >= 0) & (y_true < 4) & (y_pred < 4)
    want = sk_confusion_matrix(y_true[keep], y_pred[keep], labels=range(4), sample_weight=w[keep])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ignore_class", [None, 2])
def test_mean_iou_equals_keras_mean_iou(rng, ignore_class):
    ours = metrics.MeanIoU(num_classes=3, sparse_y_pred=False, ignore_class=ignore_class)
    ref = keras.metrics.MeanIoU(num_classes=3, sparse_y_pred=False, ignore_class=ignore_class)
    for _ in range(2):
        y_true = rng.integers(0, 3, (2, 6, 6))
        y_pred = rng.random((2, 6, 6, 3)).astype("float32")
        ours.update_state(y_true, y_pred)
        ref.update_state(y_true, y_pred)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours.total_cm), keras.ops.convert_to_numpy(ref.total_cm))
    np.testing.assert_allclose(float(ours.result()), float(ref.result()), rtol=1e-6)


def test_mean_dice_matches_numpy_table_and_survives_serialisation(rng):
    y_true = rng.integers(0, 3, (2, 8, 8))
    scores = rng.random((2, 8, 8, 3)).astype("float32")
    m = metrics.MeanDice(num_classes=3)
    m.update_state(y_true, scores)
    table = metrics.dice_iou_table(y_true, scores.argmax(-1), num_classes=3)
    np.testing.assert_allclose(float(m.result()), np.nanmean(table["dice"]), rtol=1e-5)
    clone = keras.metrics.deserialize(keras.metrics.serialize(metrics.MeanIoU(num_classes=3)))
    assert isinstance(clone, metrics.MeanIoU)
