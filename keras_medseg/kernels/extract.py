"""Extract the spatial kernels of every convolution layer of a Keras model."""

import dataclasses

import keras
import numpy as np


@dataclasses.dataclass
class LayerKernels:
    """The k x k (x k) kernels of one convolution layer.

    Attributes:
        layer: layer name.
        layer_type: layer class name (`Conv2D`, `DepthwiseConv2D`, ...).
        kernel_size: spatial kernel size tuple.
        kernels: float array `(M, *kernel_size)`, one kernel per
            (input channel, output channel) pair that the layer connects.
        in_channels: int array `(M,)`, input channel of each kernel.
        out_channels: int array `(M,)`, output channel of each kernel.
    """

    layer: str
    layer_type: str
    kernel_size: tuple
    kernels: np.ndarray
    in_channels: np.ndarray
    out_channels: np.ndarray


def _walk(model):
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model) or (hasattr(layer, "layers") and layer.layers):
            yield from _walk(layer)
        else:
            yield layer


def _pairs(w, groups=1):
    """`(*k, cin_per_group, cout)` -> kernels (M, *k), in (M,), out (M,) with group offsets."""
    d = w.ndim - 2
    cin_g, cout = w.shape[-2], w.shape[-1]
    per_group_out = cout // groups
    kernels = np.moveaxis(w.reshape(w.shape[:d] + (cin_g * cout,)), -1, 0)
    i_idx, o_idx = np.meshgrid(np.arange(cin_g), np.arange(cout), indexing="ij")
    i_idx = i_idx.ravel() + (o_idx.ravel() // per_group_out) * cin_g
    return kernels, i_idx, o_idx.ravel()


def extract_kernels(model, min_size=2):
    """Every spatial kernel of every convolution layer, with channel indices.

    Handles `Conv2D`/`Conv3D` (with `groups`), `Conv2DTranspose`/
    `Conv3DTranspose` (whose weight is stored `(*k, out, in)`),
    `DepthwiseConv2D` (output channel `in * depth_multiplier + m`) and the
    depthwise part of `SeparableConv2D`; nested models are searched too.

    Args:
        model: a Keras model (built).
        min_size: int, skip layers whose smallest kernel side is below this
            (1x1 convolutions have no spatial structure). Defaults to 2.

    Returns:
        list of `LayerKernels` in layer order.

    Raises:
        TypeError: `model` is not a Keras model / layer with sub-layers.

    Example:

    >>> for lk in keras_medseg.kernels.extract_kernels(model):
    ...     print(lk.layer, lk.kernels.shape)

    Reference:
        J. Actor, "Identification of Kernels in a Convolutional Neural Network"
        ("for each layer, separate each channel's 3x3 kernel").
    """
    if not hasattr(model, "layers"):
        raise TypeError(f"`model` must be a Keras model. Received: {type(model).__name__}")
    out = []
    for layer in _walk(model):
        L = keras.layers
        if isinstance(layer, (L.Conv2DTranspose, L.Conv3DTranspose)):
            w = np.swapaxes(keras.ops.convert_to_numpy(layer.kernel), -1, -2)  # -> (*k, in, out)
            kernels, i_idx, o_idx = _pairs(w)
        elif isinstance(layer, L.SeparableConv2D):
            w = keras.ops.convert_to_numpy(layer.depthwise_kernel)  # (*k, in, mult)
            kernels, i_idx, m_idx = _pairs(w)
            o_idx = i_idx * w.shape[-1] + m_idx
        elif isinstance(layer, L.DepthwiseConv2D):
            w = keras.ops.convert_to_numpy(layer.kernel)
            kernels, i_idx, m_idx = _pairs(w)
            o_idx = i_idx * w.shape[-1] + m_idx
        elif isinstance(layer, (L.Conv2D, L.Conv3D)):
            w = keras.ops.convert_to_numpy(layer.kernel)
            kernels, i_idx, o_idx = _pairs(w, getattr(layer, "groups", 1))
        else:
            continue
        k = tuple(int(s) for s in w.shape[:-2])
        if min(k) < min_size:
            continue
        out.append(LayerKernels(layer.name, type(layer).__name__, k, kernels.astype("float64"),
                                i_idx.astype("int64"), o_idx.astype("int64")))
    return out
