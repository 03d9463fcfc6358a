"""Tests for the `attention_classifier` zoo model (mask-supervised attention pooling)."""

import keras
import numpy as np
import pytest

from keras_medseg import zoo
from keras_medseg.layers import AttentionPool
from keras_medseg.losses import AttentionMaskLoss
from keras_medseg.zoo.attention_classifier import attention_mass_inside, synthetic_blobs, upsample_attention
from tests.ops.test_attention import np_area_resize

TINY = zoo.get_spec("attention_classifier").tiny


def _np_mask_loss(mask, att, eps=1e-7):
    a = np_area_resize(mask.astype("float64"), att.shape[1:-1])
    agreement = (att.astype("float64") * a).reshape(len(att), -1, att.shape[-1]).sum(1)
    per = -np.log(agreement + eps).mean(-1) * (a.reshape(len(a), -1).sum(1) > 0)
    return per.mean()


@pytest.mark.parametrize("spatial_dims", [pytest.param(2, marks=pytest.mark.backend_agnostic), 3])
def test_outputs_names_and_attention_grid(spatial_dims):
    model = zoo.build("attention_classifier", spatial_dims=spatial_dims, input_size=16, filters=(4, 8, 8),
                      convs_per_stage=1, heads=3, dense_units=8)
    assert model.output_names == ["risk", "attention"]
    grid = (4,) * spatial_dims  # two 2x poolings
    assert tuple(model.outputs[1].shape) == (None,) + grid + (3,)
    for i in range(3):
        model.get_layer(f"attention_classifier_stage{i}_conv1")
    assert isinstance(model.get_layer("attention_classifier_attention_pool"), AttentionPool)
    x, _ = synthetic_blobs(2, 16, spatial_dims=spatial_dims)
    risk, att = model.predict(x, verbose=0)
    assert risk.shape == (2, 1) and np.all((risk > 0) & (risk < 1))
    np.testing.assert_allclose(att.sum(axis=tuple(range(1, spatial_dims + 1))), 1.0, rtol=1e-5)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("mask_weight", [0.0, 2.5])
def test_total_loss_is_risk_plus_lambda_attention(mask_weight):
    model = zoo.build("attention_classifier", **TINY, batch_norm=False, mask_weight=mask_weight)
    x, y = synthetic_blobs(6, 16, seed=3)
    logs = model.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
    _, att = model.predict(x, verbose=0)
    # the full-resolution (16x16) mask is area-resized to the 8x8 attention grid inside the loss
    np.testing.assert_allclose(logs["attention_loss"], _np_mask_loss(y["attention"], att), rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], logs["risk_loss"] + mask_weight * logs["attention_loss"], rtol=1e-5)


@pytest.mark.backend_agnostic
def test_save_load_safe_mode_keeps_predictions_and_losses(tmp_path):
    model = zoo.build("attention_classifier", **TINY, mask_weight=0.5)
    x, y = synthetic_blobs(4, 16, seed=1)
    path = tmp_path / "attention_classifier.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert isinstance(loaded.loss["attention"], AttentionMaskLoss)
    logs = loaded.evaluate(x, y, batch_size=4, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], logs["risk_loss"] + 0.5 * logs["attention_loss"], rtol=1e-5)


@pytest.mark.backend_agnostic
def test_upsample_attention_and_mass_inside():
    att = np.zeros((1, 2, 2, 1), "float32")
    att[0, :, 0, 0] = 0.5  # all attention in the left column
    up = upsample_attention(att, (8, 8), method="area")
    assert up.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(up[0, :, :4, 0], 0.5)
    np.testing.assert_array_equal(up[0, :, 4:, 0], 0.0)
    smooth = upsample_attention(np.full((2, 4, 4, 4, 3), 1 / 64, "float32"), 12)
    assert smooth.shape == (2, 12, 12, 12, 3)
    np.testing.assert_allclose(smooth, 1 / 64, rtol=1e-6)
    mask = np.zeros((1, 64, 64, 1), "float32")
    mask[:, :, :32] = 1
    np.testing.assert_allclose(attention_mass_inside(att, mask), [[1.0]], rtol=1e-6)
    np.testing.assert_allclose(attention_mass_inside(att, 1 - mask), [[0.0]], atol=1e-7)
    np.testing.assert_allclose(
        -np.log(attention_mass_inside(att, mask[..., 0] * 0.5 + 0.25) + 1e-7).mean(),
        float(AttentionMaskLoss()(mask[..., 0] * 0.5 + 0.25, att)), rtol=1e-5,
    )


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_synthetic_blobs(spatial_dims):
    x, y = synthetic_blobs(8, 12, spatial_dims=spatial_dims, in_channels=2, seed=0)
    assert x.shape == (8,) + (12,) * spatial_dims + (2,) and x.dtype == np.float32
    labels, mask = y["risk"][:, 0], y["attention"]
    assert set(labels) == {0.0, 1.0}
    for i in range(8):
        m = mask[i, ..., 0]
        if labels[i]:
            assert m[..., :6].min() == 1 and m[..., 6:].max() == 0
            # the bright blob is in the left half
            assert np.unravel_index(np.argmax(x[i, ..., 0]), m.shape)[-1] < 6
        else:
            assert m.max() == 0


@pytest.mark.backend_agnostic
def test_bad_arguments():
    with pytest.raises(ValueError, match="input_size"):
        zoo.build("attention_classifier", input_size=18, filters=(4, 8, 8))
    with pytest.raises(ValueError, match="input_size"):
        zoo.build("attention_classifier", spatial_dims=3, input_size=(16, 16))
    with pytest.raises(ValueError, match="heads"):
        zoo.build("attention_classifier", **{**TINY, "heads": 0})
    with pytest.raises(ValueError, match="dropout"):
        zoo.build("attention_classifier", **TINY, dropout=1.0)
    with pytest.raises(ValueError, match="mask_weight"):
        zoo.build("attention_classifier", **TINY, mask_weight=-1.0)
    with pytest.raises(ValueError, match="filters"):
        zoo.build("attention_classifier", **{**TINY, "filters": ()})
    with pytest.raises(ValueError, match="spatial_dims"):
        zoo.build("attention_classifier", spatial_dims=4)
    with pytest.raises(ValueError, match="attention"):
        upsample_attention(np.zeros((4, 4)), 8)


@pytest.mark.slow
def test_mask_supervision_moves_attention_into_the_mask():
    """Coarse "left half" masks: the supervised model attends inside them more than lambda=0."""
    x, y = synthetic_blobs(48, 32, seed=1)
    x_test, y_test = synthetic_blobs(32, 32, seed=2)
    positives = y_test["risk"][:, 0] == 1
    mass = {}
    for mask_weight in (1.0, 0.0):
        keras.utils.set_random_seed(1)
        model = zoo.build("attention_classifier", input_size=32, filters=(8, 16), convs_per_stage=1, heads=2,
                          dense_units=16, batch_norm=False, mask_weight=mask_weight, learning_rate=5e-3)
        model.fit(x, y, epochs=10, batch_size=16, verbose=0)
        _, att = model.predict(x_test[positives], verbose=0)
        mass[mask_weight] = float(attention_mass_inside(att, y_test["attention"][positives]).mean())
    print("attention mass inside the mask (supervised, unsupervised):", mass[1.0], mass[0.0])
    assert mass[1.0] > 0.8, mass
    assert mass[1.0] > mass[0.0] + 0.1, mass
