"""Shared machinery of the augmentation layers: random draws, image/labels routing, resampling.

Every transform is a `keras.layers.Layer` built on `RandomTransform`. A call
takes a batch in channels-last layout, 2D `(N, H, W, C)` or 3D
`(N, D, H, W, C)`, either alone or together with its label map, as a dict
`{"image": x, "labels": y}` or a tuple `(x, y)`; labels are `(N, *S)` or
`(N, *S, 1)` integers (or floats). One random draw per sample is applied to the
image and to the labels, so a warp moves both in the same way; intensity
transforms leave the labels untouched. Everything is written with
`keras.ops`, so the layers run on TensorFlow, JAX and torch, inside a
`keras.utils.PyDataset` or inside a model (they act only when `training` is
true, the default when called directly).
"""

import math

import keras
from keras import ops

from keras_medseg.utils.serialization import register

IMAGE_KEY = "image"
LABELS_KEY = "labels"


def _check_probability(probability):
    if not isinstance(probability, (int, float)) or isinstance(probability, bool) or not 0.0 <= probability <= 1.0:
        raise ValueError(f"`probability` must be a number in [0, 1]. Received: probability={probability!r}")
    return float(probability)


def check_range(value, name, low=None, symmetric=False, minimum=None):
    """A `(lo, hi)` pair from a number or a pair; `symmetric` maps `v` to `(-v, v)`, else to `(low, v)`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        pair = (-float(value), float(value)) if symmetric else (float(low if low is not None else value), float(value))
        if symmetric and value < 0:
            raise ValueError(f"`{name}` must be >= 0. Received: {name}={value!r}")
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        pair = (float(value[0]), float(value[1]))
    else:
        raise ValueError(f"`{name}` must be a number or a (low, high) pair. Received: {name}={value!r}")
    if pair[0] > pair[1]:
        raise ValueError(f"`{name}` must have low <= high. Received: {name}={value!r}")
    if minimum is not None and pair[0] < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={value!r}")
    return pair


def split_inputs(inputs):
    """`(image, labels_or_None, pack)`, where `pack(image, labels)` rebuilds the caller's structure."""
    if isinstance(inputs, dict):
        if IMAGE_KEY not in inputs:
            raise ValueError(f"A dict input needs an {IMAGE_KEY!r} key. Received: keys={sorted(inputs)}")
        extra = {k: v for k, v in inputs.items() if k not in (IMAGE_KEY, LABELS_KEY)}

        def pack(image, labels):
            out = dict(extra)
            out[IMAGE_KEY] = image
            if labels is not None:
                out[LABELS_KEY] = labels
            return out
        return inputs[IMAGE_KEY], inputs.get(LABELS_KEY), pack
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != 2:
            raise ValueError(f"A tuple input must be (image, labels). Received: a tuple of length {len(inputs)}")
        return inputs[0], inputs[1], lambda image, labels: (image, labels)
    return inputs, None, lambda image, labels: image


def _gather_nd(flat, strides, index):
    """`flat[(sum_i index[i] * strides[i])]`: flat `(M, C)`, index list of int tensors of one shape."""
    linear = index[0] * strides[0]
    for i in range(1, len(index)):
        linear = linear + index[i] * strides[i]
    return ops.take(flat, linear, axis=0)


def resample(volume, coords, order=1, padding_mode="constant", fill_value=0.0):
    """Sample a batch of channels-last volumes at given voxel coordinates (linear or nearest).

    The batched N-D counterpart of `scipy.ndimage.map_coordinates` with
    `order=0/1` and `mode="grid-constant"` (`padding_mode="constant"`) or
    `mode="nearest"` (`padding_mode="nearest"`); tested against
    `scipy.ndimage.affine_transform`. Written as `2**d` gathers on the
    flattened batch so that one call serves the whole batch on every backend.

    Args:
        volume: `(N, *S, C)` float tensor, `d = len(S)` in {2, 3}.
        coords: `(N, d, *S_out)` voxel coordinates (index space of `S`).
        order: 0 (nearest, for labels) or 1 (linear). Default 1.
        padding_mode: "constant" (outside is `fill_value`) or "nearest" (edge value).
        fill_value: value outside the volume for "constant" (default 0).

    Returns:
        `(N, *S_out, C)` tensor of `volume`'s dtype.
    """
    spatial = tuple(volume.shape[1:-1])
    d = len(spatial)
    n = ops.shape(volume)[0]
    channels = volume.shape[-1]
    flat = ops.reshape(volume, (-1, channels))
    # strides of the flattened (N, *S) index space
    strides = [math.prod(spatial[i:]) for i in range(1, d + 1)]
    batch_stride = math.prod(spatial)
    batch_index = ops.reshape(ops.arange(n, dtype="int32") * batch_stride, (-1,) + (1,) * d)
    coords = ops.cast(coords, "float32")
    axes = [coords[:, i] for i in range(d)]
    if order == 0:
        idx, valid = [], None
        for i in range(d):
            r = ops.cast(ops.floor(axes[i] + 0.5), "int32")
            inside = ops.logical_and(r >= 0, r <= spatial[i] - 1)
            valid = inside if valid is None else ops.logical_and(valid, inside)
            idx.append(ops.clip(r, 0, spatial[i] - 1))
        out = _gather_nd(flat, [1] + strides, [batch_index] + idx)
        if padding_mode == "constant":
            out = ops.where(valid[..., None], out, ops.cast(fill_value, out.dtype))
        return out
    # Per axis: the two neighbouring indices (clamped), pre-multiplied by the axis stride, and their
    # weights (zero for a neighbour outside the volume under "constant" padding). Each of the 2**d
    # corners is then a sum of d index terms and a product of d weights.
    terms = []
    for i in range(d):
        a = axes[i]
        if padding_mode == "nearest":
            a = ops.clip(a, 0.0, float(spatial[i] - 1))
        f = ops.floor(a)
        frac = a - f
        lo = ops.cast(f, "int32")
        hi = lo + 1
        w_lo, w_hi = 1.0 - frac, frac
        if padding_mode == "constant":
            w_lo = ops.where(ops.logical_and(lo >= 0, lo <= spatial[i] - 1), w_lo, 0.0)
            w_hi = ops.where(ops.logical_and(hi >= 0, hi <= spatial[i] - 1), w_hi, 0.0)
        stride = strides[i]
        terms.append(((ops.clip(lo, 0, spatial[i] - 1) * stride, w_lo),
                      (ops.clip(hi, 0, spatial[i] - 1) * stride, w_hi)))
    fill = float(fill_value) if padding_mode == "constant" else 0.0
    out, total = None, None
    for corner in range(2 ** d):
        index, weight = batch_index, None
        for i in range(d):
            idx_i, w_i = terms[i][(corner >> (d - 1 - i)) & 1]
            index = index + idx_i
            weight = w_i if weight is None else weight * w_i
        values = ops.cast(ops.take(flat, index, axis=0), "float32")
        term = weight[..., None] * values
        out = term if out is None else out + term
        if fill != 0.0:
            total = weight if total is None else total + weight
    if fill != 0.0:  # the weight of corners outside the volume goes to the fill value
        out = out + (1.0 - total)[..., None] * fill
    return ops.cast(out, volume.dtype)


def identity_grid(spatial):
    """`(d, *S)` float32 voxel coordinates of a grid of shape `S`."""
    ranges = [ops.arange(s, dtype="float32") for s in spatial]
    return ops.stack(ops.meshgrid(*ranges, indexing="ij"), axis=0)


@register
class RandomTransform(keras.layers.Layer):
    """Base of the augmentation layers: probability, seed, image/labels routing.

    Subclasses implement `draw(batch_size, spatial)` (a dict of per-sample
    tensors), `transform_image(image, params)` and, for geometric transforms,
    `transform_labels(labels, params)`; `geometric = True` marks those.

    Args:
        probability: chance that a sample is transformed (default 1.0); the
            others pass through unchanged.
        seed: int seed of the layer's `keras.random.SeedGenerator` (default None).
        **kwargs: `keras.layers.Layer` arguments (name, dtype).
    """

    geometric = False

    def __init__(self, probability=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.probability = _check_probability(probability)
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False
        self._allow_non_tensor_positional_args = True

    # -- subclass hooks ----------------------------------------------------
    def draw(self, batch_size, spatial):
        return {}

    def transform_image(self, image, params):
        raise NotImplementedError(f"{type(self).__name__} must implement transform_image")

    def transform_labels(self, labels, params):
        return labels

    # -- helpers -------------------------------------------------------------
    def uniform(self, shape, low, high):
        """Uniform draw in `[low, high)` from the layer's seed generator."""
        return keras.random.uniform(shape, minval=low, maxval=high, seed=self.seed_generator)

    def normal(self, shape, stddev=1.0):
        return keras.random.normal(shape, stddev=stddev, seed=self.seed_generator)

    # -- call ------------------------------------------------------------------
    def call(self, inputs, training=True):
        image, labels, pack = split_inputs(inputs)
        if not training or self.probability == 0.0:
            return pack(image, labels)
        rank = len(image.shape)
        if rank not in (4, 5):
            raise ValueError("`image` must be channels-last (N, H, W, C) or (N, D, H, W, C). "
                             f"Received: image.shape={tuple(image.shape)}")
        spatial = tuple(image.shape[1:-1])
        if any(s is None for s in spatial):
            raise ValueError(f"`image` needs static spatial sizes. Received: image.shape={tuple(image.shape)}")
        squeeze = False
        if labels is not None:
            if len(labels.shape) == rank - 1:
                labels, squeeze = ops.expand_dims(labels, -1), True
            if tuple(labels.shape[1:-1]) != spatial:
                raise ValueError(f"`labels` must have the image's spatial shape {spatial}. "
                                 f"Received: labels.shape={tuple(labels.shape)}")
        n = ops.shape(image)[0]
        params = self.draw(n, spatial)
        apply = self.uniform((n,), 0.0, 1.0) < self.probability
        mask = ops.reshape(apply, (-1,) + (1,) * (rank - 1))
        new_image = self.transform_image(image, params)
        new_image = ops.where(mask, ops.cast(new_image, image.dtype), image)
        if labels is not None and self.geometric:
            new_labels = self.transform_labels(labels, params)
            labels = ops.where(mask, ops.cast(new_labels, labels.dtype), labels)
        if labels is not None and squeeze:
            labels = ops.squeeze(labels, -1)
        return pack(new_image, labels)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"probability": self.probability, "seed": self.seed})
        return config


@register
class Compose(keras.layers.Layer):
    """Apply augmentation layers one after the other (same structure in, same out).

    Args:
        transforms: list of `RandomTransform` layers (or any layer that takes
            and returns the same structure).
        **kwargs: `keras.layers.Layer` arguments.

    Example:

    >>> from keras_medseg.data import augment
    >>> pipeline = augment.Compose([augment.RandomFlip(seed=1), augment.RandomGamma(seed=2)])
    >>> out = pipeline({"image": x, "labels": y})
    """

    def __init__(self, transforms, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(transforms, (list, tuple)) or not all(isinstance(t, keras.layers.Layer) for t in transforms):
            raise ValueError(f"`transforms` must be a list of Keras layers. Received: transforms={transforms!r}")
        self.transforms = list(transforms)
        self._allow_non_tensor_positional_args = True

    def call(self, inputs, training=True):
        for t in self.transforms:
            inputs = t(inputs, training=training)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["transforms"] = [keras.saving.serialize_keras_object(t) for t in self.transforms]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["transforms"] = [keras.saving.deserialize_keras_object(t) for t in config["transforms"]]
        return cls(**config)
