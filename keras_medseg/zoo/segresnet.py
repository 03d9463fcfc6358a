"""SegResNet: residual encoder, light decoder, 2D and 3D (`zoo.build("segresnet", ...)`).

Myronenko's BraTS 2018 winner without its variational auto-encoder branch:
a 3x3 stem convolution to `init_filters`, then encoder levels of
pre-activation residual blocks (norm, ReLU, conv, norm, ReLU, conv, + input)
separated by stride-2 3x3 convolutions that double the width; the decoder
halves the width with a 1x1 convolution, upsamples 2x (trilinear by default),
adds the encoder feature map of the same level and runs its residual blocks;
a norm + ReLU + 1x1 convolution head. Group norm with 8 groups by default.

Layer names: `{name}_stem_conv`, `{name}_down{i}_conv` (i >= 1),
`{name}_down{i}_block{j}_{norm1,act1,conv1,norm2,act2,conv2,add}`,
`{name}_up{i}_conv`, `{name}_up{i}_upsample`, `{name}_up{i}_add`,
`{name}_up{i}_block{j}_...`, `{name}_final_norm`, `{name}_final_act`,
`{name}_head`, `{name}_output`.

Reference: Myronenko, "3D MRI brain tumor segmentation using autoencoder
regularization", BrainLes (MICCAI workshop) 2018. Parameter counts equal
MONAI's `SegResNet` (`tests/zoo/test_volume_params.py`).
"""

import numbers

import keras
import numpy as np

from keras_medseg.layers import LinearUpsampling
from keras_medseg.utils.validation import check_positive_int, check_spatial_dims, spatial_shape
from keras_medseg.zoo import _blocks
from keras_medseg.zoo.registry import register_model

UPSAMPLE_MODES = ("linear", "deconv")


def _check_blocks(blocks, name, minimum_length):
    ok = isinstance(blocks, (tuple, list)) and len(blocks) >= minimum_length and all(
        isinstance(b, numbers.Integral) and not isinstance(b, bool) and b >= 1 for b in blocks)
    if not ok:
        raise ValueError(f"`{name}` must be a tuple of at least {minimum_length} positive ints (residual blocks "
                         f"per level). Received: {name}={blocks!r}")
    return tuple(int(b) for b in blocks)


def _res_block(x, normalization, prefix):
    """Pre-activation residual block at constant width (no bias in the convolutions)."""
    inputs = x
    filters = x.shape[-1]
    for j in (1, 2):
        x = _blocks.normalize(x, normalization, f"{prefix}_norm{j}")
        x = keras.layers.Activation("relu", name=f"{prefix}_act{j}")(x)
        x = _blocks.conv(x, filters, 3, 1, f"{prefix}_conv{j}")
    return keras.layers.Add(name=f"{prefix}_add")([x, inputs])


def _example(model, batch_size, seed):
    """A random `(x, y)` batch; free spatial sizes get the smallest grid the model accepts, times 2."""
    rng = np.random.default_rng(seed)
    in_shape = model.inputs[0].shape[1:]
    levels = sum(1 for layer in model.layers if layer.name.endswith("_conv") and "_down" in layer.name)
    spatial = tuple(s if s is not None else 2 ** (levels + 1) for s in in_shape[:-1])
    x = rng.normal(size=(batch_size, *spatial, in_shape[-1])).astype("float32")
    channels = model.outputs[0].shape[-1]
    if channels == 1:
        y = rng.integers(0, 2, size=(batch_size, *spatial, 1)).astype("float32")
    else:
        y = rng.integers(0, channels, size=(batch_size, *spatial)).astype("int32")
    return x, y


@register_model(
    "segresnet",
    description="SegResNet (Myronenko 2018): residual encoder, 1x1-conv + trilinear-upsampling decoder, no VAE",
    spatial_dims=(2, 3),
    task="segmentation",
    tiny={"init_filters": 4, "blocks_down": (1, 1), "blocks_up": (1,)},
    example=_example,
)
def segresnet(*, spatial_dims: int = 3, input_size: int | tuple | None = None, in_channels: int = 1,
              num_classes: int = 2, init_filters: int = 8, blocks_down: tuple = (1, 2, 2, 4),
              blocks_up: tuple = (1, 1, 1), normalization: str | None = "group", upsample_mode: str = "linear",
              dropout_rate: float = 0.0, loss: str = "dice_ce", ignore_index: int | None = None,
              learning_rate: float = 1e-3, name: str = "segresnet") -> keras.Model:
    """SegResNet for 2D/3D segmentation, compiled (Adam, Dice + cross-entropy, IoU/Dice metrics).

    Args:
        spatial_dims: 2 or 3 (default 3).
        input_size: spatial size (int or tuple) or None for any size divisible
            by `2**(len(blocks_down) - 1)` (default None).
        in_channels: image channels, e.g. 4 MR sequences (default 1).
        num_classes: 1 gives a sigmoid head (binary masks); >= 2 a softmax
            head with integer labels (default 2).
        init_filters: width of the first level, doubled per level (default 8,
            MONAI's default; the paper's BraTS model uses 32).
        blocks_down: residual blocks per encoder level (default (1, 2, 2, 4)
            as in the paper).
        blocks_up: residual blocks per decoder level, one entry per
            upsampling, `len(blocks_down) - 1` entries (default (1, 1, 1)).
        normalization: "group" (default; 8 groups, or `gcd(8, width)`),
            "instance", "batch" or None.
        upsample_mode: "linear" (default; trilinear/bilinear, no weights, as
            in the paper) or "deconv" (2x2 transposed convolution).
        dropout_rate: dropout after the stem convolution (default 0.0; the
            paper uses 0.2).
        loss: "dice_ce" (default) or "ce".
        ignore_index: label value the loss skips (default None).
        learning_rate: Adam learning rate (default 1e-3).
        name: model name / layer prefix (default "segresnet").

    Input/output shapes: 2D `(N, H, W, in_channels) -> (N, H, W, max(num_classes, 1))`,
    3D `(N, D, H, W, in_channels) -> (N, D, H, W, max(num_classes, 1))`.

    Raises:
        ValueError: bad `spatial_dims`, `blocks_down`/`blocks_up` (not
            positive ints, or `len(blocks_up) != len(blocks_down) - 1`),
            `normalization`, `upsample_mode`, `dropout_rate`, `loss`, or an
            `input_size` not divisible by `2**(len(blocks_down) - 1)`.

    Example:

    >>> model = keras_medseg.zoo.build("segresnet", in_channels=4, num_classes=3, input_size=64)

    Reference: Myronenko, "3D MRI brain tumor segmentation using autoencoder
    regularization", BrainLes 2018; parameter counts checked against MONAI's
    `SegResNet` (table in docs/zoo.md).
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    in_channels = check_positive_int(in_channels, "in_channels")
    num_classes = _blocks.check_compile_args(num_classes, loss, learning_rate, ignore_index)
    init_filters = check_positive_int(init_filters, "init_filters")
    blocks_down = _check_blocks(blocks_down, "blocks_down", 1)
    blocks_up = _check_blocks(blocks_up, "blocks_up", 0)
    if len(blocks_up) != len(blocks_down) - 1:
        raise ValueError(f"`blocks_up` needs one entry per upsampling, len(blocks_down) - 1 = {len(blocks_down) - 1}. "
                         f"Received: blocks_up={blocks_up!r}")
    normalization = _blocks.check_normalization(normalization)
    if upsample_mode not in UPSAMPLE_MODES:
        raise ValueError(f"`upsample_mode` must be one of {list(UPSAMPLE_MODES)}. "
                         f"Received: upsample_mode={upsample_mode!r}")
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, numbers.Real) or not 0 <= dropout_rate < 1:
        raise ValueError(f"`dropout_rate` must be in [0, 1). Received: dropout_rate={dropout_rate!r}")
    name = _blocks.check_name(name)
    levels = len(blocks_down) - 1
    shape = spatial_shape(input_size, spatial_dims, divisible_by=2 ** levels,
                          divisible_label=f"2**(len(blocks_down) - 1) = {2 ** levels}",
                          why=f"each of the {levels} stride-2 convolutions halves it")

    inputs = keras.Input(shape=(*shape, in_channels), name=f"{name}_input")
    x = _blocks.conv(inputs, init_filters, 3, 1, f"{name}_stem_conv")
    if dropout_rate > 0:
        x = keras.layers.Dropout(dropout_rate, name=f"{name}_stem_dropout")(x)
    skips = []
    for i, n_blocks in enumerate(blocks_down):
        if i > 0:
            x = _blocks.conv(x, init_filters * 2 ** i, 3, 2, f"{name}_down{i}_conv")
        for j in range(n_blocks):
            x = _res_block(x, normalization, f"{name}_down{i}_block{j}")
        skips.append(x)
    for i, n_blocks in enumerate(blocks_up):
        level = levels - 1 - i
        x = _blocks.conv(x, init_filters * 2 ** level, 1, 1, f"{name}_up{i}_conv")
        if upsample_mode == "linear":
            x = LinearUpsampling(2, name=f"{name}_up{i}_upsample")(x)
        else:
            x = _blocks.transposed_conv(x, init_filters * 2 ** level, 2, 2, f"{name}_up{i}_upsample", use_bias=True)
        x = keras.layers.Add(name=f"{name}_up{i}_add")([x, skips[level]])
        for j in range(n_blocks):
            x = _res_block(x, normalization, f"{name}_up{i}_block{j}")
    x = _blocks.normalize(x, normalization, f"{name}_final_norm")
    x = keras.layers.Activation("relu", name=f"{name}_final_act")(x)
    outputs = _blocks.head(x, num_classes, name)
    model = keras.Model(inputs, outputs, name=name)
    return _blocks.compile_segmenter(model, num_classes, loss, ignore_index, learning_rate)
