"""UNet for 2D and 3D segmentation (`zoo.build("unet", ...)`).

Encoder of `depth` down-sampling levels (two 3x3 convolutions, normalisation
(instance by default; group, batch or none as options), ReLU, 2x max
pooling), a bottleneck, and a decoder that upsamples with 2x transposed
convolutions and concatenates the encoder feature map of the
same level (skip connection) before two more convolutions. Widths double at
every level: `filters * 2**level`.

`unet_backbone(...)` returns the uncompiled functional network with any output
activation (the pix2pix generator uses it with `tanh`); `unet(...)` is the
registered zoo builder that adds a sigmoid/softmax head and compiles.

Layer names are deterministic: `{name}_enc{i}_conv{j}`, `{name}_enc{i}_bn{j}`
(batch norm) or `{name}_enc{i}_norm{j}` (instance/group norm),
`{name}_enc{i}_pool`, `{name}_bottleneck_conv{j}`, `{name}_dec{i}_up`,
`{name}_dec{i}_concat`, `{name}_dec{i}_conv{j}`, `{name}_head`.

Reference: Ronneberger, Fischer, Brox, "U-Net: convolutional networks for
biomedical image segmentation", MICCAI 2015; Cicek et al., "3D U-Net", MICCAI
2016 (J. Actor's "Identification of Kernels in a Convolutional Neural Network"
and A. Yala's "Advanced Imaging: Localization and Segmentation" use it as the
segmentation baseline).
"""


import keras
import numpy as np

from keras_medseg.layers.factories import layers_for
from keras_medseg.layers.factories import normalization as norm_layer
from keras_medseg.utils.validation import check_positive, check_positive_int, check_spatial_dims, spatial_shape
from keras_medseg.zoo.registry import register_model

NORMALIZATIONS = ("instance", "group", "batch", None)


def _resolve_normalization(normalization, batch_norm):
    """`batch_norm` (the older boolean switch) wins when given: True -> "batch", False -> None."""
    if batch_norm is not None:
        if not isinstance(batch_norm, bool):
            raise ValueError(f"`batch_norm` must be True, False or None. Received: batch_norm={batch_norm!r}")
        return "batch" if batch_norm else None
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {list(NORMALIZATIONS)}. "
                         f"Received: normalization={normalization!r}")
    return normalization


def _norm_layer(kind, filters, prefix, j):
    # instance norm = one group per channel; group norm = up to 8 groups (Wu and He, ECCV 2018)
    if kind == "batch":
        return norm_layer("batch", f"{prefix}_bn{j}")
    return norm_layer(kind, f"{prefix}_norm{j}", channels=filters, epsilon=1e-5)


def _conv_block(x, filters, spatial_dims, normalization, prefix):
    for j in (1, 2):
        x = layers_for(spatial_dims).conv(filters, 3, padding="same", use_bias=normalization is None,
                                          name=f"{prefix}_conv{j}")(x)
        if normalization is not None:
            x = _norm_layer(normalization, filters, prefix, j)(x)
        x = keras.layers.Activation("relu", name=f"{prefix}_relu{j}")(x)
    return x


def unet_backbone(spatial_dims=2, input_size=None, in_channels=1, out_channels=1, depth=3, filters=16,
                  normalization="instance", batch_norm=None, output_activation="sigmoid", name="unet"):
    """Uncompiled UNet as a functional `keras.Model` with a chosen output activation.

    Args:
        spatial_dims: 2 or 3 (default 2).
        input_size: spatial size (int, tuple, or None for any size divisible by
            `2**depth`; default None).
        in_channels: input channels (default 1).
        out_channels: channels of the final 1x1 convolution (default 1).
        depth: number of down-sampling levels (default 3).
        filters: width of the first level; level `i` has `filters * 2**i` (default 16).
        normalization: after every convolution: "instance" (default; the same
            in training and inference, as nnU-Net and MONAI), "group", "batch"
            or None.
        batch_norm: older switch, overrides `normalization` when not None:
            True is "batch", False is None (default None).
        output_activation: Keras activation name of the head, e.g. "sigmoid",
            "softmax", "tanh" or "linear" (default "sigmoid"). The head runs
            in float32 under mixed precision.
        name: model name and layer-name prefix (default "unet").

    Input/output shapes: 2D `(N, H, W, in_channels) -> (N, H, W, out_channels)`,
    3D `(N, D, H, W, in_channels) -> (N, D, H, W, out_channels)`.

    Raises:
        ValueError: `spatial_dims` not 2/3, non-positive `depth`/`filters`/
            channels, or an `input_size` not divisible by `2**depth`.

    Example:

    >>> g = keras_medseg.zoo.unet.unet_backbone(input_size=64, in_channels=3, out_channels=3,
    ...                                        output_activation="tanh", name="generator")

    Reference: Ronneberger et al., MICCAI 2015.
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    normalization = _resolve_normalization(normalization, batch_norm)
    depth = check_positive_int(depth, "depth")
    filters = check_positive_int(filters, "filters")
    in_channels = check_positive_int(in_channels, "in_channels")
    out_channels = check_positive_int(out_channels, "out_channels")
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string. Received: name={name!r}")
    try:
        keras.activations.get(output_activation)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"`output_activation` is not a Keras activation. Received: output_activation={output_activation!r}"
        ) from exc
    shape = spatial_shape(input_size, spatial_dims, divisible_by=2**depth,
                          divisible_label=f"2**depth = {2**depth}",
                          why=f"each of the {depth} levels halves it")

    inputs = keras.Input(shape=shape + (in_channels,), name=f"{name}_input")
    x = inputs
    skips = []
    for i in range(depth):
        x = _conv_block(x, filters * 2**i, spatial_dims, normalization, f"{name}_enc{i}")
        skips.append(x)
        x = layers_for(spatial_dims).max_pool(2, name=f"{name}_enc{i}_pool")(x)
    x = _conv_block(x, filters * 2**depth, spatial_dims, normalization, f"{name}_bottleneck")
    for i in reversed(range(depth)):
        x = layers_for(spatial_dims).conv_transpose(filters * 2**i, 2, strides=2, padding="same",
                                                    name=f"{name}_dec{i}_up")(x)
        x = keras.layers.Concatenate(axis=-1, name=f"{name}_dec{i}_concat")([skips[i], x])
        x = _conv_block(x, filters * 2**i, spatial_dims, normalization, f"{name}_dec{i}")
    x = layers_for(spatial_dims).conv(out_channels, 1, name=f"{name}_head")(x)
    outputs = keras.layers.Activation(output_activation, dtype="float32", name=f"{name}_output")(x)
    return keras.Model(inputs, outputs, name=name)


def _example(model, batch_size, seed):
    """A random `(x, y)` batch for the zoo-wide tests (spatial size 2**depth * 2 where free)."""
    rng = np.random.default_rng(seed)
    in_shape = model.inputs[0].shape[1:]
    n_pool = sum(1 for layer in model.layers if layer.name.endswith("_pool"))
    spatial = tuple(s if s is not None else 2 ** (n_pool + 1) for s in in_shape[:-1])
    x = rng.normal(size=(batch_size,) + spatial + (in_shape[-1],)).astype("float32")
    channels = model.outputs[0].shape[-1]
    if channels == 1:
        y = rng.integers(0, 2, size=(batch_size,) + spatial + (1,)).astype("float32")
    else:
        y = rng.integers(0, channels, size=(batch_size,) + spatial).astype("int32")
    return x, y


@register_model(
    "unet",
    description="2D/3D UNet: conv encoder, transposed-conv decoder, skip concatenation, sigmoid/softmax head",
    spatial_dims=(2, 3),
    task="segmentation",
    tiny={"depth": 2, "filters": 4},
    example=_example,
)
def unet(spatial_dims=2, input_size=None, in_channels=1, num_classes=1, depth=3, filters=16,
         normalization="instance", batch_norm=None, loss="dice_ce", ignore_index=None, learning_rate=1e-3,
         name="unet"):
    """2D/3D UNet for segmentation, compiled (Adam, Dice + cross-entropy, IoU/Dice metrics).

    Args:
        spatial_dims: 2 or 3 (default 2).
        input_size: spatial size (int or tuple) or None for any size divisible
            by `2**depth` (default None).
        in_channels: image channels (default 1).
        num_classes: 1 gives a one-channel sigmoid head (binary masks, binary
            cross-entropy); >= 2 a softmax head over `num_classes` channels with
            integer labels. Default 1.
        depth: down-sampling levels (default 3).
        filters: width of the first level, doubled per level (default 16).
        normalization: "instance" (default), "group", "batch" or None; instance
            and group norm score the same in `predict` as in training after a
            short run, batch norm's moving statistics may not have caught up.
        batch_norm: older switch, True = "batch", False = None; overrides
            `normalization` when not None (default None).
        loss: "dice_ce" (default: `keras_medseg.losses.DiceCELoss`, measured
            no worse than cross-entropy on a small task, see
            `tests/test_seg_losses.py`) or "ce"
            (`keras_medseg.losses.SegmentationCrossentropy`); both run on
            TensorFlow, JAX and torch.
        ignore_index: label value the loss skips (default None).
        learning_rate: Adam learning rate (default 1e-3).
        name: model name / layer prefix (default "unet").

    Input/output shapes: 2D `(N, H, W, in_channels) -> (N, H, W, max(num_classes, 1))`,
    3D `(N, D, H, W, in_channels) -> (N, D, H, W, max(num_classes, 1))`;
    labels `(N, H, W)` ints (softmax) or `(N, H, W, 1)` in {0, 1} (sigmoid).

    Raises:
        ValueError: bad `spatial_dims`, `depth`, `filters`, `num_classes`,
            `learning_rate`, or `input_size` not divisible by `2**depth`.

    Example:

    >>> model = keras_medseg.zoo.build("unet", spatial_dims=3, num_classes=3, filters=8)

    Reference: Ronneberger et al., MICCAI 2015; Cicek et al., MICCAI 2016.
    """
    from keras_medseg.losses import DiceCELoss, SegmentationCrossentropy
    from keras_medseg.metrics import segmentation_metrics

    num_classes = check_positive_int(num_classes, "num_classes")
    check_positive(learning_rate, "learning_rate")
    if loss not in ("dice_ce", "ce"):
        raise ValueError(f"`loss` must be 'dice_ce' or 'ce'. Received: loss={loss!r}")
    model = unet_backbone(spatial_dims=spatial_dims, input_size=input_size, in_channels=in_channels,
                          out_channels=num_classes, depth=depth, filters=filters, normalization=normalization,
                          batch_norm=batch_norm, output_activation="sigmoid" if num_classes == 1 else "softmax",
                          name=name)
    loss_fn = (DiceCELoss(ignore_index=ignore_index) if loss == "dice_ce"
               else SegmentationCrossentropy(ignore_index=ignore_index))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss_fn,
                  metrics=segmentation_metrics(num_classes))
    return model
