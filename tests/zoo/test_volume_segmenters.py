"""Model-specific tests of `segresnet`, `unetr`, `swin_unetr` and `dynunet` (the zoo-wide harness does the rest).

Bad arguments give one line naming the argument; DynUNet's deep supervision
(outputs, weights, the single-output inference model, a `.keras` round trip);
a few Adam steps lower the loss on a tiny synthetic volume (a bright cube in
noise); shapes for anisotropic strides and odd grids; IMEXnet's 3D defaults
sized like the 3D UNet.
"""

import keras
import numpy as np
import pytest

from keras_medseg import zoo
from keras_medseg.losses import DiceCELoss
from keras_medseg.zoo.dynunet import deep_supervision_weights, inference_model

TINY_3D = {
    "segresnet": {"init_filters": 4, "blocks_down": (1, 1), "blocks_up": (1,)},
    "unetr": {"input_size": 16, "feature_size": 4, "hidden_size": 16, "mlp_dim": 16, "num_heads": 2, "num_layers": 4},
    "swin_unetr": {"input_size": 32, "feature_size": 6, "depths": (1, 1, 1, 1), "window_size": 4},
    "dynunet": {"kernel_size": (3, 3, 3), "strides": (1, 2, 2), "filters": (4, 8, 8)},
}


def _cube(size, seed=0, n=2):
    """`n` volumes of noise with one bright cube each and its label map (1 inside)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (n, size, size, size, 1)).astype("float32")
    y = np.zeros((n, size, size, size), "int32")
    for i in range(n):
        a = rng.integers(2, size // 2)
        y[i, a:a + size // 3, a:a + size // 3, a:a + size // 3] = 1
    x[..., 0] += y
    return x, y


@pytest.mark.slow  # five training steps of four 3D models: 10-50 s each on a loaded 2-core machine
@pytest.mark.parametrize("name", list(TINY_3D))
def test_a_few_steps_lower_the_loss_on_a_synthetic_volume(name):
    size, n = (32, 1) if name == "swin_unetr" else (16, 2)
    model = zoo.build(name, spatial_dims=3, learning_rate=3e-3, **TINY_3D[name])
    x, y = _cube(size, n=n)
    model.run_eagerly = keras.backend.backend() == "tensorflow"  # eager: no tracing for a few steps
    losses = model.fit(x, y, epochs=5, batch_size=n, verbose=0).history["loss"]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.97 * losses[0], losses


BAD = [
    ("segresnet", {"blocks_up": (1, 1)}, r"`blocks_up` needs one entry per upsampling.*Received: blocks_up="),
    ("segresnet", {"blocks_down": (1, 0)}, r"`blocks_down` must be a tuple.*Received: blocks_down="),
    ("segresnet", {"upsample_mode": "pixelshuffle"}, r"`upsample_mode` must be one of.*upsample_mode='pixelshuffle'"),
    ("segresnet", {"input_size": 20}, r"`input_size` must be divisible by 2\*\*\(len\(blocks_down\) - 1\) = 8"),
    ("segresnet", {"dropout_rate": 1.0}, r"`dropout_rate` must be in \[0, 1\). Received: dropout_rate=1.0"),
    ("segresnet", {"normalization": "layer"}, r"`normalization` must be one of.*normalization='layer'"),
    ("unetr", {"input_size": 40}, r"`input_size` must be divisible by 16.*Received: input_size=\(40, 40, 40\)"),
    ("unetr", {"input_size": None}, r"`input_size` must be given.*Received: input_size=None"),
    ("unetr", {"hidden_size": 100}, r"`hidden_size` \(100\) must be divisible by `num_heads`.*num_heads=12"),
    ("unetr", {"num_layers": 6}, r"`num_layers` must be a multiple of 4.*Received: num_layers=6"),
    ("unetr", {"loss": "focal"}, r"`loss` must be 'dice_ce' or 'ce'. Received: loss='focal'"),
    ("swin_unetr", {"input_size": 48}, r"`input_size` must be divisible by 32.*input_size=\(48, 48, 48\)"),
    ("swin_unetr", {"depths": (2, 2, 2)}, r"`depths` must be a tuple of 4 positive ints. Received: depths="),
    ("swin_unetr", {"feature_size": 20}, r"Stage 0 has width .* = 20, not divisible by its heads"),
    ("swin_unetr", {"window_size": (7, 7)}, r"`window_size` must be a tuple of 3 positive ints"),
    ("dynunet", {"kernel_size": (3, 3), "strides": (1, 2)}, r"`kernel_size` must be a tuple with at least 3"),
    ("dynunet", {"strides": (1, 2, 2)}, r"`strides` must be a tuple with 6 entries. Received: strides="),
    ("dynunet", {"kernel_size": (3, (3, 3), 3, 3, 3, 3)}, r"`kernel_size\[1\]` must be an int >= 1 or a tuple of 3"),
    ("dynunet", {"filters": (8, 16)}, r"`filters` needs one width per level \(6\). Received: filters=\(8, 16\)"),
    ("dynunet", {"deep_supervision": True, "deep_supr_num": 5},
     r"`deep_supr_num` must be less than the number of up blocks \(5\). Received: deep_supr_num=5"),
    ("dynunet", {"input_size": 48}, r"`input_size` must be divisible by the product of the strides, \(32, 32, 32\)"),
    ("dynunet", {"upsample_kernel_size": (2, 2)}, r"`upsample_kernel_size` must be a tuple with 5 entries"),
]


@pytest.mark.parametrize("name,kwargs,match", BAD, ids=[f"{b[0]}-{next(iter(b[1]))}" for b in BAD])
def test_bad_arguments_give_one_clear_line(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.build(name, **kwargs)


@pytest.mark.parametrize("name", list(TINY_3D))
def test_registry_type_checks(name):
    with pytest.raises(ValueError, match=r"Argument `num_classes` .* must be an int.*Received: num_classes='2'"):
        zoo.build(name, num_classes="2")


def test_deep_supervision_weights_halve_and_sum_to_one():
    np.testing.assert_allclose(deep_supervision_weights(3), np.array([4, 2, 1]) / 7)
    with pytest.raises(ValueError, match="n_outputs"):
        deep_supervision_weights(0)


def test_deep_supervision_outputs_inference_model_and_round_trip(tmp_path):
    model = zoo.build("dynunet", spatial_dims=2, kernel_size=(3, 3, 3, 3), strides=(1, 2, 2, (2, 1)),
                      filters=(4, 8, 8, 8), deep_supervision=True, deep_supr_num=2, num_classes=3)
    assert [tuple(o.shape) for o in model.outputs] == [(None, None, None, 3)] * 3
    assert [layer.name for layer in model.layers if layer.name.endswith("_upsample")] == [
        "dynunet_ds1_upsample", "dynunet_ds2_upsample"]
    assert model.get_layer("dynunet_ds2_upsample").size == (4, 4)  # strides 2 and 2 between level 2 and level 0
    x = np.random.default_rng(0).normal(size=(2, 16, 8, 1)).astype("float32")
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 8, 3)] * 3
    single = inference_model(model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(single(x)), keras.ops.convert_to_numpy(outs[0]),
                               rtol=1e-6)
    assert inference_model(single) is single
    path = tmp_path / "dynunet.keras"
    single.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(outs[0]),
                               rtol=1e-5, atol=1e-6)


def test_deep_supervision_loss_is_the_weighted_sum_of_the_heads():
    model = zoo.build("dynunet", kernel_size=(3, 3, 3), strides=(1, 2, 2), filters=(4, 4, 4),
                      deep_supervision=True, deep_supr_num=1, num_classes=2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 2, (2, 8, 8, 8)).astype("int32")
    model.run_eagerly = keras.backend.backend() == "tensorflow"  # no tracing for one batch
    result = model.evaluate(x, [y, y], verbose=0, return_dict=True)
    main, deep = model(x)
    loss = DiceCELoss()
    want = (2 * float(loss(y, main)) + float(loss(y, deep))) / 3
    np.testing.assert_allclose(result["loss"], want, rtol=1e-5)


@pytest.mark.parametrize("name,size", [("dynunet", (16, 8, 24)), ("segresnet", (8, 16, 24))])
def test_anisotropic_grids(name, size):
    kwargs = {"segresnet": {**TINY_3D["segresnet"], "input_size": size},
              "dynunet": {"kernel_size": ((1, 3, 3), 3, 3), "strides": (1, (1, 2, 2), 2), "filters": (4, 4, 4),
                          "input_size": size}}[name]
    model = zoo.build(name, **kwargs)
    out = model(np.zeros((1, *size, 1), "float32"))
    assert tuple(out.shape) == (1, *size, 2)


def test_swin_windows_clamp_to_small_grids_and_name_layers():
    model = zoo.build("swin_unetr", spatial_dims=2, input_size=(32, 64), feature_size=6, depths=(2, 1, 1, 1),
                      window_size=7)
    attn = model.get_layer("swin_unetr_stage0_block1_attn")
    assert attn.shift and attn.window_size == (7, 7)
    out = model(np.zeros((1, 32, 64, 1), "float32"))  # stage grids 16x32 ... 2x4: padded, then clamped windows
    assert tuple(out.shape) == (1, 32, 64, 2)
    # stage 3: width 6 * 2**3 = 48, 2x2 blocks merged
    assert model.get_layer("swin_unetr_stage3_merge_reduction").kernel.shape == (4 * 48, 2 * 48)


def _imex_blocks(model):
    from keras_medseg.layers import IMEXBlock

    return [layer for layer in model.layers if isinstance(layer, IMEXBlock)]


def test_imexnet_3d_defaults_are_sized_like_the_3d_unet():
    """`stages=None` in 3D gives the volume stages: about the 3D UNet's parameters, not the paper's 18.7 M."""
    imex = zoo.build("imexnet", spatial_dims=3, input_size=16)
    assert [(b.filters, b.implicit) for b in _imex_blocks(imex)] == [(24, True)] * 2 + [(48, True)] * 2 + [
        (96, True)] * 2
    res = zoo.build("resnet_seg", spatial_dims=3, input_size=16)
    assert [b.filters for b in _imex_blocks(res)] == [b.filters for b in _imex_blocks(imex)]
    unet = zoo.build("unet", spatial_dims=3, num_classes=4).count_params()
    assert 0.9 < imex.count_params() / unet < 1.0  # 1.32 M vs 1.40 M
    assert imex.count_params() - res.count_params() == 27 * 2 * (24 + 48 + 96)
    paper = zoo.build("imexnet", spatial_dims=3, input_size=16, stages=((4, 64), (4, 128), (4, 256)))
    assert paper.count_params() > 13 * unet  # why the paper's stages are not the 3D default
