"""Sparse segmentation losses (Dice, Dice + CE, Tversky, focal, CE) against NumPy references,
with the ignore label and empty classes, in 2D and 3D; and Dice + CE vs CE on a small task."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_medseg import losses as L

pytestmark = pytest.mark.backend_agnostic


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def np_tversky(labels, probs, alpha, beta, ignore=None, background=False, batch=False, smooth=1e-5):
    """Reference: loop over samples and classes in float64."""
    n, k = probs.shape[0], probs.shape[-1]
    lab = labels.reshape(n, -1)
    pr = probs.reshape(n, -1, k).astype("float64")
    valid = np.ones_like(lab, bool) if ignore is None else lab != ignore
    classes = [1] if k == 1 else range(0 if background else 1, k)
    if batch:
        lab, pr, valid = lab.reshape(1, -1), pr.reshape(1, -1, k), valid.reshape(1, -1)
    out = []
    for i in range(lab.shape[0]):
        scores = []
        for c in classes:
            g = (lab[i][valid[i]] == c).astype("float64")
            p = pr[i][valid[i]][:, 0 if k == 1 else c]
            tp, fp, fn = (g * p).sum(), ((1 - g) * p).sum(), (g * (1 - p)).sum()
            scores.append((tp + smooth) / (tp + alpha * fp + beta * fn + smooth))
        out.append(1 - np.mean(scores))
    return np.mean(out)


def np_ce(labels, probs, ignore=None, gamma=0.0, eps=1e-7):
    n, k = probs.shape[0], probs.shape[-1]
    lab = labels.reshape(n, -1)
    pr = probs.reshape(n, -1, k).astype("float64")
    if k == 1:
        pr = np.concatenate([1 - pr, pr], -1)
    per = []
    for i in range(n):
        keep = np.ones(lab.shape[1], bool) if ignore is None else lab[i] != ignore
        p = np.clip(pr[i][keep, lab[i][keep]], eps, 1.0)
        per.append((-(1 - p) ** gamma * np.log(p)).mean() if keep.any() else 0.0)
    return np.mean(per)


def _case(shape, k, seed=0, ignore=None):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape + (k,))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32") if k > 1 else \
        (1 / (1 + np.exp(-logits))).astype("float32")
    labels = rng.integers(0, max(k, 2), size=shape).astype("int32")
    if k > 2:
        labels[0][labels[0] == k - 1] = 0  # class k-1 empty in sample 0
    if ignore is not None:
        labels[rng.random(shape) < 0.2] = ignore
    return labels, probs


@pytest.mark.parametrize("shape,k", [((2, 6, 7), 3), ((2, 4, 5, 6), 4), ((3, 5, 5), 1), ((2, 3, 4, 5), 2)])
@pytest.mark.parametrize("ignore", [None, 255])
def test_dice_and_tversky_match_numpy(shape, k, ignore):
    labels, probs = _case(shape, k, ignore=ignore)
    for background in (False, True):
        for batch in (False, True):
            got = float(L.DiceLoss(ignore_index=ignore, include_background=background, batch_dice=batch)(labels, probs))
            np.testing.assert_allclose(got, np_tversky(labels, probs, 0.5, 0.5, ignore, background, batch), rtol=1e-5)
    got = float(L.TverskyLoss(alpha=0.2, beta=0.8, ignore_index=ignore)(labels[..., None], probs))
    np.testing.assert_allclose(got, np_tversky(labels, probs, 0.2, 0.8, ignore), rtol=1e-5)


@pytest.mark.parametrize("shape,k", [((2, 6, 7), 3), ((2, 4, 5, 6), 4), ((3, 5, 5), 1)])
@pytest.mark.parametrize("ignore", [None, 255])
def test_crossentropy_focal_and_dice_ce_match_numpy(shape, k, ignore):
    labels, probs = _case(shape, k, seed=1, ignore=ignore)
    np.testing.assert_allclose(float(L.SegmentationCrossentropy(ignore_index=ignore)(labels, probs)),
                               np_ce(labels, probs, ignore), rtol=1e-4)
    np.testing.assert_allclose(float(L.FocalLoss(gamma=2.0, ignore_index=ignore)(labels, probs)),
                               np_ce(labels, probs, ignore, gamma=2.0), rtol=1e-4)
    np.testing.assert_allclose(float(L.DiceCELoss(dice_weight=0.7, ce_weight=1.3, ignore_index=ignore)(labels, probs)),
                               0.7 * np_tversky(labels, probs, 0.5, 0.5, ignore) + 1.3 * np_ce(labels, probs, ignore),
                               rtol=1e-4)


@pytest.mark.parametrize("shape,k", [((2, 6, 7), 3), ((2, 4, 5, 6), 4), ((3, 5, 5), 1)])
def test_crossentropy_equals_keras_without_ignore(shape, k):
    labels, probs = _case(shape, k, seed=2)
    ours = float(L.SegmentationCrossentropy()(labels, probs))
    if k == 1:
        ref = keras.losses.BinaryCrossentropy()(labels[..., None].astype("float32"), probs)
    else:
        ref = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    np.testing.assert_allclose(ours, float(ref), rtol=1e-6)


def test_perfect_prediction_and_empty_classes():
    labels = np.zeros((2, 4, 4), "int32")
    labels[0, :2] = 1  # sample 1 has only background; class 2 is empty everywhere
    probs = np.eye(3, dtype="float32")[labels]
    assert float(L.DiceLoss()(labels, probs)) < 1e-5
    assert float(L.DiceLoss(include_background=True)(labels, probs)) < 1e-5
    # predicting an absent class is penalised
    wrong = probs.copy()
    wrong[1, 0, 0] = [0, 0, 1]
    assert float(L.DiceLoss()(labels, wrong)) > 0.2
    # an ignored voxel cannot be penalised
    labels_ign = labels.copy()
    labels_ign[1, 0, 0] = 255
    assert float(L.DiceLoss(ignore_index=255)(labels_ign, wrong)) < 1e-5
    assert float(L.DiceCELoss(ignore_index=255)(labels_ign, wrong)) < 1e-4


def test_config_round_trip_and_errors():
    for loss in (L.DiceLoss(ignore_index=3, batch_dice=True), L.TverskyLoss(alpha=0.1, beta=0.9),
                 L.FocalLoss(gamma=1.0, alpha=[0.2, 0.8]), L.DiceCELoss(ce_weight=2.0), L.SegmentationCrossentropy()):
        clone = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="ignore_index"):
        L.DiceLoss(ignore_index=0.5)
    with pytest.raises(ValueError, match="y_true"):
        L.DiceLoss()(np.zeros((1, 4, 4, 3), "float32"), np.full((1, 4, 4, 3), 1 / 3, "float32"))
    with pytest.raises(ValueError, match="y_pred"):
        L.DiceLoss()(np.zeros((1, 4), "int32"), np.zeros((1, 4, 3), "float32"))
    with pytest.raises(ValueError, match="alpha"):
        L.FocalLoss(alpha=[1.0, 2.0])(np.zeros((1, 4, 4), "int32"), np.full((1, 4, 4, 3), 1 / 3, "float32"))


def small_task(n, size=32, seed=0):
    """Small discs (class 1) and squares (class 2) on noise: a few percent foreground."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.6, size=(n, size, size, 1)).astype("float32")
    y = np.zeros((n, size, size), "int32")
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx, r = rng.integers(6, size - 6, 2).tolist() + [int(rng.integers(2, 4))]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        sy, sx = rng.integers(3, size - 6, 2)
        square = np.zeros_like(disc)
        square[sy:sy + 3, sx:sx + 3] = True
        y[i][disc] = 1
        y[i][square & ~disc] = 2
        x[i, ..., 0] += 1.0 * (y[i] > 0)
    return x, y


def numpy_glorot_init(model, seed):
    """Set every kernel to Glorot-uniform draws from NumPy (biases, gammas, betas keep their constant init).

    Keras' initializers draw from each backend's own random generator, so
    `keras.utils.set_random_seed(seed)` gives different initial weights on
    TensorFlow, JAX and torch. A short training run depends on that draw (on
    TensorFlow, torch's seed-0 draw also stays all-background after 8 epochs,
    while the same weights train identically on both backends), so the
    comparison starts from the same NumPy weights on every backend.
    """
    rng = np.random.default_rng(seed)
    for var in model.weights:
        if var.path.endswith("kernel"):
            shape = tuple(var.shape)
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            var.assign(rng.uniform(-limit, limit, shape).astype("float32"))


def train_and_score(loss, epochs, seed=0):
    """Train a tiny unet with `loss`; mean foreground Dice of predict() on held-out data.

    The same initial weights (NumPy) and batch order (no shuffling of the
    already random samples) on every backend, so the scores agree across
    TensorFlow, JAX and torch up to float32 round-off.
    """
    from keras_medseg import zoo
    keras.utils.set_random_seed(seed)
    x, y = small_task(64, seed=seed)
    xv, yv = small_task(32, seed=seed + 100)
    model = zoo.build("unet", num_classes=3, depth=2, filters=8)
    numpy_glorot_init(model, seed)
    # metrics=[] drops the zoo's IoU/Dice metrics (compile(metrics=None) keeps them): scored below in NumPy
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, metrics=[])
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)
    pred = np.argmax(_np(model.predict(xv, verbose=0)), -1)
    dice = []
    for c in (1, 2):
        inter = np.sum((pred == c) & (yv == c))
        dice.append(2 * inter / max(np.sum(pred == c) + np.sum(yv == c), 1))
    return float(np.mean(dice))


@pytest.mark.slow
def test_dice_ce_trains_as_well_as_crossentropy(xla_optimized):
    ce = train_and_score(L.SegmentationCrossentropy(), epochs=8)
    dice_ce = train_and_score(L.DiceCELoss(), epochs=8)
    # measured (seeds 0/1/2, 8 epochs, TF, train_and_score(loss, 8, seed)):
    # CE 0.521/0.344/0.323, Dice + CE 0.638/0.628/0.310 mean fg Dice; torch gives the same to round-off
    assert dice_ce >= ce - 0.02, (dice_ce, ce)
    assert dice_ce > 0.3


def test_voxel_sample_weights_act_like_a_mask():
    """A label-map-shaped `sample_weight` weighs voxels inside the loss: 0/1 weights equal an ignore label."""
    labels, probs = _case((2, 6, 7), 3, seed=4, ignore=255)
    keep = (labels != 255).astype("float32")
    clean = np.where(labels == 255, 0, labels)
    for loss in (L.DiceLoss(), L.FocalLoss()):
        ignored = type(loss)(ignore_index=255)(labels, probs)
        weighted = loss(clean, probs, sample_weight=keep)
        np.testing.assert_allclose(float(weighted), float(ignored), rtol=1e-5)
    # the cross-entropy keeps Keras' per-pixel sample_weight semantics (mean over all voxels of w * CE)
    ours = float(L.SegmentationCrossentropy()(clean, probs, sample_weight=keep))
    keras_value = float(keras.losses.SparseCategoricalCrossentropy()(clean, probs, sample_weight=keep))
    np.testing.assert_allclose(ours, keras_value, rtol=1e-5)
    # per-sample weights still go to Keras' reduction
    per_sample = float(L.DiceLoss()(clean, probs, sample_weight=np.array([1.0, 0.0], "float32")))
    np.testing.assert_allclose(per_sample, np_tversky(clean[:1], probs[:1], 0.5, 0.5) / 2, rtol=1e-5)
