"""Layer factories for 2D and 3D networks: the one conv/pool/upsample table and the one normalisation factory.

`layers_for(spatial_dims)` gives the Keras layer classes of one dimensionality
(MONAI passes `spatial_dims` to its `Conv[Conv.CONV, spatial_dims]` table the
same way), so a builder is written once for 2D and 3D:

>>> L = keras_medseg.layers.layers_for(3)
>>> L.conv(8, 3, padding="same"), L.max_pool(2), L.upsampling(2)  # Conv3D, MaxPooling3D, UpSampling3D

`normalization(kind, name)` builds the normalisation layer a builder asks for
by name: "batch" (`BatchNormalization`), "instance" (`GroupNormalization` with
one group per channel), "group" (`GroupNormalization` with
`gcd(groups, channels)` groups, Wu and He's default of up to 8 groups), "layer"
(`LayerNormalization` over the channels) or None (`Identity`). All work on the
last (channel) axis, for 2D and 3D alike.

Reference: Wu and He, "Group Normalization", ECCV 2018; Ulyanov, Vedaldi and
Lempitsky, "Instance Normalization: The Missing Ingredient for Fast
Stylization", 2016.
"""

import collections
import math
import numbers

import keras

__all__ = ["NORMALIZATION_KINDS", "SpatialLayers", "layers_for", "normalization"]

SpatialLayers = collections.namedtuple(
    "SpatialLayers",
    ["conv", "conv_transpose", "max_pool", "average_pool", "upsampling", "global_average_pool", "global_max_pool"],
)
SpatialLayers.__doc__ = "The Keras layer classes of one dimensionality (see `layers_for`)."

_L = keras.layers
_TABLE = {
    2: SpatialLayers(_L.Conv2D, _L.Conv2DTranspose, _L.MaxPooling2D, _L.AveragePooling2D, _L.UpSampling2D,
                     _L.GlobalAveragePooling2D, _L.GlobalMaxPooling2D),
    3: SpatialLayers(_L.Conv3D, _L.Conv3DTranspose, _L.MaxPooling3D, _L.AveragePooling3D, _L.UpSampling3D,
                     _L.GlobalAveragePooling3D, _L.GlobalMaxPooling3D),
}

#: The names `normalization` knows (None: no normalisation).
NORMALIZATION_KINDS = ("batch", "instance", "group", "layer", None)


def layers_for(spatial_dims):
    """The conv, transposed conv, pooling, upsampling and global pooling classes for 2D or 3D inputs.

    Args:
        spatial_dims: 2 or 3.

    Returns:
        `SpatialLayers(conv, conv_transpose, max_pool, average_pool, upsampling,
        global_average_pool, global_max_pool)`: Keras layer classes, e.g.
        `Conv2D` ... `GlobalMaxPooling2D` for 2.

    Raises:
        ValueError: `spatial_dims` is not 2 or 3.

    Example:

    >>> keras_medseg.layers.layers_for(2).conv is keras.layers.Conv2D
    True
    """
    if isinstance(spatial_dims, bool) or spatial_dims not in _TABLE:
        raise ValueError(f"`spatial_dims` must be 2 or 3. Received: spatial_dims={spatial_dims!r}")
    return _TABLE[spatial_dims]


def normalization(kind, name, channels=None, groups=8, epsilon=None, dtype=None, affine=True, momentum=None):
    """A normalisation layer over the channel (last) axis, by name.

    Args:
        kind: "batch", "instance", "group", "layer" or None (see the module docstring).
        name: the layer name.
        channels: int, channels of the input; needed by "group" only.
        groups: int, most groups of "group" (default 8; `gcd(groups, channels)` are used).
        epsilon: float or None (default: the Keras layer's own default, 1e-3).
        dtype: dtype policy of the layer, or None (default: the global policy).
        affine: bool, learn a per-channel scale and shift (default True); False is PyTorch's
            `InstanceNorm3d` default, which MONAI's UNETR and Swin UNETR use.
        momentum: float or None, "batch" only: the moving statistics' momentum (default: Keras' 0.99;
            PyTorch's 0.1 is Keras' 0.9).

    Input/output shape: `(N, *S, C)` for 2D and 3D `S`; the output has the input's shape.

    Returns:
        `keras.layers.BatchNormalization`, `GroupNormalization`,
        `LayerNormalization` or `Identity` (kind None).

    Raises:
        ValueError: an unknown `kind`, or "group" without a positive `channels`.

    Example:

    >>> keras_medseg.layers.normalization("instance", "enc1_norm")  # GroupNormalization(groups=-1)
    """
    if kind not in NORMALIZATION_KINDS:
        raise ValueError(f"`kind` must be one of {list(NORMALIZATION_KINDS)}. Received: kind={kind!r}")
    kwargs = {"name": name}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if epsilon is not None and kind is not None:
        kwargs["epsilon"] = epsilon
    if kind is not None:
        kwargs["center"] = kwargs["scale"] = bool(affine)
    if kind == "batch":
        if momentum is not None:
            kwargs["momentum"] = momentum
        return keras.layers.BatchNormalization(axis=-1, **kwargs)
    if kind == "instance":  # one group per channel
        return keras.layers.GroupNormalization(groups=-1, axis=-1, **kwargs)
    if kind == "group":
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
            raise ValueError(f"`channels` must be a positive int for group normalisation. "
                             f"Received: channels={channels!r}")
        return keras.layers.GroupNormalization(groups=math.gcd(int(groups), int(channels)), axis=-1, **kwargs)
    if kind == "layer":
        return keras.layers.LayerNormalization(axis=-1, **kwargs)
    return keras.layers.Identity(**kwargs)
