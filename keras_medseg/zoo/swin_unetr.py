"""Swin UNETR: a shifted-window transformer encoder with a convolutional decoder, 2D and 3D.

`zoo.build("swin_unetr", ...)`. The image is embedded in 2x2(x2) patches
(strided convolution to `feature_size` channels), then four stages of Swin
Transformer blocks (layer norm, multi-head self-attention within windows of
`window_size` tokens with a relative position bias, every second block on
windows shifted by half a window; layer norm, GELU MLP), each stage followed by
patch merging (space-to-depth, layer norm, linear reduction to twice the
width). The patch embedding and the five stage outputs, layer-normalised
without parameters, are the encoder features at 1/2 ... 1/32 of the input
resolution; residual convolution blocks on them and on the image feed a UNet
decoder of transposed convolutions, concatenations and residual blocks.

Layer names: `{name}_patch_embed`, `{name}_stage{i}_block{j}_{norm1,attn,add1,norm2,mlp1,mlp2,add2}`,
`{name}_stage{i}_merge`, `{name}_stage{i}_merge_norm`, `{name}_stage{i}_merge_reduction`,
`{name}_hidden{i}_norm`, `{name}_enc{k}_...`, `{name}_dec{k}_{up,concat,conv1,...}`,
`{name}_head`, `{name}_output`.

Reference: Hatamizadeh et al., "Swin UNETR: Swin Transformers for Semantic
Segmentation of Brain Tumors in MRI Images", BrainLes 2021; Liu et al., "Swin
Transformer", ICCV 2021. Parameter counts equal MONAI's `SwinUNETR`
(`tests/zoo/test_volume_params.py`).
"""

import numbers

import keras

from keras_medseg.layers import SpaceToDepth
from keras_medseg.layers.factories import normalization as norm_layer_of
from keras_medseg.utils.validation import check_positive, check_positive_int, check_spatial_dims, spatial_shape
from keras_medseg.zoo import _blocks
from keras_medseg.zoo.registry import register_model
from keras_medseg.zoo.unetr import _example, transformer_block

STAGES = 4  # + the patch embedding: 5 halvings, inputs divisible by 32


def _int_tuple(value, name, length=None):
    ok = isinstance(value, (tuple, list)) and len(value) > 0 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value)
    if ok and length is not None:
        ok = len(value) == length
    if not ok:
        need = f"{length} positive ints" if length is not None else "positive ints"
        raise ValueError(f"`{name}` must be a tuple of {need}. Received: {name}={value!r}")
    return tuple(int(v) for v in value)


@register_model(
    "swin_unetr",
    description="Swin UNETR (Hatamizadeh 2021): shifted-window transformer encoder, conv UNet decoder",
    spatial_dims=(2, 3),
    task="segmentation",
    tiny={"input_size": 32, "feature_size": 6, "depths": (2, 1, 1, 1), "window_size": 4},
    example=_example,
)
def swin_unetr(*, spatial_dims: int = 3, input_size: int | tuple = 96, in_channels: int = 1, num_classes: int = 2,
               feature_size: int = 24, depths: tuple = (2, 2, 2, 2), num_heads: tuple = (3, 6, 12, 24),
               window_size: int | tuple = 7, mlp_ratio: float = 4.0, qkv_bias: bool = True,
               normalization: str | None = "instance", norm_affine: bool = False, loss: str = "dice_ce",
               ignore_index: int | None = None, learning_rate: float = 1e-4, name: str = "swin_unetr") -> keras.Model:
    """Swin UNETR for 2D/3D segmentation, compiled (Adam, Dice + cross-entropy, IoU/Dice metrics).

    Args:
        spatial_dims: 2 or 3 (default 3).
        input_size: spatial size, int or tuple, divisible by 32 (default 96);
            required (windows and their masks are fixed when the model is built).
        in_channels: image channels, e.g. 4 MR sequences (default 1).
        num_classes: 1 gives a sigmoid head; >= 2 a softmax head with integer
            labels (default 2).
        feature_size: embedding width, doubled per stage (default 24, MONAI's
            default; the paper's BraTS model uses 48).
        depths: Swin blocks per stage, 4 entries (default (2, 2, 2, 2)).
        num_heads: heads per stage, 4 entries, each dividing the stage width
            `feature_size * 2**i` (default (3, 6, 12, 24)).
        window_size: attention window in tokens, int or per-axis tuple
            (default 7); a grid not longer than the window is one window.
        mlp_ratio: MLP width / block width (default 4.0).
        qkv_bias: bias in the query/key/value projection (default True).
        normalization: of the convolution blocks: "instance" (default),
            "group", "batch" or None.
        norm_affine: learn a scale and shift in those norms (default False,
            as MONAI's instance norm).
        loss: "dice_ce" (default) or "ce".
        ignore_index: label value the loss skips (default None).
        learning_rate: Adam learning rate (default 1e-4).
        name: model name / layer prefix (default "swin_unetr").

    Input/output shapes: 2D `(N, H, W, in_channels) -> (N, H, W, max(num_classes, 1))`,
    3D `(N, D, H, W, in_channels) -> (N, D, H, W, max(num_classes, 1))`.

    Raises:
        ValueError: bad `spatial_dims`, `input_size` (None or not divisible by
            32), `depths`/`num_heads` (not 4 positive ints), a stage width not
            divisible by its heads, bad `window_size`, `mlp_ratio`,
            `normalization` or `loss`.

    Example:

    >>> model = keras_medseg.zoo.build("swin_unetr", in_channels=4, num_classes=3, input_size=64, feature_size=48)

    Reference: Hatamizadeh et al., "Swin UNETR: Swin Transformers for Semantic
    Segmentation of Brain Tumors in MRI Images", BrainLes 2021; parameter counts
    checked against MONAI's `SwinUNETR` (table in docs/zoo.md).
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    in_channels = check_positive_int(in_channels, "in_channels")
    num_classes = _blocks.check_compile_args(num_classes, loss, learning_rate, ignore_index)
    feature_size = check_positive_int(feature_size, "feature_size")
    depths = _int_tuple(depths, "depths", STAGES)
    num_heads = _int_tuple(num_heads, "num_heads", STAGES)
    for i, heads in enumerate(num_heads):
        if (feature_size * 2 ** i) % heads:
            raise ValueError(f"Stage {i} has width feature_size * 2**{i} = {feature_size * 2 ** i}, not divisible "
                             f"by its heads. Received: feature_size={feature_size}, num_heads={num_heads}")
    if isinstance(window_size, numbers.Integral) and not isinstance(window_size, bool):
        window_size = (int(window_size),) * spatial_dims
    window = _int_tuple(window_size, "window_size", spatial_dims)
    check_positive(mlp_ratio, "mlp_ratio")
    normalization = _blocks.check_normalization(normalization)
    name = _blocks.check_name(name)
    shape = spatial_shape(input_size, spatial_dims, divisible_by=2 ** (STAGES + 1), allow_none=False,
                          why="the patch embedding and 4 patch mergings halve it 5 times; windows are fixed at build")
    affine = bool(norm_affine)

    def res(x, filters, prefix):
        return _blocks.conv_block(x, filters, 3, 1, normalization, prefix, affine=affine, residual=True)

    def hidden_norm(x, i):  # MONAI's proj_out: layer norm without scale and shift
        return norm_layer_of("layer", f"{name}_hidden{i}_norm", epsilon=1e-5, affine=False)(x)

    inputs = keras.Input(shape=(*shape, in_channels), name=f"{name}_input")
    x = _blocks.conv(inputs, feature_size, 2, 2, f"{name}_patch_embed", use_bias=True)
    hidden = [hidden_norm(x, 0)]
    for i in range(STAGES):
        width = feature_size * 2 ** i
        for j in range(depths[i]):
            x = transformer_block(x, num_heads[i], int(width * mlp_ratio), f"{name}_stage{i}_block{j}",
                                  window_size=window, shift=j % 2 == 1, qkv_bias=qkv_bias)
        x = SpaceToDepth(2, name=f"{name}_stage{i}_merge")(x)
        x = norm_layer_of("layer", f"{name}_stage{i}_merge_norm", epsilon=1e-5)(x)
        x = keras.layers.Dense(2 * width, use_bias=False, name=f"{name}_stage{i}_merge_reduction")(x)
        hidden.append(hidden_norm(x, i + 1))

    enc0 = res(inputs, feature_size, f"{name}_enc0")
    enc1 = res(hidden[0], feature_size, f"{name}_enc1")
    enc2 = res(hidden[1], 2 * feature_size, f"{name}_enc2")
    enc3 = res(hidden[2], 4 * feature_size, f"{name}_enc3")
    x = res(hidden[4], 16 * feature_size, f"{name}_enc4")
    for k, skip, width in ((4, hidden[3], 8), (3, enc3, 4), (2, enc2, 2), (1, enc1, 1), (0, enc0, 1)):
        x = _blocks.up_block(x, skip, width * feature_size, 3, 2, 2, normalization, f"{name}_dec{k}",
                             affine=affine, residual=True)
    outputs = _blocks.head(x, num_classes, name)
    model = keras.Model(inputs, outputs, name=name)
    return _blocks.compile_segmenter(model, num_classes, loss, ignore_index, learning_rate)
