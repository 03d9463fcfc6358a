"""UNet: shapes in 2D/3D, skip wiring, heads, naming, backbone for pix2pix, errors."""

import keras
import numpy as np
import pytest

from keras_medseg import zoo
from keras_medseg.zoo.unet import unet_backbone

pytestmark = pytest.mark.backend_agnostic


@pytest.mark.parametrize("spatial_dims, size", [(2, (16, 24)), (3, (8, 8, 16))])
def test_shapes_softmax(spatial_dims, size):
    model = zoo.build("unet", spatial_dims=spatial_dims, num_classes=3, depth=2, filters=4)
    x = np.random.default_rng(0).normal(size=(2,) + size + (1,)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2,) + size + (3,)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    assert model.loss.__class__.__name__ == "DiceCELoss"


def test_sigmoid_head_and_fixed_size():
    model = zoo.build("unet", input_size=16, in_channels=2, depth=2, filters=4, batch_norm=False)
    assert model.inputs[0].shape == (None, 16, 16, 2)
    y = model.predict(np.ones((1, 16, 16, 2), "float32"), verbose=0)
    assert y.shape == (1, 16, 16, 1) and np.all((y > 0) & (y < 1))
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_layer_names_and_skip_concatenation():
    model = zoo.build("unet", depth=2, filters=4, name="seg")
    names = [layer.name for layer in model.layers]
    for n in ("seg_enc0_conv1", "seg_enc1_pool", "seg_bottleneck_conv2", "seg_dec1_up", "seg_dec0_concat",
              "seg_head", "seg_output"):
        assert n in names
    concat = model.get_layer("seg_dec0_concat")
    # skip (4 channels from level 0) + upsampled (4 channels)
    assert concat.output.shape[-1] == 8
    assert [t.shape[-1] for t in concat.input] == [4, 4]
    assert isinstance(model.get_layer("seg_dec1_up"), keras.layers.Conv2DTranspose)
    assert model.get_layer("seg_bottleneck_conv1").filters == 16


def test_parameter_count_matches_formula():
    f, d = 4, 2
    model = zoo.build("unet", depth=d, filters=f, batch_norm=False, num_classes=2)

    def conv(cin, cout, k=3):
        return k * k * cin * cout + cout

    n = conv(1, f) + conv(f, f) + conv(f, 2 * f) + conv(2 * f, 2 * f)  # encoder
    n += conv(2 * f, 4 * f) + conv(4 * f, 4 * f)  # bottleneck
    n += conv(4 * f, 2 * f, 2) + conv(4 * f, 2 * f) + conv(2 * f, 2 * f)  # decoder level 1
    n += conv(2 * f, f, 2) + conv(2 * f, f) + conv(f, f)  # decoder level 0
    n += conv(f, 2, 1)  # head
    assert model.count_params() == n


def test_backbone_tanh_uncompiled():
    g = unet_backbone(input_size=(16, 16), in_channels=3, out_channels=3, depth=2, filters=4,
                      output_activation="tanh", name="gen")
    assert g.name == "gen" and not g.compiled
    y = g(np.random.default_rng(1).normal(size=(1, 16, 16, 3)).astype("float32"))
    y = keras.ops.convert_to_numpy(y)
    assert y.shape == (1, 16, 16, 3) and np.all(np.abs(y) < 1)


def test_learns_a_trivial_mask():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 1)).astype("float32")
    y = (x > 0).astype("float32")
    model = zoo.build("unet", depth=1, filters=4, batch_norm=False, learning_rate=1e-2)

    def bce():
        p = np.clip(keras.ops.convert_to_numpy(model(x)), 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    first = bce()
    for _ in range(40):
        model.train_on_batch(x, y)
    assert bce() < 0.5 * first


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_size": 20, "depth": 3}, "divisible by 2\\*\\*depth"),
        ({"input_size": (16, 16, 16)}, "input_size"),
        ({"depth": 0}, "depth"),
        ({"filters": -2}, "filters"),
        ({"num_classes": 0}, "num_classes"),
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"filters": 2.5}, "filters"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        zoo.build("unet", **kwargs)


def test_backbone_bad_activation():
    with pytest.raises(ValueError, match="output_activation"):
        unet_backbone(output_activation="no_such_activation")
