"""Tests for `keras_medseg.losses` (attention-mask loss)."""

import os
import tempfile

import keras
import numpy as np
import pytest

from keras_medseg.losses import AttentionMaskLoss, attention_mask_loss
from tests.ops.test_attention import np_area_resize
from tests.testing import check_op_gradients

pytestmark = pytest.mark.backend_agnostic


def np_attention_mask_loss(mask, alpha, eps=1e-7, skip_empty=True):
    """Reference: area-resize the mask to the attention grid, -log(sum alpha A + eps), mean heads, mean batch."""
    if mask.ndim == alpha.ndim - 1:
        mask = mask[..., None]
    a = np_area_resize(mask.astype("float64"), alpha.shape[1:-1])
    agreement = (alpha.reshape(alpha.shape[0], -1, alpha.shape[-1]) * a.reshape(a.shape[0], -1, a.shape[-1])).sum(1)
    per_sample = -np.log(agreement + eps).mean(axis=-1)
    if skip_empty:
        per_sample = per_sample * (a.reshape(a.shape[0], -1).sum(1) > 0)
    return per_sample.mean()


def random_attention(rng, shape):
    logits = 2 * rng.standard_normal(shape)
    axes = tuple(range(1, len(shape) - 1))
    e = np.exp(logits)
    return e / e.sum(axis=axes, keepdims=True)


def test_seed_example():
    alpha = np.array([[0.1, 0.2], [0.3, 0.4]]).reshape(1, 2, 2, 1)
    mask = np.array([[0, 1], [0, 1]]).reshape(1, 2, 2, 1)
    loss = AttentionMaskLoss(eps=1e-7)(mask, alpha)
    np.testing.assert_allclose(float(loss), -np.log(0.6 + 1e-7), rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (2, 2, 3, 4, 1)])
def test_mask_of_ones(shape, rng):
    alpha = random_attention(rng, shape).astype("float32")
    loss = AttentionMaskLoss(eps=1e-7)(np.ones(shape[:-1] + (1,), "float32"), alpha)
    np.testing.assert_allclose(float(loss), -np.log(1 + 1e-7), atol=1e-6)


@pytest.mark.parametrize(
    "mask_shape,alpha_shape",
    [
        ((3, 16, 12, 1), (3, 4, 3, 2)),  # image-resolution mask, integer ratio
        ((3, 10, 7), (3, 4, 3, 2)),  # no channel axis, non-integer ratio
        ((2, 8, 8, 2), (2, 4, 4, 2)),  # one mask per head
        ((2, 8, 6, 4, 1), (2, 4, 3, 2, 3)),  # 3D
        ((2, 5, 6, 7, 3), (2, 3, 3, 3, 3)),  # 3D, per head, non-integer ratio
    ],
)
def test_loss_matches_numpy(mask_shape, alpha_shape, rng):
    mask = (rng.random(mask_shape) > 0.6).astype("float32")
    mask[0] = 0  # one empty mask (a negative case) is skipped
    alpha = random_attention(rng, alpha_shape).astype("float32")
    loss = AttentionMaskLoss()(mask, alpha)
    np.testing.assert_allclose(float(loss), np_attention_mask_loss(mask, alpha), rtol=1e-5)
    loss_all = AttentionMaskLoss(skip_empty_masks=False)(mask, alpha)
    np.testing.assert_allclose(float(loss_all), np_attention_mask_loss(mask, alpha, skip_empty=False), rtol=1e-5)


def test_coarse_mask_left_half(rng):
    # "cancer in the left half": all attention on the left gives ~0, uniform gives log 2
    mask = np.zeros((1, 64, 64, 1), "float32")
    mask[:, :, :32] = 1
    uniform = np.full((1, 8, 8, 1), 1 / 64, "float32")
    left = np.zeros((1, 8, 8, 1), "float32")
    left[:, :, :4] = 1 / 32
    np.testing.assert_allclose(float(AttentionMaskLoss()(mask, uniform)), np.log(2), rtol=1e-5)
    assert float(AttentionMaskLoss()(mask, left)) < 1e-5


def test_float64_and_gradients(rng):
    mask = (rng.random((2, 8, 6, 1)) > 0.5).astype("float64")
    alpha = random_attention(rng, (2, 4, 3, 2))
    per_sample = attention_mask_loss(mask, alpha)
    assert keras.backend.standardize_dtype(per_sample.dtype) == "float64"
    assert tuple(per_sample.shape) == (2,)
    check_op_gradients(lambda a: attention_mask_loss(mask, a), alpha, max_entries=12)
    alpha3 = random_attention(rng, (1, 2, 3, 2, 2))
    check_op_gradients(lambda a: attention_mask_loss(np.ones((1, 4, 6, 4)), a), alpha3, max_entries=12)


def test_serialization_round_trip():
    loss = AttentionMaskLoss(eps=1e-5, skip_empty_masks=False, name="attn")
    config = loss.get_config()
    assert config["eps"] == 1e-5 and config["skip_empty_masks"] is False
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, AttentionMaskLoss) and clone.get_config() == config


def test_model_fit_and_safe_mode_load(rng):
    # a tiny model with an attention output, compiled with the mask loss, survives .keras save/load
    from keras_medseg.layers import AttentionPool

    inp = keras.Input((8, 8, 2))
    _, att = AttentionPool(heads=2, return_attention=True, name="pool")(inp)
    model = keras.Model(inp, att)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss=AttentionMaskLoss())
    x = rng.standard_normal((4, 8, 8, 2)).astype("float32")
    x[..., :4, 0] += 3.0  # channel 0 tells left from right
    mask = np.zeros((4, 32, 32, 1), "float32")
    mask[:, :, :16] = 1
    before = float(model.evaluate(x, mask, verbose=0))
    model.fit(x, mask, epochs=20, batch_size=4, verbose=0)
    after = float(model.evaluate(x, mask, verbose=0))
    assert after < before
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.loss, AttentionMaskLoss)
    np.testing.assert_allclose(float(loaded.evaluate(x, mask, verbose=0)), after, rtol=1e-5)


def test_bad_inputs():
    alpha = np.full((1, 4, 4, 2), 1 / 16, "float32")
    with pytest.raises(ValueError, match="eps"):
        AttentionMaskLoss(eps=0.0)
    with pytest.raises(ValueError, match="y_true"):
        AttentionMaskLoss()(np.ones((1, 4, 4, 4, 1), "float32"), alpha)
    with pytest.raises(ValueError, match="y_true"):
        AttentionMaskLoss()(np.ones((1, 8, 8, 3), "float32"), alpha)
    with pytest.raises(ValueError, match="y_pred"):
        AttentionMaskLoss()(np.ones((1, 4, 2), "float32"), np.ones((1, 4, 2), "float32"))
