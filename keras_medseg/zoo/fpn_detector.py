"""`fpn_detector`: feature-pyramid box detector with per-cell heads (2D and 3D).

Architecture (seed 003, "Bounding box prediction"): a small convolutional
backbone (stride-2 stages) -> a feature pyramid (1x1 lateral convolutions,
coarse levels upsampled and summed top-down into the finer ones, 3x3
smoothing) -> shared per-cell heads at every pyramid level predicting
`(p, centre offset relative to the cell, size)`.

Coordinate conventions (those of `keras_medseg.boxes`): voxel `i` covers
`[i, i + 1)`; `x` runs along W (last spatial axis), `y` along H, `z` along D;
boxes are `(cx, cy, w, h)` in 2D and `(cx, cy, cz, w, h, d)` in 3D, in voxels.

Cells and targets: a pyramid level with stride `s` splits the image into
cells of `s` voxels per axis. A ground-truth box is assigned to the level
whose anchor size (default: the cell size `s`) is closest to the box's
geometric-mean side in log scale, and to the cell containing its centre.
That cell's target is `(1, (c / s - cell index), log(size / anchor))`: the
offsets lie in [0, 1) (the model predicts them through a sigmoid), the sizes
are log-ratios to the level's anchor. All other cells have `p = 0` (their
box channels are ignored by the loss). The model output concatenates the
cells of every level, finest first, each level in row-major (array) order:
`(N, num_cells, 1 + 2d)` with channel 0 the probability `p`.

Example:

```python
from keras_medseg import data, zoo
from keras_medseg.zoo import fpn_detector
model = zoo.build("fpn_detector", spatial_dims=3, image_shape=(32, 32, 32))
x, boxes = data.synthetic_boxes(8, image_shape=(32, 32, 32))
coder = fpn_detector.box_coder(model)
model.fit(x, coder.encode(boxes), epochs=1)
pred_boxes, pred_scores = coder.decode(model.predict(x), score_threshold=0.5)
```

Reference:
    Seed lecture 003; Lin et al., "Feature Pyramid Networks for Object
    Detection", CVPR 2017; Redmon et al., "YOLO" (per-cell heads).
"""

import math
import warnings

import keras
import numpy as np
from keras import layers, ops

from keras_medseg import boxes as box_utils
from keras_medseg.losses import BoxLoss
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_choice, check_positive, check_positive_int, check_spatial_dims
from keras_medseg.zoo.registry import register_model

_CONV = {2: layers.Conv2D, 3: layers.Conv3D}
_UP = {2: layers.UpSampling2D, 3: layers.UpSampling3D}


def _check_geometry(image_shape, strides, anchor_sizes):
    """Validate and normalise `(image_shape, strides, anchor_sizes)`."""
    if image_shape is None or len(tuple(image_shape)) not in (2, 3):
        raise ValueError(
            "`image_shape` must be the spatial shape (H, W) or (D, H, W). "
            f"Received: image_shape={image_shape!r}"
        )
    image_shape = tuple(check_positive_int(int(s), "image_shape") for s in image_shape)
    if not isinstance(strides, (tuple, list)) or not strides:
        raise ValueError(f"`strides` must be a non-empty tuple of ints. Received: strides={strides!r}")
    strides = tuple(int(s) for s in strides)
    for i, s in enumerate(strides):
        if s < 1 or s & (s - 1):
            raise ValueError(f"`strides` must be powers of two. Received: strides={strides}")
        if i and s != 2 * strides[i - 1]:
            raise ValueError(
                f"`strides` must double from one pyramid level to the next (e.g. (4, 8, 16)). "
                f"Received: strides={strides}"
            )
    if any(n % strides[-1] for n in image_shape):
        raise ValueError(
            f"Every entry of `image_shape` must be divisible by the largest stride {strides[-1]}. "
            f"Received: image_shape={image_shape}, strides={strides}"
        )
    if anchor_sizes is None:
        anchor_sizes = tuple(float(s) for s in strides)
    else:
        if not isinstance(anchor_sizes, (tuple, list)) or len(anchor_sizes) != len(strides):
            raise ValueError(
                f"`anchor_sizes` must give one size per stride ({len(strides)}). "
                f"Received: anchor_sizes={anchor_sizes!r}"
            )
        anchor_sizes = tuple(float(check_positive(a, "anchor_sizes")) for a in anchor_sizes)
    return image_shape, strides, anchor_sizes


class BoxCoder:
    """Encode ground-truth boxes into per-cell targets and decode predictions back.

    Args:
        image_shape: spatial shape `(H, W)` or `(D, H, W)`.
        strides: tuple of pyramid strides (cell sizes), doubling, default `(4, 8, 16)`.
        anchor_sizes: tuple, one reference box side per stride (default: the strides).

    Raises:
        ValueError: strides not doubling powers of two, image not divisible by
            the largest stride, wrong number of anchor sizes.

    Example:

    ```python
    coder = keras_medseg.zoo.fpn_detector.BoxCoder((32, 32, 32))
    y = coder.encode([np.array([[10.0, 12.0, 9.0, 8.0, 8.0, 8.0]])])   # (1, 584, 7)
    boxes, scores = coder.decode(y)   # recovers the box with score 1
    ```
    """

    def __init__(self, image_shape, strides=(4, 8, 16), anchor_sizes=None):
        self.image_shape, self.strides, self.anchor_sizes = _check_geometry(image_shape, strides, anchor_sizes)
        self.spatial_dims = len(self.image_shape)
        d = self.spatial_dims
        self.grid_shapes = tuple(tuple(n // s for n in self.image_shape) for s in self.strides)
        origins, cell_stride, cell_anchor, offsets = [], [], [], [0]
        for s, a, grid in zip(self.strides, self.anchor_sizes, self.grid_shapes):
            idx = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).reshape(-1, d)
            origins.append(idx[:, ::-1].astype("float64"))  # array-axis order -> (x, y[, z])
            cell_stride.append(np.full(len(idx), float(s)))
            cell_anchor.append(np.full(len(idx), a))
            offsets.append(offsets[-1] + len(idx))
        self._origins = np.concatenate(origins)
        self._cell_stride = np.concatenate(cell_stride)
        self._cell_anchor = np.concatenate(cell_anchor)
        self._level_offsets = tuple(offsets)
        self.num_cells = offsets[-1]
        self.channels = 1 + 2 * d

    def get_config(self):
        return {"image_shape": self.image_shape, "strides": self.strides, "anchor_sizes": self.anchor_sizes}

    def assign_level(self, sizes):
        """Pyramid level of each box: anchor size closest to the geometric-mean side (log scale)."""
        sizes = np.asarray(sizes, "float64").reshape(-1, self.spatial_dims)
        g = np.exp(np.mean(np.log(sizes), axis=1))
        return np.argmin(np.abs(np.log(g)[:, None] - np.log(np.asarray(self.anchor_sizes))[None, :]), axis=1)

    def cell_index(self, level, centre):
        """Flat output index of the cell of `level` that contains `centre` (x, y[, z])."""
        s = self.strides[level]
        grid = self.grid_shapes[level]
        ijk = np.floor(np.asarray(centre, "float64") / s).astype(int)[::-1]  # -> array-axis order
        ijk = np.minimum(ijk, np.asarray(grid) - 1)
        return self._level_offsets[level] + int(np.ravel_multi_index(tuple(ijk), grid))

    def encode(self, boxes):
        """Per-cell targets `(N, num_cells, 1 + 2d)` float32 from a list of `(K_i, 2d)` boxes (centre format).

        Raises:
            ValueError: wrong box size for the image's dims, non-positive sizes,
                centres outside the image.
        """
        if isinstance(boxes, np.ndarray) and boxes.ndim == 2:
            boxes = [boxes]
        d = self.spatial_dims
        out = np.zeros((len(boxes), self.num_cells, self.channels), "float32")
        extent = np.asarray(self.image_shape[::-1], "float64")  # (W, H[, D]) for (x, y[, z])
        for n, b in enumerate(boxes):
            b = np.asarray(ops.convert_to_numpy(b) if not isinstance(b, np.ndarray) else b, "float64")
            b = b.reshape(-1, b.shape[-1]) if b.size else np.zeros((0, 2 * d))
            if b.shape[-1] != 2 * d:
                raise ValueError(
                    f"`boxes` for a {d}D image must have {2 * d} values per box "
                    f"({'cx, cy, w, h' if d == 2 else 'cx, cy, cz, w, h, d'}). Received: boxes[{n}].shape={b.shape}"
                )
            if np.any(b[:, d:] <= 0):
                raise ValueError(f"`boxes` sizes must be > 0. Received: boxes[{n}]={b.tolist()}")
            if np.any(b[:, :d] < 0) or np.any(b[:, :d] >= extent):
                raise ValueError(
                    f"`boxes` centres must lie inside the image (0 <= c < {tuple(extent)} for x, y[, z]). "
                    f"Received: boxes[{n}]={b.tolist()}"
                )
            levels = self.assign_level(b[:, d:])
            for box, level in zip(b, levels):
                c = self.cell_index(level, box[:d])
                if out[n, c, 0] == 1.0:
                    warnings.warn(
                        f"Two boxes of image {n} fall into the same cell at stride {self.strides[level]}; "
                        f"keeping the first, dropping {box.tolist()}.", stacklevel=2)
                    continue
                s, a = self.strides[level], self.anchor_sizes[level]
                out[n, c, 0] = 1.0
                out[n, c, 1:1 + d] = box[:d] / s - self._origins[c]
                out[n, c, 1 + d:] = np.log(box[d:] / a)
        return out

    def decode_all(self, predictions):
        """All cells as boxes: `(boxes (N, num_cells, 2d), scores (N, num_cells))`, no thresholding."""
        p = np.asarray(ops.convert_to_numpy(predictions), "float64")
        if p.ndim != 3 or p.shape[1:] != (self.num_cells, self.channels):
            raise ValueError(
                f"`predictions` must have shape (N, {self.num_cells}, {self.channels}) for this coder. "
                f"Received: predictions.shape={p.shape}"
            )
        d = self.spatial_dims
        centres = (self._origins[None] + p[..., 1:1 + d]) * self._cell_stride[None, :, None]
        sizes = self._cell_anchor[None, :, None] * np.exp(p[..., 1 + d:])
        return np.concatenate([centres, sizes], axis=-1), p[..., 0]

    def decode(self, predictions, score_threshold=0.5, iou_threshold=0.5, max_detections=100):
        """Boxes per image after score thresholding and non-max suppression.

        Args:
            predictions: `(N, num_cells, 1 + 2d)` model output (or encoded targets).
            score_threshold: keep cells with `p >= score_threshold` (default 0.5).
            iou_threshold: NMS IoU threshold (default 0.5); 2D uses keras-cv's
                NMS, 3D the `keras.ops` NMS of `keras_medseg.boxes`.
            max_detections: most boxes per image (default 100).

        Returns:
            `(boxes, scores)`: lists of `N` arrays `(K_i, 2d)` (centre format)
            and `(K_i,)`, sorted by decreasing score.
        """
        all_boxes, all_scores = self.decode_all(predictions)
        out_b, out_s = [], []
        for b, s in zip(all_boxes, all_scores):
            kb, ks = box_utils.non_max_suppression(b, s, iou_threshold=iou_threshold,
                                                   score_threshold=score_threshold,
                                                   max_detections=max_detections)
            out_b.append(kb)
            out_s.append(ks)
        return out_b, out_s


def encode_targets(boxes, image_shape, strides=(4, 8, 16), anchor_sizes=None):
    """Per-cell training targets for `fpn_detector` (see `BoxCoder.encode`).

    Args:
        boxes: list of `(K_i, 4)` (2D) or `(K_i, 6)` (3D) boxes per image, centre format.
        image_shape: spatial shape `(H, W)` or `(D, H, W)`.
        strides: pyramid strides, default `(4, 8, 16)`.
        anchor_sizes: one anchor side per stride (default: the strides).

    Returns:
        float32 array `(N, num_cells, 1 + 2d)`.
    """
    return BoxCoder(image_shape, strides, anchor_sizes).encode(boxes)


def decode(predictions, image_shape, strides=(4, 8, 16), anchor_sizes=None, score_threshold=0.5,
           iou_threshold=0.5, max_detections=100):
    """Boxes and scores per image from `fpn_detector` outputs (see `BoxCoder.decode`)."""
    return BoxCoder(image_shape, strides, anchor_sizes).decode(
        predictions, score_threshold=score_threshold, iou_threshold=iou_threshold,
        max_detections=max_detections)


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
    from keras_medseg.data.synthetic_boxes import synthetic_boxes

    return synthetic_boxes(n, image_shape=image_shape, size_range=(max(2, side // 5), max(3, side // 3)),
                           seed=seed)


@register_model("fpn_detector", spatial_dims=(2, 3),
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
        Seed lecture 003 (bounding box prediction, feature pyramids).
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
    conv, up = _CONV[d], _UP[d]
    levels = [int(round(math.log2(s))) for s in strides]

    # backbone: stem at stride 1, stage l at stride 2**l
    def conv_block(t, f, lname, stride=1):
        t = conv(f, 3, strides=stride, padding="same", use_bias=not batch_norm, name=lname)(t)
        if batch_norm:
            t = layers.BatchNormalization(name=f"{lname}_bn")(t)
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
