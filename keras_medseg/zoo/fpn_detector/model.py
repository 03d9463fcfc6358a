"""The `fpn_detector` model: backbone, feature pyramid, shared per-cell heads, `CellPredictions`."""

import math

import keras
import numpy as np
from keras import layers, ops

from keras_medseg.layers.factories import layers_for, normalization
from keras_medseg.losses import BoxLoss
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import (
    check_choice,
    check_positive,
    check_positive_int,
    check_spatial_dims,
)
from keras_medseg.zoo.fpn_detector.coder import BoxCoder, _check_geometry
from keras_medseg.zoo.registry import register_model


def box_coder(model):
    """The `BoxCoder` matching a model built by `zoo.build("fpn_detector", ...)` (also after loading)."""
    for layer in model.layers:
        if isinstance(layer, CellPredictions):
            return BoxCoder(layer.image_shape, layer.strides, layer.anchor_sizes)
    raise ValueError(f"`model` has no `CellPredictions` layer; it is not an fpn_detector. "
                     f"Received: model.name={model.name!r}")


@register
class CellPredictions(layers.Layer):
    """Flatten per-level head outputs into `(N, num_cells, 1 + 2d)` and apply the output activations.

    Channel 0 (objectness) and channels `1..d` (centre offsets in the cell) go
    through a sigmoid; channels `d+1..2d` (log sizes) stay linear. Holds the
    detector geometry (`image_shape`, `strides`, `anchor_sizes`) so that
    `box_coder(model)` works on a loaded model.

    Args:
        image_shape, strides, anchor_sizes: see `BoxCoder`.

    Input shape: list of `(N, *grid_l, 1 + 2d)`, one per stride.
    Output shape: `(N, sum_l prod(grid_l), 1 + 2d)`.
    """

    def __init__(self, image_shape, strides, anchor_sizes=None, **kwargs):
        super().__init__(**kwargs)
        self.image_shape, self.strides, self.anchor_sizes = _check_geometry(image_shape, strides, anchor_sizes)

    def call(self, inputs):
        d = len(self.image_shape)
        flat = []
        for t in inputs:
            cells = int(np.prod(t.shape[1:-1]))
            t = ops.reshape(t, (-1, cells, 1 + 2 * d))
            flat.append(ops.concatenate([ops.sigmoid(t[..., :1 + d]), t[..., 1 + d:]], axis=-1))
        return ops.concatenate(flat, axis=1)

    def compute_output_shape(self, input_shape):
        cells = sum(int(np.prod(s[1:-1])) for s in input_shape)
        return (input_shape[0][0], cells, input_shape[0][-1])

    def get_config(self):
        config = super().get_config()
        config.update({"image_shape": list(self.image_shape), "strides": list(self.strides),
                       "anchor_sizes": list(self.anchor_sizes)})
        return config


def _example(model, batch_size, seed):
    coder = box_coder(model)
    side = min(coder.image_shape)
    x, boxes = _synthetic(batch_size, coder.image_shape, seed, side)
    return x, coder.encode(boxes)


def _synthetic(n, image_shape, seed, side):
    from keras_medseg.data.synthetic.boxes import synthetic_boxes

    return synthetic_boxes(n, image_shape=image_shape, size_range=(max(2, side // 5), max(3, side // 3)),
                           seed=seed)


@register_model("fpn_detector", spatial_dims=(2, 3), task="detection",
                tiny={"filters": 4, "pyramid_filters": 8, "strides": (4, 8)},
                example=_example)
def fpn_detector(spatial_dims=2, image_shape=None, in_channels=1, filters=16, pyramid_filters=32,
                 strides=(4, 8, 16), anchor_sizes=None, objectness_loss="mse", prior_probability=0.01,
                 batch_norm=True, learning_rate=1e-3, name="fpn_detector"):
    """Feature-pyramid box detector with per-cell `(p, centre offset, size)` heads, 2D or 3D.

    Args:
        spatial_dims: 2 or 3 (default 2).
        image_shape: spatial input shape; default `(64, 64)` in 2D, `(32, 32, 32)` in 3D.
            Every entry must be divisible by the largest stride.
        in_channels: int, input channels (default 1).
        filters: int, backbone width of the stem; stage `l` has
            `min(filters * 2**l, 8 * filters)` filters (default 16).
        pyramid_filters: int, width of the pyramid and head (default 32).
        strides: pyramid strides (cell sizes), doubling powers of two, default `(4, 8, 16)`.
        anchor_sizes: reference box side per stride (default: the strides).
        objectness_loss: `"mse"` (default, seed), `"bce"` or `"focal"` (see `BoxLoss`).
        prior_probability: initial objectness of every cell (bias init), default 0.01.
        batch_norm: bool, batch normalisation after every backbone convolution (default True).
        learning_rate: Adam learning rate (default 1e-3).
        name: model name and layer-name prefix (default "fpn_detector").

    Input shape: `(N, H, W, in_channels)` or `(N, D, H, W, in_channels)`.
    Output shape: `(N, num_cells, 5)` (2D) or `(N, num_cells, 7)` (3D), see the module docstring.

    Returns:
        A `keras.Model` compiled with Adam and `keras_medseg.losses.BoxLoss`;
        train it on `(x, encode_targets(boxes, image_shape, strides))` and
        decode with `box_coder(model).decode(model.predict(x))`.

    Raises:
        ValueError: bad `spatial_dims`, `image_shape`, `strides`, `anchor_sizes`,
            `objectness_loss` or `prior_probability`.

    Example:

    ```python
    model = keras_medseg.zoo.build("fpn_detector", spatial_dims=3, image_shape=(32, 32, 32))
    ```

    Reference:
        A. Yala, "Advanced Imaging: Localization and Segmentation" (lecture,
        CPH 100A; bounding box prediction, feature pyramids).
    """
    d = check_spatial_dims(spatial_dims)
    if image_shape is None:
        image_shape = (64, 64) if d == 2 else (32, 32, 32)
    image_shape = tuple(image_shape)
    if len(image_shape) != d:
        raise ValueError(
            f"`image_shape` must have {d} entries for spatial_dims={d}. Received: image_shape={image_shape}"
        )
    image_shape, strides, anchor_sizes = _check_geometry(image_shape, strides, anchor_sizes)
    in_channels = check_positive_int(in_channels, "in_channels")
    filters = check_positive_int(filters, "filters")
    pyramid_filters = check_positive_int(pyramid_filters, "pyramid_filters")
    check_choice(objectness_loss, "objectness_loss", ("mse", "bce", "focal"))
    if not 0.0 < prior_probability < 1.0:
        raise ValueError(f"`prior_probability` must be in (0, 1). Received: prior_probability={prior_probability}")
    check_positive(learning_rate, "learning_rate")
    conv, up = layers_for(d).conv, layers_for(d).upsampling
    levels = [int(round(math.log2(s))) for s in strides]

    # backbone: stem at stride 1, stage l at stride 2**l
    def conv_block(t, f, lname, stride=1):
        t = conv(f, 3, strides=stride, padding="same", use_bias=not batch_norm, name=lname)(t)
        if batch_norm:
            t = normalization("batch", f"{lname}_bn")(t)
        return layers.ReLU(name=f"{lname}_relu")(t)

    inputs = keras.Input((*image_shape, in_channels), name=f"{name}_input")
    x = conv_block(inputs, filters, f"{name}_stem_conv")
    features = {0: x}
    for lvl in range(1, levels[-1] + 1):
        f = min(filters * 2 ** lvl, 8 * filters)
        x = conv_block(x, f, f"{name}_stage{lvl}_down", stride=2)
        x = conv_block(x, f, f"{name}_stage{lvl}_conv")
        features[lvl] = x

    # feature pyramid: lateral 1x1 convs, top-down sum with upsampling, 3x3 smoothing
    pyramid = [None] * len(levels)
    top = None
    for i in reversed(range(len(levels))):
        lat = conv(pyramid_filters, 1, name=f"{name}_lateral{i}")(features[levels[i]])
        if top is not None:
            lat = layers.Add(name=f"{name}_topdown{i}")([lat, up(2, name=f"{name}_upsample{i}")(top)])
        top = lat
        pyramid[i] = conv(pyramid_filters, 3, padding="same", activation="relu",
                          name=f"{name}_pyramid{i}_conv")(lat)

    # shared heads
    head = conv(pyramid_filters, 3, padding="same", activation="relu", name=f"{name}_head_conv")
    obj = conv(1, 1, name=f"{name}_head_objectness",
               bias_initializer=keras.initializers.Constant(-math.log((1 - prior_probability) / prior_probability)))
    box = conv(2 * d, 1, name=f"{name}_head_box")
    heads = []
    for i, p in enumerate(pyramid):
        h = head(p)
        heads.append(layers.Concatenate(name=f"{name}_level{i}_out")([obj(h), box(h)]))
    outputs = CellPredictions(image_shape, strides, anchor_sizes, dtype="float32",
                              name=f"{name}_predictions")(heads)
    model = keras.Model(inputs, outputs, name=name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=BoxLoss(objectness=objectness_loss))
    return model
