"""DynUNet: nnU-Net's configurable UNet with deep supervision, 2D and 3D (`zoo.build("dynunet", ...)`).

One level per entry of `kernel_size` / `strides`: an input block (level 0,
stride `strides[0]`), down blocks, a bottleneck (the last level); each block is
two convolutions with instance norm and leaky ReLU (`res_block=True`: with a
residual connection). Each up block upsamples with a transposed convolution
(kernel `upsample_kernel_size`, stride = the level's stride), concatenates the
skip of the level above and runs a block; a 1x1 head gives the classes.
Kernels and strides may differ per axis (anisotropic spacing), e.g.
`kernel_size=((1, 3, 3), 3, 3)`, `strides=(1, (1, 2, 2), 2)`.

Deep supervision (`deep_supervision=True`): `deep_supr_num` extra 1x1 heads on
the outputs of the next-highest up blocks, upsampled (nearest) to the main
output's grid, so the model has `1 + deep_supr_num` outputs that all take the
same label map. They are compiled with weights `1/2**k` normalised to sum 1
(`deep_supervision_weights`, as nnU-Net). Train with `fit(x, [y] * (1 +
deep_supr_num))`; `inference_model(model)` is the single-output network for
`predict` and sliding-window inference (shared weights).

Layer names: `{name}_level{i}_{conv1,norm1,act1,conv2,norm2,act2}` (i = 0 is the
input block, the last i the bottleneck), `{name}_up{i}_{up,concat,conv1,...}`
(the up block whose output is on level i's grid), `{name}_head`, `{name}_output`,
`{name}_ds{k}_head`, `{name}_ds{k}_upsample`, `{name}_ds{k}_output`.

Reference: Isensee, Jaeger, Kohl, Petersen, Maier-Hein, "nnU-Net: a
self-configuring method for deep learning-based biomedical image segmentation",
Nature Methods 2021. Parameter counts equal MONAI's `DynUNet`
(`tests/zoo/test_volume_params.py`).
"""

import math
import numbers

import keras
import numpy as np

from keras_medseg.layers.factories import layers_for
from keras_medseg.utils.validation import check_positive_int, check_spatial_dims
from keras_medseg.zoo import _blocks
from keras_medseg.zoo.registry import register_model


def _per_axis(value, d, name, index, minimum):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * d
    if not isinstance(value, (tuple, list)) or len(value) != d or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in value):
        raise ValueError(f"`{name}[{index}]` must be an int >= {minimum} or a tuple of {d} such ints. "
                         f"Received: {name}={value!r} at index {index}")
    return tuple(int(v) for v in value)


def _per_level(values, d, name, minimum, length=None):
    if not isinstance(values, (tuple, list)) or (length is None and len(values) < 3) or (
            length is not None and len(values) != length):
        need = "at least 3 entries (input block, one down block, bottleneck)" if length is None else \
            f"{length} entries"
        raise ValueError(f"`{name}` must be a tuple with {need}. Received: {name}={values!r}")
    return tuple(_per_axis(v, d, name, i, minimum) for i, v in enumerate(values))


def default_filters(levels, spatial_dims):
    """nnU-Net's widths: 32 doubled per level, capped at 320 (3D) or 512 (2D)."""
    return tuple(min(2 ** (5 + i), 320 if spatial_dims == 3 else 512) for i in range(levels))


def deep_supervision_weights(n_outputs):
    """nnU-Net's loss weights `1, 1/2, 1/4, ...` for the main and the deeper outputs, normalised to sum 1."""
    n_outputs = check_positive_int(n_outputs, "n_outputs")
    weights = np.array([0.5 ** k for k in range(n_outputs)])
    return tuple(float(w) for w in weights / weights.sum())


def inference_model(model):
    """The main output of a deep-supervised `dynunet` as a single-output `keras.Model` (shared weights).

    Args:
        model: a `dynunet` model (with or without deep supervision).

    Returns:
        `model` itself when it has one output, else a functional model from
        its input to its first output (for `predict`, sliding-window inference
        and export).

    Example:

    >>> net = keras_medseg.zoo.build("dynunet", deep_supervision=True, deep_supr_num=2)
    >>> predictor = keras_medseg.zoo.dynunet.inference_model(net)
    """
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.input, model.outputs[0], name=f"{model.name}_inference")


def _example(model, batch_size, seed):
    """A random batch: free sizes are twice the product of the strides; one target per output."""
    rng = np.random.default_rng(seed)
    in_shape = model.inputs[0].shape[1:]
    level_strides = [layer.strides for layer in model.layers
                     if "_level" in layer.name and layer.name.endswith("_conv1")]
    factor = [math.prod(s[a] for s in level_strides) for a in range(len(in_shape) - 1)]
    spatial = tuple(s if s is not None else 2 * f for s, f in zip(in_shape[:-1], factor))
    x = rng.normal(size=(batch_size, *spatial, in_shape[-1])).astype("float32")
    out_spatial = tuple(s // f for s, f in zip(spatial, level_strides[0]))
    channels = model.outputs[0].shape[-1]
    if channels == 1:
        y = rng.integers(0, 2, size=(batch_size, *out_spatial, 1)).astype("float32")
    else:
        y = rng.integers(0, channels, size=(batch_size, *out_spatial)).astype("int32")
    return x, (y if len(model.outputs) == 1 else [y] * len(model.outputs))


@register_model(
    "dynunet",
    description="DynUNet (nnU-Net's network): per-level kernels/strides, instance norm, optional deep supervision",
    spatial_dims=(2, 3),
    task="segmentation",
    tiny={"kernel_size": (3, 3, 3), "strides": (1, 2, 2), "filters": (4, 8, 8), "deep_supervision": True},
    example=_example,
)
def dynunet(*, spatial_dims: int = 3, input_size: int | tuple | None = None, in_channels: int = 1,
            num_classes: int = 2, kernel_size: tuple = (3, 3, 3, 3, 3, 3), strides: tuple = (1, 2, 2, 2, 2, 2),
            upsample_kernel_size: tuple | None = None, filters: tuple | None = None,
            normalization: str | None = "instance", res_block: bool = False, deep_supervision: bool = False,
            deep_supr_num: int = 1, trans_bias: bool = False, loss: str = "dice_ce",
            ignore_index: int | None = None, learning_rate: float = 1e-3, name: str = "dynunet") -> keras.Model:
    """DynUNet (nnU-Net's UNet) for 2D/3D segmentation, compiled (Adam, Dice + cross-entropy, IoU/Dice).

    Args:
        spatial_dims: 2 or 3 (default 3).
        input_size: spatial size (int or tuple) or None for any size divisible
            by the product of the strides on every axis (default None).
        in_channels: image channels (default 1).
        num_classes: 1 gives a sigmoid head; >= 2 a softmax head with integer
            labels (default 2).
        kernel_size: one kernel per level, int or per-axis tuple (default
            `(3,) * 6`: nnU-Net's 3D full-resolution plan for a 128^3 patch).
        strides: one stride per level, int or per-axis tuple; the first is the
            input block's (default `(1, 2, 2, 2, 2, 2)`).
        upsample_kernel_size: transposed-convolution kernel per up block
            (`len(strides) - 1` entries; default None: `strides[1:]`).
        filters: width per level (default None: 32 doubled per level, capped
            at 320 in 3D and 512 in 2D, as nnU-Net).
        normalization: "instance" (default; with scale and shift), "group",
            "batch" or None.
        res_block: residual convolution blocks (default False).
        deep_supervision: add `deep_supr_num` extra outputs (default False).
        deep_supr_num: extra outputs, 1 <= deep_supr_num < number of up
            blocks (default 1).
        trans_bias: bias in the transposed convolutions (default False).
        loss: "dice_ce" (default) or "ce", on every output.
        ignore_index: label value the loss skips (default None).
        learning_rate: Adam learning rate (default 1e-3).
        name: model name / layer prefix (default "dynunet").

    Input/output shapes: `(N, *S, in_channels) -> (N, *(S / strides[0]), max(num_classes, 1))`,
    `S = (H, W)` or `(D, H, W)`; with deep supervision a list of
    `1 + deep_supr_num` such outputs (main first).

    Raises:
        ValueError: bad `spatial_dims`, `kernel_size`/`strides` (fewer than 3
            levels, different lengths, wrong per-axis length), `filters` or
            `upsample_kernel_size` of the wrong length, `deep_supr_num` out of
            range, `normalization`, `loss`, or an `input_size` not divisible by
            the product of the strides.

    Example:

    >>> model = keras_medseg.zoo.build("dynunet", kernel_size=(3, 3, 3, 3), strides=(1, 2, 2, 2),
    ...                                deep_supervision=True, deep_supr_num=2)
    >>> x = np.zeros((1, 32, 32, 32, 1), "float32"); y = np.zeros((1, 32, 32, 32), "int32")
    >>> history = model.fit(x, [y] * 3, verbose=0)

    Reference: Isensee et al., "nnU-Net", Nature Methods 2021; parameter counts
    checked against MONAI's `DynUNet` (table in docs/zoo.md).
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    in_channels = check_positive_int(in_channels, "in_channels")
    num_classes = _blocks.check_compile_args(num_classes, loss, learning_rate, ignore_index)
    kernels = _per_level(kernel_size, spatial_dims, "kernel_size", 1)
    levels = len(kernels)
    stride_list = _per_level(strides, spatial_dims, "strides", 1, length=levels)
    if upsample_kernel_size is None:
        up_kernels = stride_list[1:]
    else:
        up_kernels = _per_level(upsample_kernel_size, spatial_dims, "upsample_kernel_size", 1, length=levels - 1)
    if filters is None:
        widths = default_filters(levels, spatial_dims)
    else:
        if not isinstance(filters, (tuple, list)) or len(filters) < levels:
            raise ValueError(f"`filters` needs one width per level ({levels}). Received: filters={filters!r}")
        widths = tuple(check_positive_int(f, "filters") for f in filters[:levels])
    normalization = _blocks.check_normalization(normalization)
    deep_supr_num = check_positive_int(deep_supr_num, "deep_supr_num")
    if deep_supervision and deep_supr_num >= levels - 1:
        raise ValueError(f"`deep_supr_num` must be less than the number of up blocks ({levels - 1}). "
                         f"Received: deep_supr_num={deep_supr_num}")
    name = _blocks.check_name(name)
    divisor = [math.prod(s[k] for s in stride_list) for k in range(spatial_dims)]
    shape = _input_shape(input_size, spatial_dims, divisor)

    inputs = keras.Input(shape=(*shape, in_channels), name=f"{name}_input")
    x = inputs
    skips = []
    for i in range(levels):
        x = _blocks.conv_block(x, widths[i], kernels[i], stride_list[i], normalization, f"{name}_level{i}",
                               residual=res_block)
        skips.append(x)
    level_outputs = {}
    for i in reversed(range(levels - 1)):
        x = _blocks.up_block(x, skips[i], widths[i], kernels[i + 1], up_kernels[i], stride_list[i + 1],
                             normalization, f"{name}_up{i}", residual=False, up_bias=trans_bias)
        level_outputs[i] = x
    outputs = [_blocks.head(x, num_classes, name)]
    if deep_supervision:
        for k in range(1, deep_supr_num + 1):
            y = _blocks.conv(level_outputs[k], num_classes, 1, 1, f"{name}_ds{k}_head", use_bias=True)
            factor = tuple(math.prod(s[a] for s in stride_list[1:k + 1]) for a in range(spatial_dims))
            y = layers_for(spatial_dims).upsampling(factor, name=f"{name}_ds{k}_upsample")(y)
            activation = "sigmoid" if num_classes == 1 else "softmax"
            outputs.append(keras.layers.Activation(activation, dtype="float32", name=f"{name}_ds{k}_output")(y))
    model = keras.Model(inputs, outputs if deep_supervision else outputs[0], name=name)
    return _blocks.compile_segmenter(model, num_classes, loss, ignore_index, learning_rate,
                                     loss_weights=deep_supervision_weights(len(outputs)))


def _input_shape(input_size, d, divisor):
    if input_size is None:
        return (None,) * d
    if isinstance(input_size, numbers.Integral) and not isinstance(input_size, bool):
        input_size = (int(input_size),) * d
    if not isinstance(input_size, (tuple, list)) or len(input_size) != d or any(
            s is not None and (isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1)
            for s in input_size):
        raise ValueError(f"`input_size` must be None, an int or a tuple of {d} positive ints. "
                         f"Received: input_size={input_size!r}")
    for s, q in zip(input_size, divisor):
        if s is not None and s % q:
            raise ValueError(f"`input_size` must be divisible by the product of the strides, {tuple(divisor)}, "
                             f"axis by axis. Received: input_size={tuple(input_size)}")
    return tuple(None if s is None else int(s) for s in input_size)
