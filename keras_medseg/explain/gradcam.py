"""Grad-CAM: gradient-weighted class activation maps."""

from __future__ import annotations

import warnings
from typing import Callable

import keras
import numpy as np
from keras import ops

from keras_medseg.explain._scores import check_explain_input, ensure_built, make_score_fn, one_line_errors, score_key
from keras_medseg.utils.gradients import compiled_call
from keras_medseg.utils.validation import check_positive_int

_CONV_CLASS_NAMES = (
    "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose", "Conv3DTranspose",
)


def _walk_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _walk_layers(layer)
        else:
            yield layer


def find_last_conv_layer(model: keras.Model) -> keras.layers.Layer:
    """The last layer (in graph order) whose output is a 2D/3D feature map `(N, *S, C)`.

    Convolution layers (Keras `Conv*` and any layer with a `kernel_size`) are
    preferred; the name is what Grad-CAM uses by default.

    Raises:
        ValueError: the model has no convolution layer.
    """
    last = None
    for layer in _walk_layers(model):
        is_conv = type(layer).__name__ in _CONV_CLASS_NAMES or hasattr(layer, "kernel_size")
        try:
            rank = len(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        if is_conv and rank in (4, 5):
            last = layer
    if last is None:
        raise ValueError(
            f"Grad-CAM needs a convolution layer with a 2D/3D feature-map output; model "
            f"{model.name!r} has none. Pass `layer=` explicitly."
        )
    return last


# Normalisations that subtract each channel's (or group's) mean over the positions of every sample: the score
# does not change when a constant is added to a channel of their input, so `alpha_l = mean d y / d F_l` is 0
# there for any implementation, and Grad-CAM of the layer before them is an empty (~1e-9) map.
_MEAN_REMOVING = ("GroupNormalization", "InstanceNormalization")
_ELEMENTWISE = ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax")


def _consumers(model, layer):
    """The layers of `model` (nested ones included) that take `layer`'s output as an input."""
    out = []
    for candidate in _walk_layers(model):
        for node in getattr(candidate, "_inbound_nodes", []):
            if any(getattr(getattr(t, "_keras_history", None), "operation", None) is layer
                   for t in getattr(node, "input_tensors", ())):
                out.append(candidate)
                break
    return out


def _mean_removing_consumer(model, layer):
    """The group/instance normalisation that `layer` feeds, or None."""
    for consumer in _consumers(model, layer):
        if type(consumer).__name__ in _MEAN_REMOVING:
            return consumer
    return None


def _block_output(model, layer):
    """From a convolution that feeds a mean-removing normalisation, the block output: the normalisation, then
    the element-wise activation that follows it when it is the normalisation's only consumer."""
    norm = _mean_removing_consumer(model, layer)
    if norm is None:
        return layer
    after = _consumers(model, norm)
    if len(after) == 1 and type(after[0]).__name__ in _ELEMENTWISE:
        return after[0]
    return norm


def _get_layer(model, layer):
    if layer is None:
        return _block_output(model, find_last_conv_layer(model))
    if isinstance(layer, str):
        for candidate in _walk_layers(model):
            if candidate.name == layer:
                return _warn_if_normalised(model, candidate)
        names = [lyr.name for lyr in _walk_layers(model)]
        raise ValueError(f"`layer` must name a layer of the model {names}. Received: layer={layer!r}")
    if hasattr(layer, "call"):
        return _warn_if_normalised(model, layer)
    raise TypeError(f"`layer` must be None, a layer name or a layer. Received: layer={layer!r}")


def _warn_if_normalised(model, layer):
    norm = _mean_removing_consumer(model, layer)
    if norm is not None:
        block = _block_output(model, layer)
        warnings.warn(
            f"Grad-CAM of layer {layer.name!r}: it feeds {type(norm).__name__} {norm.name!r}, which removes each "
            f"channel's mean over the positions, so the mean gradients (alpha) are 0 and the map is empty; "
            f"pass layer={block.name!r} (the block output) instead.", stacklevel=3)
    return layer


class _FeatureTap:
    """Records a layer's output and adds a perturbation `delta` to it.

    The gradient of the score with respect to `delta` at 0 is the gradient
    with respect to the feature map, on every backend (the layer's `call` is
    wrapped on the instance for the duration of the `with` block).
    """

    def __init__(self, layer):
        self.layer = layer
        self.delta = None
        self.output = None

    def __enter__(self):
        original = self.layer.call

        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            self.output = out
            if self.delta is not None:
                out = out + ops.cast(self.delta, out.dtype)
            return out

        object.__setattr__(self.layer, "call", call)
        return self

    def __exit__(self, *exc):
        self.layer.__dict__.pop("call", None)
        return False


def _resize(maps, shape):
    from skimage.transform import resize

    if maps.shape[1:] == tuple(shape):
        return maps
    return np.stack(
        [resize(m, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True) for m in maps]
    ).astype("float32")


def gradcam(model: keras.Model, x: np.ndarray, class_index: int | Callable,
            layer: str | keras.layers.Layer | None = None, resize: bool = True, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM map `ReLU(sum_l alpha_l F_l)` upsampled to the input grid.

    `F_l` are the feature maps (channels) of `layer` for the input, `alpha_l`
    the mean over positions of `d y_i / d F_l` (Selvaraju et al.). For a
    model whose last convolution feeds global average pooling and a dense
    layer this is the class activation map (CAM) divided by the number of
    positions.

    The gradient `d y_i / d F_l` is taken with respect to a per-channel
    perturbation added to `layer`'s output inside one cached compiled
    function (per model, layer, target and batch shape): only that
    perturbation is differentiated, so the backward pass runs from the
    score down to `layer` and not through the layers below it. Checked
    against tf-keras-vis `Gradcam` and against the class activation map
    by hand (tests/explain).

    Args:
        model: a Keras model taking `(N, *S, C)` inputs.
        x: input batch `(N, H, W, C)` or `(N, D, H, W, C)`.
        class_index: int class index or score function `fn(y) -> (N,)`.
        layer: None (default: the last convolution layer), a layer name or
            a layer of `model`.
        resize: bool, upsample (linear interpolation) to the input grid.
            Defaults to True; False returns the map on the layer's grid.
        batch_size: int, samples per gradient evaluation. Defaults to 32.

    Returns:
        NumPy float32 `(N, *S)` (or `(N, *S_layer)` with `resize=False`).

    Layer choice: by default the last convolution, or, when it feeds a group or instance normalisation
    (which removes each channel's mean over the positions, making every `alpha_l` exactly 0 there), the
    output of that block (the normalisation, or the activation right after it). A `layer` given explicitly
    that feeds such a normalisation is used as asked, with a warning naming the block output to use.

    Raises:
        ValueError: bad `x` (not a batch the model takes, NaN/Inf; one line
            naming it), a class the model does not output, unknown `layer`,
            or a model without convolutions.

    Warns:
        UserWarning: the given `layer` feeds a group/instance normalisation.

    Example:

    >>> cam = keras_medseg.explain.gradcam(model, x, 1, layer="block5_conv3")

    Reference:
        The lecture "Convolutional networks - theory" (GradCAM on VGG16);
        J. Wolterink, "Deep Learning II: Interpretability & Adversarial
        Methods" (8DM50, class activation maps);
        Selvaraju et al., "Grad-CAM", 2017.
    """
    x = check_explain_input(model, x, class_index)
    score_fn = make_score_fn(class_index)
    target = _get_layer(model, layer)
    batch_size = check_positive_int(batch_size, "batch_size")
    try:
        out_shape = tuple(target.output.shape)
    except (AttributeError, TypeError, ValueError):
        out_shape = None
    if out_shape is not None and len(out_shape) != x.ndim:
        raise ValueError(
            f"`layer` {target.name!r} must output a feature map with the input's layout (N, *S, C). "
            f"Received output shape {out_shape}."
        )
    channels = out_shape[-1] if out_shape is not None and out_shape[-1] is not None else None
    with one_line_errors(model, x):
        ensure_built(model, x)
        if channels is None:  # unknown width: one forward pass to learn it
            with _FeatureTap(target) as tap:
                model(ops.convert_to_tensor(x[:1]), training=False)
                channels = int(tap.output.shape[-1])
        return _gradcam_maps(model, x, score_fn, target, int(channels), batch_size, resize)


def _gradcam_maps(model, x, score_fn, target, channels, batch_size, resize):
    maps = []
    d_rank = x.ndim - 2
    key = ("gradcam", target.name, id(target), score_key(score_fn))

    def total(call, delta, xb):
        # A per-channel perturbation (n, 1, .., 1, C) added to the feature map:
        # its gradient is sum_positions dy/dF_l = alpha_l * |positions|. Only
        # `delta` is differentiated, so the backward pass runs from the score
        # down to the feature map and stops there (the layers below are not
        # differentiated, and no weight gradient is formed).
        with _FeatureTap(target) as tap:
            tap.delta = delta
            y = call(xb)
        return ops.sum(score_fn(y)), tap.output

    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        delta = np.zeros((len(xb),) + (1,) * d_rank + (int(channels),), "float32")
        _, g, feats = compiled_call(model, key, total, delta, xb, grad=True)
        if len(feats.shape) not in (4, 5):
            raise ValueError(
                f"`layer` {target.name!r} must output a 2D/3D feature map (N, *S, C). "
                f"Received output shape {tuple(feats.shape)}."
            )
        feats = ops.convert_to_numpy(ops.cast(feats, "float32"))
        g = ops.convert_to_numpy(ops.cast(g, "float32"))
        alpha = g / float(np.prod(feats.shape[1:-1]))  # (n, 1.., C): mean gradient per channel
        maps.append(np.maximum((alpha * feats).sum(axis=-1), 0.0))
    maps = np.concatenate(maps, axis=0).astype("float32")
    if resize:
        maps = _resize(maps, x.shape[1:-1])
    return maps
