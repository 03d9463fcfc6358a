"""Shared machinery of the augmentation layers: random draws, image/labels routing, output size.

Every transform is a `keras.layers.Layer` built on `RandomTransform`. A call
takes a batch in channels-last layout, 2D `(N, H, W, C)` or 3D
`(N, D, H, W, C)`, either alone or together with its label map, as a dict
or a tuple `(x, y)`; labels are `(N, *S)` or `(N, *S, K)` integers (or
floats). One random draw per sample is applied to the image and to the
labels, so a warp moves both in the same way; intensity transforms leave the
labels untouched. Everything is written with `keras.ops`, so the layers run
on TensorFlow, JAX and torch, inside a `keras.utils.PyDataset` or inside a
model (they act only when `training` is true, the default when called
directly).

Dict keys (as MONAI's dictionary transforms, which name the keys they act on):

* `"image"` (required): warped with linear interpolation, changed by the
  intensity transforms;
* `"labels"`, or MONAI's `"label"` (one of them): warped with the same draw
  by nearest neighbour, never changed by intensity transforms; the output
  uses the key the caller used.

Any other key is refused with a `ValueError`: a mask, weight map or second
image under another name would otherwise come back unwarped, out of register
with the image.

Output size: a call with `output_size=P` (spatial sizes) returns the centre
`P` of the result. A geometric warp then computes only those voxels, reading
the input around them, so a patch cropped with the margin the warp needs
(`Compose.margin(P)`) gives the same patch as warping the whole volume and
cropping it (`keras_medseg.data.VolumeDataset` does this).
"""

import keras
from keras import ops

from keras_medseg.data.augment import warp
from keras_medseg.utils.serialization import register

IMAGE_KEY = "image"
LABELS_KEY = "labels"
LABEL_ALIAS = "label"  # MONAI's key for the label map
KNOWN_KEYS = (IMAGE_KEY, LABELS_KEY, LABEL_ALIAS)


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
        keys = sorted(inputs, key=str)
        if IMAGE_KEY not in inputs:
            raise ValueError(f"A dict input needs an {IMAGE_KEY!r} key. Received: keys={keys}")
        unknown = [k for k in keys if k not in KNOWN_KEYS]
        if unknown:
            raise ValueError(f"Unknown key(s) {unknown}: augmentation warps only 'image' and 'labels' (or MONAI's "
                             f"'label'); anything else would come back unwarped. Received: keys={keys}")
        if LABELS_KEY in inputs and LABEL_ALIAS in inputs:
            raise ValueError(f"Give the label map under 'labels' or 'label', not both. Received: keys={keys}")
        label_key = LABELS_KEY if LABELS_KEY in inputs else LABEL_ALIAS if LABEL_ALIAS in inputs else None

        def pack(image, labels):
            out = {IMAGE_KEY: image}
            if label_key is not None:
                out[label_key] = labels
            return out
        return inputs[IMAGE_KEY], (inputs[label_key] if label_key else None), pack
    if isinstance(inputs, (tuple, list)):
        if len(inputs) != 2:
            raise ValueError(f"A tuple input must be (image, labels). Received: a tuple of length {len(inputs)}")
        return inputs[0], inputs[1], lambda image, labels: (image, labels)
    return inputs, None, lambda image, labels: image


def prepare(inputs):
    """Split and check a call's inputs: `(image, labels (N, *S, K) or None, finish)`.

    `finish(image, labels)` restores the caller's structure and label layout.
    """
    image, labels, pack = split_inputs(inputs)
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

    def finish(image, labels):
        if labels is not None and squeeze:
            labels = ops.squeeze(labels, -1)
        return pack(image, labels)
    return image, labels, finish


def output_frame(output_size, spatial):
    """The output's spatial shape: `spatial` for None, else `output_size` (int or one per axis, <= input)."""
    if output_size is None:
        return tuple(spatial)
    d = len(spatial)
    size = (output_size,) * d if isinstance(output_size, int) and not isinstance(output_size, bool) else output_size
    if not isinstance(size, (list, tuple)) or len(size) != d or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 < s <= full for s, full in zip(size, spatial)):
        raise ValueError(f"`output_size` must be {d} positive ints no larger than the input's spatial shape "
                         f"{tuple(spatial)}. Received: output_size={output_size!r}")
    return tuple(size)


def center_crop(x, frame):
    """The centre `frame` of `(N, *S, C)` (offsets `(S - frame) // 2`); `x` itself when the sizes agree."""
    spatial = tuple(x.shape[1:-1])
    if spatial == tuple(frame):
        return x
    index = (slice(None),) + tuple(slice((s - f) // 2, (s - f) // 2 + f) for s, f in zip(spatial, frame))
    return x[index]


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
    Geometric transforms that are maps of points (`fusable = True`: flips,
    90-degree turns, affine, elastic) also implement `map_points`, `map_grid`
    and `bound`, so that consecutive ones in a `Compose` sample the input once
    (`keras_medseg.data.augment.warp`); those that interpolate (`warps =
    True`: affine, elastic) always go through that one sampling.

    Args:
        probability: chance that a sample is transformed (default 1.0); the
            others pass through unchanged.
        seed: int seed of the layer's `keras.random.SeedGenerator` (default None).
        **kwargs: `keras.layers.Layer` arguments (name, dtype).

    Call arguments: `inputs` (see the module docstring for the keys),
    `training` (default True; False passes the input through), `output_size`
    (default None: the input's size; see `keras_medseg.data.augment.base`).
    """

    geometric = False
    fusable = False
    warps = False

    def __init__(self, probability=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.probability = _check_probability(probability)
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = False
        self._allow_non_tensor_positional_args = True
        self.built = True  # no weights: nothing to build (and no symbolic trial call of `call`)

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
        return random_draw("uniform", shape, self.seed_generator, minval=low, maxval=high)

    def normal(self, shape, stddev=1.0):
        """Zero-mean normal draw from the layer's seed generator."""
        return random_draw("normal", shape, self.seed_generator, stddev=stddev)

    def margin(self, patch_size):
        """Voxels of input needed on each side of a `patch_size` output (per axis; 0 for non-warps)."""
        return warp.group_margin([self] if self.warps else [], patch_size)

    # -- call ------------------------------------------------------------------
    def call(self, inputs, training=True, output_size=None):
        if (not training or self.probability == 0.0) and output_size is None:
            image, labels, pack = split_inputs(inputs)
            return pack(image, labels)
        image, labels, finish = prepare(inputs)
        frame = output_frame(output_size, image.shape[1:-1])
        if not training or self.probability == 0.0:
            return finish(center_crop(image, frame), None if labels is None else center_crop(labels, frame))
        if self.warps:  # one sampling of the input, only at the output's voxels
            return finish(*warp.warp_group([self], image, labels, frame))
        image = center_crop(image, frame)
        labels = None if labels is None else center_crop(labels, frame)
        rank = len(image.shape)
        n = ops.shape(image)[0]
        params = self.draw(n, frame)
        apply = self.uniform((n,), 0.0, 1.0) < self.probability
        mask = ops.reshape(apply, (-1,) + (1,) * (rank - 1))
        new_image = self.transform_image(image, params)
        new_image = ops.where(mask, ops.cast(new_image, image.dtype), image)
        if labels is not None and self.geometric:
            new_labels = self.transform_labels(labels, params)
            labels = ops.where(mask, ops.cast(new_labels, labels.dtype), labels)
        return finish(new_image, labels)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"probability": self.probability, "seed": self.seed})
        return config


def random_draw(kind, shape, seed_generator, **kwargs):
    """`keras.random.uniform` or `keras.random.normal` (`kind`) of `shape` from `seed_generator`.

    On TensorFlow the same stateless op with its algorithm named, Philox, where Keras leaves `auto_select`:
    eagerly the numbers are Keras' (TensorFlow's CPU kernels pick Philox; tested), compiled by XLA the draw is
    about 30x faster: with `auto_select` and a seed computed inside the program (as a seed generator's is), XLA's
    CPU code took 42 ms for 65,536 draws on one core against 1.3 ms, 21 of the 30 ms of CPU of a 32^3 patch of
    `default_augmentation`. Other backends: Keras' own call.
    """
    if keras.backend.backend() != "tensorflow":
        return getattr(keras.random, kind)(shape, seed=seed_generator, **kwargs)
    import tensorflow as tf

    seed = seed_generator.next()
    if keras.backend.standardize_dtype(seed.dtype) != "int32":  # as Keras' TensorFlow backend casts it
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), "int32")
    dtype = keras.backend.floatx()
    if kind == "uniform":
        return tf.random.stateless_uniform(shape, seed, minval=tf.cast(kwargs["minval"], dtype),
                                           maxval=tf.cast(kwargs["maxval"], dtype), dtype=dtype, alg="philox")
    return tf.random.stateless_normal(shape, seed, stddev=kwargs.get("stddev", 1.0), dtype=dtype, alg="philox")


@register
class Compose(keras.layers.Layer):
    """Apply augmentation layers one after the other (same structure in, same out), warps fused.

    Consecutive geometric transforms that include an affine or elastic warp
    (`RandomFlip`, `RandomRotate90`, `RandomAffine`, `RandomElastic`) are
    composed into one sampling grid per sample and the input is interpolated
    once (linear for the image, nearest for the labels), instead of once per
    transform: less blur, less work, and with `output_size` only the output's
    voxels are computed. Each layer keeps its own seed and draws, in the same
    order as when it is called alone. The fused chain reads the input with
    the padding of its first affine/elastic transform. As nnU-Net's spatial
    transform (Isensee et al., Nature Methods 2021), which also builds one
    grid for elastic deformation, rotation and scaling.

    Args:
        transforms: list of `RandomTransform` layers (or any layer that takes
            and returns the same structure).
        jit_compile: "auto" (default), True or False. "auto" and True run an
            eager call (a data worker, `VolumeDataset`) as one compiled
            program per input signature on TensorFlow (XLA) and JAX
            (`jax.jit`); on torch, True compiles the fused warp with
            `torch.compile` (about 30 s per signature on a CPU, then several
            times faster) and "auto" runs eagerly, as Keras does. Inside a
            traced function (a compiled training step, `tf.data`) the layer
            is traced like any other. On TensorFlow, XLA draws the random
            numbers with another algorithm than an uncompiled call, so the
            two give different (each reproducible) augmentations.
        **kwargs: `keras.layers.Layer` arguments.

    Call arguments: `inputs`, `training` (default True), `output_size`
    (default None; see `keras_medseg.data.augment.base`).

    Raises:
        ValueError: `transforms` not a list of layers, a bad `jit_compile`.

    Example:

    >>> from keras_medseg.data import augment
    >>> pipeline = augment.Compose([augment.RandomAffine(rotation=0.2, seed=1),
    ...                             augment.RandomElastic(magnitude=2.0, seed=2), augment.RandomGamma(seed=3)])
    >>> out = pipeline({"image": x, "labels": y})  # one interpolation for the affine and elastic warps
    >>> m = pipeline.margin((64, 64, 64))  # voxels of context a 64^3 patch needs on each side
    >>> patch = pipeline({"image": x_big, "labels": y_big}, output_size=(64, 64, 64))  # x_big: 64 + 2 * m

    Reference: Isensee, Jaeger, Kohl, Petersen, Maier-Hein, "nnU-Net: a
    self-configuring method for deep learning-based biomedical image
    segmentation", Nature Methods 2021.
    """

    def __init__(self, transforms, jit_compile="auto", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(transforms, (list, tuple)) or not all(isinstance(t, keras.layers.Layer) for t in transforms):
            raise ValueError(f"`transforms` must be a list of Keras layers. Received: transforms={transforms!r}")
        if jit_compile not in ("auto", True, False):
            raise ValueError(f"`jit_compile` must be 'auto', True or False. Received: jit_compile={jit_compile!r}")
        self.transforms = list(transforms)
        self.jit_compile = jit_compile
        self._compiled = {}
        self._allow_non_tensor_positional_args = True
        self._convert_input_args = False  # `call` moves arrays itself (`warp.to_tensor`)
        self.built = True

    def margin(self, patch_size):
        """Voxels of input needed on each side of a `patch_size` output: the first fused warp's reach.

        Args:
            patch_size: the output's spatial shape (2 or 3 ints).

        Returns:
            tuple of ints, one per axis: crop `patch_size + 2 * margin` around
            the patch and call with `output_size=patch_size`.
        """
        for kind, item in warp.plan(self.transforms):
            if kind == "group":
                return warp.group_margin(item, patch_size)
        return warp.group_margin([], patch_size)

    def call(self, inputs, training=True, output_size=None):
        mode = warp.compile_now(self.jit_compile, inputs) if training else None
        image, labels, pack = split_inputs(inputs)
        image, labels = warp.to_tensor(image, self.compute_dtype), warp.to_tensor(labels, self.compute_dtype)
        if mode == "program":
            return pack(*warp.run_compiled(self, image, labels, output_size))
        return self._run(pack(image, labels), training, output_size, cache=self._compiled if mode == "warp" else None)

    def _run(self, inputs, training, output_size, cache=None):
        if not training and output_size is None:
            image, labels, pack = split_inputs(inputs)
            return pack(image, labels)
        steps = warp.plan(self.transforms)
        if output_size is not None and (not training or not any(kind == "group" for kind, _ in steps)):
            image, labels, finish = prepare(inputs)
            frame = output_frame(output_size, image.shape[1:-1])
            inputs = finish(center_crop(image, frame), None if labels is None else center_crop(labels, frame))
            output_size = None
        if not training:
            return inputs
        for kind, item in steps:
            if kind == "group":
                image, labels, finish = prepare(inputs)
                frame = output_frame(output_size, image.shape[1:-1])
                inputs = finish(*warp.warp_group(item, image, labels, frame, cache))
                output_size = None
            else:
                inputs = item(inputs, training=training)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["transforms"] = [keras.saving.serialize_keras_object(t) for t in self.transforms]
        config["jit_compile"] = self.jit_compile
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["transforms"] = [keras.saving.deserialize_keras_object(t) for t in config["transforms"]]
        return cls(**config)
