"""Intensity augmentation: gamma, Gaussian noise, Gaussian blur, scale/shift, low resolution (2D/3D).

These change the image only; labels pass through untouched. See
`keras_medseg.data.augment.base` for the input structure.
"""

import math

from keras import ops

from keras_medseg.data.augment.base import RandomTransform, check_range
from keras_medseg.utils.serialization import register


def _per_sample(values, rank):
    """Reshape `(N,)` or `(N, k)` draws so they broadcast against a rank-`rank` batch."""
    return ops.reshape(values, (-1,) + (1,) * (rank - 1))


@register
class RandomGamma(RandomTransform):
    """Random gamma curve on the per-sample, per-channel intensity range.

    `y = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma` with `lo`, `hi` the
    sample's minimum and maximum per channel, `gamma` drawn uniformly.

    Args:
        gamma: `(low, high)` range of the exponent (default (0.7, 1.5));
            `(1, 1)` is the identity.
        probability, seed: see `RandomTransform`.

    Raises:
        ValueError: `gamma` not a positive range.

    Example:

    >>> out = keras_medseg.data.augment.RandomGamma((0.7, 1.5), seed=0)(x)
    """

    def __init__(self, gamma=(0.7, 1.5), probability=1.0, seed=None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.gamma = check_range(gamma, "gamma")
        if self.gamma[0] <= 0:
            raise ValueError(f"`gamma` must be > 0. Received: gamma={gamma!r}")

    def draw(self, batch_size, spatial):
        return {"gamma": self.uniform((batch_size,), self.gamma[0], self.gamma[1] + 1e-12)}

    def transform_image(self, image, params):
        x = ops.cast(image, "float32")
        axes = tuple(range(1, len(x.shape) - 1))
        lo = ops.min(x, axis=axes, keepdims=True)
        hi = ops.max(x, axis=axes, keepdims=True)
        span = ops.maximum(hi - lo, 1e-12)
        unit = ops.clip((x - lo) / span, 0.0, 1.0)
        return lo + span * ops.power(unit, _per_sample(params["gamma"], len(x.shape)))

    def get_config(self):
        config = super().get_config()
        config["gamma"] = self.gamma
        return config


@register
class RandomGaussianNoise(RandomTransform):
    """Add zero-mean Gaussian noise with a standard deviation drawn per sample in `[0, std]`.

    Args:
        std: largest noise standard deviation, in image units (default 0.1);
            or a `(low, high)` range.
        probability, seed: see `RandomTransform`.

    Example:

    >>> out = keras_medseg.data.augment.RandomGaussianNoise(0.1, seed=0)(x)
    """

    def __init__(self, std=0.1, probability=1.0, seed=None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.std = check_range(std, "std", low=0.0, minimum=0.0)

    def draw(self, batch_size, spatial):
        return {"std": self.uniform((batch_size,), self.std[0], self.std[1] + 1e-12)}

    def transform_image(self, image, params):
        x = ops.cast(image, "float32")
        noise = self.normal(ops.shape(x))
        return x + noise * _per_sample(params["std"], len(x.shape))

    def get_config(self):
        config = super().get_config()
        config["std"] = self.std
        return config


def gaussian_blur(x, sigma, radius):
    """Separable Gaussian blur of `(N, *S, C)` with per-sample `sigma` (N,) in voxels, edge-padded.

    Equals `scipy.ndimage.gaussian_filter(x[n], sigma[n], mode="nearest",
    truncate=radius / sigma[n])` on the spatial axes (tested); `sigma = 0` is
    the identity.
    """
    rank = len(x.shape)
    d = rank - 2
    sig = _per_sample(ops.cast(sigma, "float32"), rank)
    offsets = list(range(-radius, radius + 1))
    raw = [ops.exp(-0.5 * (k * k) / ops.maximum(sig * sig, 1e-12)) for k in offsets]
    raw = [ops.where(sig > 0, w, 1.0 if k == 0 else 0.0) for k, w in zip(offsets, raw)]
    total = raw[0]
    for w in raw[1:]:
        total = total + w
    weights = [w / total for w in raw]
    for axis in range(1, d + 1):
        size = x.shape[axis]
        out = None
        for k, w in zip(offsets, weights):
            idx = ops.clip(ops.arange(size, dtype="int32") + k, 0, size - 1)
            term = w * ops.take(x, idx, axis=axis)
            out = term if out is None else out + term
        x = out
    return x


@register
class RandomGaussianBlur(RandomTransform):
    """Gaussian blur with a standard deviation (voxels) drawn per sample.

    Args:
        sigma: `(low, high)` range of the standard deviation in voxels, or a
            number `s` for `(0, s)`; default (0.5, 1.0). The kernel radius is
            `ceil(3 * high)`.
        probability, seed: see `RandomTransform`.

    Example:

    >>> out = keras_medseg.data.augment.RandomGaussianBlur((0.5, 1.0), seed=0)(x)

    Checked against `scipy.ndimage.gaussian_filter` (mode "nearest").
    """

    def __init__(self, sigma=(0.5, 1.0), probability=1.0, seed=None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.sigma = check_range(sigma, "sigma", low=0.0, minimum=0.0)

    def draw(self, batch_size, spatial):
        return {"sigma": self.uniform((batch_size,), self.sigma[0], self.sigma[1] + 1e-12)}

    def transform_image(self, image, params):
        radius = max(math.ceil(3 * self.sigma[1]), 1)
        return gaussian_blur(ops.cast(image, "float32"), params["sigma"], radius)

    def get_config(self):
        config = super().get_config()
        config["sigma"] = self.sigma
        return config


@register
class RandomIntensityScaleShift(RandomTransform):
    """`y = x * (1 + a) + b` with `a` in `[-scale, scale]` and `b` in `[-shift, shift]` per sample.

    Args:
        scale: largest relative change of contrast (default 0.1).
        shift: largest offset in image units (default 0.1).
        probability, seed: see `RandomTransform`.

    Example:

    >>> out = keras_medseg.data.augment.RandomIntensityScaleShift(0.1, 0.1, seed=0)(x)
    """

    def __init__(self, scale=0.1, shift=0.1, probability=1.0, seed=None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.scale = check_range(scale, "scale", symmetric=True)[1]
        self.shift = check_range(shift, "shift", symmetric=True)[1]

    def draw(self, batch_size, spatial):
        return {"a": self.uniform((batch_size,), -self.scale, self.scale),
                "b": self.uniform((batch_size,), -self.shift, self.shift)}

    def transform_image(self, image, params):
        x = ops.cast(image, "float32")
        rank = len(x.shape)
        return x * (1.0 + _per_sample(params["a"], rank)) + _per_sample(params["b"], rank)

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "shift": self.shift})
        return config


@register
class RandomLowResolution(RandomTransform):
    """Simulate a coarser scan: nearest-neighbour down-sampling by a random zoom, linear up-sampling.

    Per axis, output voxel `o` reads the coarse grid at `q = o * z` (zoom `z`
    in (0, 1]); each coarse node `m` takes the input voxel `round(m / z)`,
    and the two nodes around `q` are blended linearly. `z = 1` is the
    identity. As nnU-Net's low-resolution simulation (Isensee et al., Nature
    Methods 2021), with linear instead of cubic up-sampling. The blend is a
    product with a per-axis interpolation matrix, so a NaN or inf voxel
    spreads along its row (the scan readers reject them).

    Args:
        zoom: `(low, high)` range of the zoom factor in (0, 1] (default (0.5, 1.0)).
        axes: spatial axes that are coarsened (default None: all); `(0,)`
            imitates thick slices along `D`.
        per_axis: independent zoom per axis (default False).
        probability, seed: see `RandomTransform`.

    Raises:
        ValueError: zoom outside (0, 1].

    Example:

    >>> out = keras_medseg.data.augment.RandomLowResolution((0.5, 1.0), seed=0)(x)
    """

    def __init__(self, zoom=(0.5, 1.0), axes=None, per_axis=False, probability=1.0, seed=None, **kwargs):
        super().__init__(probability=probability, seed=seed, **kwargs)
        self.zoom = check_range(zoom, "zoom")
        if self.zoom[0] <= 0 or self.zoom[1] > 1:
            raise ValueError(f"`zoom` must lie in (0, 1]. Received: zoom={zoom!r}")
        if axes is not None and (not isinstance(axes, (list, tuple)) or not all(
                isinstance(a, int) and 0 <= a <= 2 for a in axes)):
            raise ValueError(f"`axes` must be spatial axes in {{0, 1, 2}}. Received: axes={axes!r}")
        self.axes = None if axes is None else tuple(axes)
        self.per_axis = bool(per_axis)

    def draw(self, batch_size, spatial):
        d = len(spatial)
        z = self.uniform((batch_size, d if self.per_axis else 1), self.zoom[0], self.zoom[1])
        return {"zoom": ops.broadcast_to(z, (batch_size, d))}

    def transform_image(self, image, params):
        # per axis a `(N, size, size)` interpolation matrix (rows: output voxels; two weights each) applied by
        # one `einsum`: a gather of every voxel at broadcast indices (`take_along_axis`, twice per axis) cost
        # 22 of the 29 ms of CPU of a 32^3 patch of `default_augmentation` on XLA's CPU, the product ~1 ms
        x = ops.cast(image, "float32")
        rank = len(x.shape)
        d = rank - 2
        axes = range(d) if self.axes is None else self.axes
        letters = "abcdefgh"[:d]
        for a in axes:
            if a >= d:
                raise ValueError(f"`axes` must be < {d} for a {d}D input. Received: axes={self.axes}")
            size = x.shape[a + 1]
            z = ops.reshape(params["zoom"][:, a], (-1, 1))  # (N, 1)
            q = ops.arange(size, dtype="float32")[None, :] * z  # (N, size): where each output voxel reads
            m0 = ops.floor(q)
            frac = (q - m0)[..., None]
            i0 = ops.clip(ops.cast(ops.floor(m0 / z + 0.5), "int32"), 0, size - 1)  # the coarse nodes' voxels
            i1 = ops.clip(ops.cast(ops.floor((m0 + 1.0) / z + 0.5), "int32"), 0, size - 1)
            weights = ((1.0 - frac) * ops.one_hot(i0, size, dtype="float32")
                       + frac * ops.one_hot(i1, size, dtype="float32"))
            source = "n" + letters + "z"
            target = source.replace(letters[a], "y")
            x = ops.einsum(f"ny{letters[a]},{source}->{target}", weights, x)
        return x

    def get_config(self):
        config = super().get_config()
        config.update({"zoom": self.zoom, "axes": self.axes, "per_axis": self.per_axis})
        return config
