"""Tests for `keras_medseg.layers.WindowAttention`: harness, gradients, MONAI's blocks with the same weights, errors."""

import numpy as np
import pytest
from keras import ops

from keras_medseg.layers import WindowAttention
from tests.testing import check_layer_gradients, run_layer_test

# the NumPy-reference tests run on every backend; the comparisons with MONAI / PyTorch (same numbers, heavy
# imports) and the parameter count run once, in the TensorFlow phase
AGNOSTIC = pytest.mark.backend_agnostic


@AGNOSTIC
@pytest.mark.parametrize(
    "kwargs,shape",
    [({"num_heads": 2}, (2, 3, 4, 4)), ({"num_heads": 2, "window_size": 2, "shift": True}, (1, 4, 4, 2, 4))],
)
def test_layer_harness(kwargs, shape):
    run_layer_test(WindowAttention, kwargs, shape, expected_output_shape=shape)


@AGNOSTIC
def test_layer_gradients():
    errors = check_layer_gradients(WindowAttention, {"num_heads": 2, "window_size": 2, "shift": True},
                                   (1, 4, 4, 4), max_entries=6)
    assert len(errors) == 6 and max(errors.values()) < 1e-5  # input, qkv kernel/bias, proj kernel/bias, table


def test_parameter_count_matches_the_attention_blocks():
    layer = WindowAttention(num_heads=3, window_size=(7, 7, 7))
    layer.build((None, 14, 14, 14, 24))
    assert layer.count_params() == 24 * 72 + 72 + 24 * 24 + 24 + 13 ** 3 * 3
    layer = WindowAttention(num_heads=4, qkv_bias=False)
    layer.build((None, 2, 2, 2, 16))
    assert layer.count_params() == 16 * 48 + 16 * 16 + 16


def _torch_params(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def test_global_attention_matches_monai_self_attention(rng):
    """MONAI's `SABlock` (UNETR's attention) with our weights gives our output on the flattened tokens."""
    torch = pytest.importorskip("torch")
    blocks = pytest.importorskip("monai.networks.blocks")
    torch.manual_seed(0)
    ref = blocks.SABlock(hidden_size=8, num_heads=2, qkv_bias=True).eval()
    layer = WindowAttention(num_heads=2, qkv_bias=True)
    x = rng.standard_normal((2, 2, 3, 2, 8)).astype("float32")
    layer.build(x.shape)
    p = _torch_params(ref)
    layer.qkv_kernel.assign(p["qkv.weight"].T)
    layer.qkv_bias_weight.assign(p["qkv.bias"])
    layer.proj_kernel.assign(p["out_proj.weight"].T)
    layer.proj_bias.assign(p["out_proj.bias"])
    with torch.no_grad():
        want = ref(torch.from_numpy(x.reshape(2, -1, 8))).numpy().reshape(x.shape)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,window,shift", [((1, 8, 8, 4, 6), (4, 4, 4), True), ((2, 6, 6, 6), (3, 3), True),
                                                ((1, 4, 4, 8, 6), (2, 2, 2), False)])
def test_windows_match_monai_swin_block(shape, window, shift, rng):
    """MONAI's Swin block without its MLP branch (zeroed) is `x + attention(LN(x))`: compare the attention."""
    torch = pytest.importorskip("torch")
    swin = pytest.importorskip("monai.networks.nets.swin_unetr")
    d = len(shape) - 2
    c = shape[-1]
    torch.manual_seed(0)
    shift_size = tuple(w // 2 for w in window) if shift else (0,) * d
    block = swin.SwinTransformerBlock(c, num_heads=2, window_size=window, shift_size=shift_size).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
        block.mlp.linear2.weight.zero_()
        block.mlp.linear2.bias.zero_()
    x = rng.standard_normal(shape).astype("float32")
    win, sft = swin.get_window_size(shape[1:-1], window, shift_size)  # as MONAI's BasicLayer does
    padded = tuple(-(-s // w) * w for s, w in zip(shape[1:-1], win))
    mask = swin.compute_mask(list(padded), win, sft, None) if any(sft) else None
    with torch.no_grad():
        want = block(torch.from_numpy(x), mask).numpy() - x
        normed = block.norm1(torch.from_numpy(x)).numpy()
    layer = WindowAttention(num_heads=2, window_size=window, shift=shift)
    layer.build(shape)
    p = _torch_params(block.attn)
    layer.qkv_kernel.assign(p["qkv.weight"].T)
    layer.qkv_bias_weight.assign(p["qkv.bias"])
    layer.proj_kernel.assign(p["proj.weight"].T)
    layer.proj_bias.assign(p["proj.bias"])
    layer.bias_table.assign(p["relative_position_bias_table"])
    np.testing.assert_allclose(ops.convert_to_numpy(layer(normed)), want, rtol=1e-4, atol=1e-5)


@AGNOSTIC
def test_bad_arguments():
    with pytest.raises(TypeError, match="num_heads"):
        WindowAttention(num_heads=1.5)
    with pytest.raises(ValueError, match="`window_size` must be None"):
        WindowAttention(num_heads=2, window_size=(0, 2))
    with pytest.raises(ValueError, match="`shift=True` needs a `window_size`"):
        WindowAttention(num_heads=2, shift=True)
    with pytest.raises(ValueError, match="`relative_position_bias=True` needs"):
        WindowAttention(num_heads=2, relative_position_bias=True)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        WindowAttention(num_heads=3)(np.zeros((1, 4, 4, 4), "float32"))
    with pytest.raises(ValueError, match="one entry per spatial axis"):
        WindowAttention(num_heads=2, window_size=(2, 2, 2))(np.zeros((1, 4, 4, 4), "float32"))
