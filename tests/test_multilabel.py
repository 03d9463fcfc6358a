"""Multi-label (sigmoid, overlapping regions) losses, metric, table and region masks.

References: NumPy formulas for the losses, central differences for their
gradients, `sklearn.metrics.f1_score` / `jaccard_score` per channel for the
metric and the table.
"""

import keras
import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score

from keras_medseg import losses as L
from keras_medseg import metrics as M
from keras_medseg.data import BRATS_REGIONS, merge_regions, regions_from_labels
from tests.testing import check_op_gradients

pytestmark = pytest.mark.backend_agnostic


def _case(shape, regions, seed):
    rng = np.random.default_rng(seed)
    masks = (rng.random(shape + (regions,)) < 0.4).astype("float32")
    logits = rng.standard_normal(shape + (regions,)).astype("float32")
    return masks, logits, (1.0 / (1.0 + np.exp(-logits))).astype("float32")


def np_dice_loss(t, p, w=None, batch=False, s=1e-5):
    n, r = t.shape[0], t.shape[-1]
    t, p = t.reshape(n, -1, r).astype("float64"), p.reshape(n, -1, r).astype("float64")
    w = np.ones(t.shape[:2] + (1,)) if w is None else w.reshape(n, -1, 1)
    axes = (0, 1) if batch else 1
    tp, fp, fn = (np.sum(a, axis=axes) for a in (t * p * w, (1 - t) * p * w, t * (1 - p) * w))
    loss = 1 - np.mean((2 * tp + s) / (2 * tp + fp + fn + s), axis=-1)
    return np.full(n, loss) if batch else loss


def np_bce(t, p, w=None):
    n, r = t.shape[0], t.shape[-1]
    t, p = t.reshape(n, -1, r).astype("float64"), np.clip(p.reshape(n, -1, r).astype("float64"), 1e-7, 1 - 1e-7)
    term = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(-1)
    w = np.ones(term.shape) if w is None else w.reshape(n, -1)
    return (term * w).sum(1) / np.maximum((w > 0).sum(1), 1e-12)


@pytest.mark.parametrize("shape", [(2, 6, 7), (2, 3, 4, 5)])
@pytest.mark.parametrize("batch", [False, True])
def test_dice_and_crossentropy_match_numpy(shape, batch):
    t, logits, p = _case(shape, 3, seed=len(shape))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(L.multilabel_dice_loss(t, p, batch_dice=batch)),
                               np_dice_loss(t, p, batch=batch), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(L.multilabel_dice_loss(t, logits, batch_dice=batch,
                                                                                 from_logits=True)),
                               np_dice_loss(t, p, batch=batch), rtol=1e-5, atol=1e-6)
    for scores, from_logits in ((p, False), (logits, True)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(L.multilabel_crossentropy(t, scores, from_logits)),
                                   np_bce(t, p), rtol=1e-5)
    # the loss objects reduce the per-sample values with Keras' mean; Dice + CE is their weighted sum
    combined = L.MultiLabelDiceCELoss(dice_weight=0.7, ce_weight=0.3, batch_dice=batch)(t, p)
    np.testing.assert_allclose(float(combined), np.mean(0.7 * np_dice_loss(t, p, batch=batch) + 0.3 * np_bce(t, p)),
                               rtol=1e-5)


def test_overlapping_regions_perfect_and_empty():
    labels = np.array([[[0, 1, 2], [4, 4, 0]]])  # (1, 2, 3): every BraTS class
    masks = regions_from_labels(labels).astype("float32")
    assert masks.shape == (1, 2, 3, 3) and masks.sum(-1).max() == 3  # an enhancing voxel is in all three
    np.testing.assert_allclose(float(L.MultiLabelDiceLoss()(masks, masks)), 0.0, atol=1e-6)
    empty = np.zeros_like(masks)
    np.testing.assert_allclose(float(L.MultiLabelDiceLoss()(empty, empty)), 0.0, atol=1e-6)  # nothing to find
    assert float(L.MultiLabelDiceLoss()(masks, 1.0 - masks)) > 0.99


def test_voxel_weights_leave_voxels_out():
    t, _, p = _case((2, 5, 6), 2, seed=3)
    keep = np.ones((2, 5, 6), "float32")
    keep[:, :2] = 0.0
    for fn, ref in ((L.multilabel_dice_loss, np_dice_loss), (L.multilabel_crossentropy, np_bce)):
        got = keras.ops.convert_to_numpy(fn(t, p, voxel_weight=keep))
        np.testing.assert_allclose(got, ref(t[:, 2:], p[:, 2:]), rtol=1e-5, atol=1e-6)
    # a label-map-shaped sample_weight goes to the voxels, a per-sample one to Keras' reduction
    loss = L.MultiLabelDiceCELoss()
    np.testing.assert_allclose(float(loss(t, p, sample_weight=keep)), float(loss(t[:, 2:], p[:, 2:])), rtol=1e-5)
    per_sample = float(loss(t, p, sample_weight=np.array([1.0, 0.0], "float32")))
    np.testing.assert_allclose(per_sample, float(loss(t[:1], p[:1])) / 2, rtol=1e-5)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    t = (rng.random((2, 4, 3, 2)) < 0.5).astype("float64")
    logits = rng.standard_normal((2, 4, 3, 2))
    for fn in (lambda x: L.multilabel_dice_loss(t, x, from_logits=True),
               lambda x: L.multilabel_crossentropy(t, x, from_logits=True),
               lambda x: L.multilabel_dice_loss(t, keras.ops.sigmoid(x), batch_dice=True)):
        errors = check_op_gradients(fn, logits)
        assert errors[0] < 1e-5, errors


def test_loss_refuses_a_label_map_and_round_trips_its_config():
    t, _, p = _case((2, 4, 4), 3, seed=1)
    with pytest.raises(ValueError, match="regions_from_labels"):
        L.MultiLabelDiceCELoss()(np.zeros((2, 4, 4, 1), "int32"), p)
    with pytest.raises(ValueError, match="y_pred"):
        L.multilabel_dice_loss(t[:, 0], p[:, 0])
    loss = L.MultiLabelDiceCELoss(dice_weight=2.0, ce_weight=0.5, batch_dice=True, from_logits=True)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is L.MultiLabelDiceCELoss
    assert (again.dice_weight, again.ce_weight, again.batch_dice, again.from_logits) == (2.0, 0.5, True, True)
    with pytest.raises(ValueError, match="smooth"):
        L.MultiLabelDiceLoss(smooth=-1.0)


def test_metric_matches_sklearn_per_region_over_batches():
    t, _, p = _case((6, 5, 4), 3, seed=5)
    t[:, ..., 2] = 0.0  # region 2: absent from the target ...
    p[:, ..., 2] = 0.1  # ... and from the prediction: left out of the mean
    weights = np.array([1, 0, 1, 1, 0, 1], "float32")
    metric = M.MultiLabelDice(3)
    per_region = [M.MultiLabelDice(3, region=r) for r in range(3)]
    for lo, hi in ((0, 4), (4, 6)):
        for m in [metric] + per_region:
            m.update_state(t[lo:hi], p[lo:hi], sample_weight=weights[lo:hi])
    keep = weights.astype(bool)
    ref = [f1_score(t[keep][..., r].ravel(), p[keep][..., r].ravel() > 0.5) for r in range(2)]
    np.testing.assert_allclose(float(metric.result()), np.mean(ref), rtol=1e-5)
    for r in range(2):
        np.testing.assert_allclose(float(per_region[r].result()), ref[r], rtol=1e-5)
    assert float(per_region[2].result()) == 1.0  # nothing to find, nothing found
    got = keras.ops.convert_to_numpy(metric.per_region())
    np.testing.assert_allclose(got[:2], ref, rtol=1e-5)
    assert np.isnan(got[2])
    metric.reset_state()
    assert float(metric.result()) == 0.0
    again = M.MultiLabelDice.from_config(per_region[1].get_config())
    assert (again.num_regions, again.region, again.threshold) == (3, 1, 0.5)
    with pytest.raises(ValueError, match="region"):
        M.MultiLabelDice(3, region=3)
    with pytest.raises(ValueError, match="num_regions"):
        M.MultiLabelDice(0)


def test_table_matches_sklearn_and_prints():
    t, _, p = _case((3, 6, 6), 3, seed=7)
    table = M.multilabel_dice_iou_table(t, p)
    for r in range(3):
        y, yhat = t[..., r].ravel(), p[..., r].ravel() > 0.5
        np.testing.assert_allclose(table["dice"][r], f1_score(y, yhat))
        np.testing.assert_allclose(table["iou"][r], jaccard_score(y, yhat))
    assert table["mean_dice"] == pytest.approx(np.mean(table["dice"]))
    text = M.format_table(table, class_names=list(BRATS_REGIONS))
    assert "enhancing_tumour" in text and f"{table['dice'][2]:.3f}" in text
    with pytest.raises(ValueError, match="one shape"):
        M.multilabel_dice_iou_table(t, p[..., :2])


def test_regions_round_trip_and_refuse_bad_input():
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 2, 4], size=(3, 5, 6, 7))
    masks = regions_from_labels(labels)
    assert masks.shape == labels.shape + (3,) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[..., 0], np.isin(labels, [1, 2, 4]))
    np.testing.assert_array_equal(merge_regions(masks, [2, 1, 4]), labels)
    np.testing.assert_array_equal(merge_regions(masks.astype("float32") * 0.9, [2, 1, 4]), labels)  # probabilities
    custom = regions_from_labels(labels[..., None], [[1], [2, 4]])  # a trailing channel axis of 1 is dropped
    np.testing.assert_array_equal(custom[..., 1], np.isin(labels, [2, 4]))
    with pytest.raises(ValueError, match="integer label values"):
        regions_from_labels(labels + 0.5)
    with pytest.raises(ValueError, match="region_0"):
        regions_from_labels(labels, [[]])
    with pytest.raises(TypeError, match="regions"):
        regions_from_labels(labels, "brats")
    with pytest.raises(ValueError, match="one integer label per region"):
        merge_regions(masks, [2, 1])


def test_sigmoid_head_learns_nested_regions(tmp_path):
    # nested squares (BraTS values 2 outside, 1 inside it, 4 at the centre): whole tumour, core, enhancing
    rng = np.random.default_rng(0)
    n, size = 32, 16
    labels = np.zeros((n, size, size), "int32")
    for i in range(n):
        c = rng.integers(6, 10, size=2)
        for value, half in ((2, 5), (1, 3), (4, 1)):
            labels[i, c[0] - half:c[0] + half + 1, c[1] - half:c[1] + half + 1] = value
    y = regions_from_labels(labels).astype("float32")
    # brighter the deeper inside: 0, 1/3, 2/3, 1 for 0, 1, 2, 3 regions, plus noise
    x = (y.sum(-1, keepdims=True) / 3.0 + 0.05 * rng.standard_normal((n, size, size, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(3, 1, activation="sigmoid")(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.05), loss=L.MultiLabelDiceCELoss(),
                  metrics=[M.MultiLabelDice(3, region=r, name=f"dice_{r}") for r in range(3)])
    history = model.fit(x, y, epochs=40, batch_size=16, verbose=0)
    final = [history.history[f"dice_{r}"][-1] for r in range(3)]
    assert min(final) > 0.9, final
    merged = merge_regions(model.predict(x, verbose=0), [2, 1, 4])
    assert np.mean(merged == labels) > 0.98  # the label map again from the three sigmoid channels
    # a .keras file keeps the loss and the metrics (safe mode: registered classes only)
    path = tmp_path / "regions.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.loss, L.MultiLabelDiceCELoss)
    np.testing.assert_allclose(loaded.predict(x[:4], verbose=0), model.predict(x[:4], verbose=0), rtol=1e-6)
    scores = loaded.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert min(scores[f"dice_{r}"] for r in range(3)) > 0.9, scores
