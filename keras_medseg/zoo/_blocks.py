"""Building blocks shared by the volume segmenters (`segresnet`, `unetr`, `swin_unetr`, `dynunet`).

Private to the zoo: convolution / transposed convolution / nearest upsampling
classes by `spatial_dims`, one normalisation factory, the nnU-Net style
convolution blocks (two convolutions with normalisation and leaky ReLU,
optionally residual), the up block (transposed convolution, concatenation with
the skip, convolution block), the 1x1 head and the compile step.

Layer names: `{prefix}_conv{j}`, `{prefix}_norm{j}`, `{prefix}_act{j}`,
`{prefix}_add` (residual blocks), `{prefix}_up` / `{prefix}_concat` (up blocks).

Reference: Isensee et al., "nnU-Net: a self-configuring method for deep
learning-based biomedical image segmentation", Nature Methods 2021 (the blocks);
MONAI's `DynUNet` blocks were read for the layout (no code taken).
"""

import numbers

import keras

from keras_medseg.layers.factories import layers_for, normalization
from keras_medseg.utils.validation import check_positive, check_positive_int

NORMALIZATIONS = ("instance", "group", "batch", None)
LOSSES = ("dice_ce", "ce")


def check_normalization(normalization):
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {list(NORMALIZATIONS)}. "
                         f"Received: normalization={normalization!r}")
    return normalization


def check_name(name):
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string. Received: name={name!r}")
    return name


def check_compile_args(num_classes, loss, learning_rate, ignore_index):
    """Validate the arguments every segmenter compiles with; returns `num_classes`."""
    num_classes = check_positive_int(num_classes, "num_classes")
    check_positive(learning_rate, "learning_rate")
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be 'dice_ce' or 'ce'. Received: loss={loss!r}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral)):
        raise ValueError(f"`ignore_index` must be an int or None. Received: ignore_index={ignore_index!r}")
    return num_classes


def norm_layer(kind, channels, name, affine=True, groups=8):
    """A normalisation layer (or None): instance (per channel), group (`gcd(groups, C)` groups) or batch.

    Instance and group norm are `keras.layers.GroupNormalization` (epsilon
    1e-5 as in PyTorch); `affine=False` drops the per-channel scale and shift,
    as PyTorch's `InstanceNorm3d` default that MONAI's UNETR and Swin UNETR use.
    """
    if kind is None:
        return None
    return normalization(kind, name, channels=channels, groups=groups, epsilon=1e-5, affine=affine,
                         momentum=0.9 if kind == "batch" else None)


def normalize(x, kind, name, affine=True, groups=8):
    layer = norm_layer(kind, x.shape[-1], name, affine=affine, groups=groups)
    return x if layer is None else layer(x)


def conv(x, filters, kernel_size, strides, name, use_bias=False):
    d = len(x.shape) - 2
    return layers_for(d).conv(filters, kernel_size, strides=strides, padding="same", use_bias=use_bias, name=name)(x)


def conv_block(x, filters, kernel_size, strides, normalization, prefix, affine=True, residual=False):
    """Two `kernel_size` convolutions (the first with `strides`), each normalised, leaky ReLU (slope 0.01).

    `residual=True` adds the input (through a 1x1 strided convolution + norm
    when the width or the grid changes) before the second activation: MONAI's
    `UnetResBlock`; otherwise MONAI's `UnetBasicBlock`. Convolutions have no
    bias (a norm follows each).
    """
    inputs = x
    x = conv(x, filters, kernel_size, strides, f"{prefix}_conv1", use_bias=normalization is None)
    x = normalize(x, normalization, f"{prefix}_norm1", affine)
    x = keras.layers.LeakyReLU(negative_slope=0.01, name=f"{prefix}_act1")(x)
    x = conv(x, filters, kernel_size, 1, f"{prefix}_conv2", use_bias=normalization is None)
    x = normalize(x, normalization, f"{prefix}_norm2", affine)
    if residual:
        strided = any(s != 1 for s in (strides if isinstance(strides, (tuple, list)) else (strides,)))
        if inputs.shape[-1] != filters or strided:
            inputs = conv(inputs, filters, 1, strides, f"{prefix}_conv3", use_bias=normalization is None)
            inputs = normalize(inputs, normalization, f"{prefix}_norm3", affine)
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return keras.layers.LeakyReLU(negative_slope=0.01, name=f"{prefix}_act2")(x)


def transposed_conv(x, filters, kernel_size, strides, name, use_bias=False):
    d = len(x.shape) - 2
    layer = layers_for(d).conv_transpose
    return layer(filters, kernel_size, strides=strides, padding="same", use_bias=use_bias, name=name)(x)


def up_block(x, skip, filters, kernel_size, up_kernel_size, up_strides, normalization, prefix, affine=True,
             residual=False, up_bias=False):
    """Transposed convolution to `filters`, concatenation `[up, skip]`, then `conv_block` (stride 1)."""
    x = transposed_conv(x, filters, up_kernel_size, up_strides, f"{prefix}_up", use_bias=up_bias)
    x = keras.layers.Concatenate(axis=-1, name=f"{prefix}_concat")([x, skip])
    return conv_block(x, filters, kernel_size, 1, normalization, prefix, affine=affine, residual=residual)


def head(x, num_classes, name):
    """1x1 convolution (with bias) to `max(num_classes, 1)` channels + sigmoid/softmax in float32."""
    x = conv(x, num_classes, 1, 1, f"{name}_head", use_bias=True)
    activation = "sigmoid" if num_classes == 1 else "softmax"
    return keras.layers.Activation(activation, dtype="float32", name=f"{name}_output")(x)


def compile_segmenter(model, num_classes, loss, ignore_index, learning_rate, loss_weights=None):
    """Adam + Dice/CE (or CE) + accuracy/IoU/Dice on the first output; `loss_weights` for several outputs."""
    from keras_medseg.losses import DiceCELoss, SegmentationCrossentropy
    from keras_medseg.metrics import segmentation_metrics

    def make_loss():
        return (DiceCELoss(ignore_index=ignore_index) if loss == "dice_ce"
                else SegmentationCrossentropy(ignore_index=ignore_index))

    names = list(model.output_names)  # the output layers, in order
    if len(names) == 1:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=make_loss(),
                      metrics=segmentation_metrics(num_classes))
        return model
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss={n: make_loss() for n in names},
                  loss_weights={n: float(w) for n, w in zip(names, loss_weights)},
                  metrics={names[0]: segmentation_metrics(num_classes)})
    return model
