"""Attention pooling over space and separable N-D resizing (2D and 3D, channels-last).

`attention_pool` is the learned weighted average of A. Yala's lecture "Advanced
Imaging: Localization and Segmentation" (CPH 100A):
`alpha = softmax_over_positions(logits)` per head and
`pooled[h] = sum_positions alpha[..., h] * features`. `resize_spatial` resizes a
channels-last batch along every spatial axis with an exact box ("area") or a
linear (half-pixel centres) filter; the attention-mask loss uses it to bring a
full-resolution mask to the attention grid and the attention classifier uses it
to bring attention maps back to the image size for display.
"""

import keras
import numpy as np
from keras import ops

from keras_medseg.utils.validation import check_choice, spatial_rank

_SPATIAL_LETTERS = "ijklm"  # never n (batch), h (heads), c (channels), X (resized axis)


def _compute_dtype(*tensors):
    """float64 if any input is float64, else float32 (the delicate parts never run in float16)."""
    for t in tensors:
        if keras.backend.standardize_dtype(t.dtype) == "float64":
            return "float64"
    return "float32"


def attention_pool(features, logits):
    """Softmax-over-space attention pooling, per head.

    `alpha[n, ..., h] = exp(logits[n, ..., h]) / sum_positions exp(logits[n, ..., h])`
    and `pooled[n, h, c] = sum_positions alpha[n, ..., h] * features[n, ..., c]`.
    The softmax and the weighted sum are computed in float32 (float64 when an
    input is float64), whatever the input dtype, then cast back.

    Args:
        features: `(N, H, W, C)` (2D) or `(N, D, H, W, C)` (3D) feature map `z`.
        logits: `(N, H, W, heads)` or `(N, D, H, W, heads)` attention logits
            `f(z)`, same spatial shape as `features`.

    Returns:
        Tuple `(pooled, attention)`: `pooled` of shape `(N, heads, C)` (one
        weighted average of the features per head) and `attention` of the
        shape of `logits` (the maps `alpha`, each summing to 1 over space),
        both in the dtype of `features`.

    Raises:
        ValueError: `features` or `logits` not 2D/3D channels-last, different
            ranks, batch sizes or spatial shapes.

    Example:
        >>> import numpy as np
        >>> from keras_medseg.ops import attention_pool
        >>> z = np.random.rand(2, 8, 8, 16).astype("float32")
        >>> f = np.random.rand(2, 8, 8, 3).astype("float32")
        >>> pooled, alpha = attention_pool(z, f)   # (2, 3, 16), (2, 8, 8, 3)

    Reference:
        A. Yala, "Advanced Imaging: Localization and Segmentation" (lecture,
        CPH 100A): "Attention pooling: learned weighted
        average", `AttnPool(z) = sum_ij alpha_ij z[i, j]`, `alpha = softmax(f(z))`.
    """
    d = spatial_rank(features, "features")
    d_logits = spatial_rank(logits, "logits")
    f_shape, l_shape = tuple(features.shape), tuple(logits.shape)
    if d_logits != d:
        raise ValueError(
            "`logits` must have the same number of spatial axes as `features`. "
            f"Received: features.shape={f_shape}, logits.shape={l_shape}"
        )
    for a, b in zip(f_shape[:-1], l_shape[:-1]):
        if a is not None and b is not None and a != b:
            raise ValueError(
                "`logits` must have the batch and spatial shape of `features` "
                f"(only the last axis differs). Received: features.shape={f_shape}, logits.shape={l_shape}"
            )
    out_dtype = keras.backend.standardize_dtype(features.dtype)
    dtype = _compute_dtype(features, logits)
    z = ops.cast(features, dtype)
    f = ops.cast(logits, dtype)
    axes = tuple(range(1, d + 1))
    f = f - ops.stop_gradient(ops.max(f, axis=axes, keepdims=True))
    e = ops.exp(f)
    alpha = e / ops.sum(e, axis=axes, keepdims=True)
    s = _SPATIAL_LETTERS[:d]
    pooled = ops.einsum(f"n{s}h,n{s}c->nhc", alpha, z)
    return ops.cast(pooled, out_dtype), ops.cast(alpha, out_dtype)


def _area_matrix(n_out, n_in):
    """(n_out, n_in) box-filter weights: overlap of each output cell with each input pixel."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in), dtype="float64")
    for j in range(n_out):
        lo, hi = j * scale, (j + 1) * scale
        for i in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
            m[j, i] = max(0.0, min(hi, i + 1) - max(lo, i))
    return m / m.sum(axis=1, keepdims=True)


def _linear_matrix(n_out, n_in):
    """(n_out, n_in) linear-interpolation weights with half-pixel centres, edges clamped."""
    m = np.zeros((n_out, n_in), dtype="float64")
    x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0.0, n_in - 1)
    i0 = np.floor(x).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = x - i0
    for j in range(n_out):
        m[j, i0[j]] += 1.0 - w[j]
        m[j, i1[j]] += w[j]
    return m


def resize_matrix(n_out, n_in, method="area"):
    """The `(n_out, n_in)` NumPy matrix that `resize_spatial` applies along one axis.

    `"area"`: each output cell averages the input pixels it overlaps, weighted
    by the overlap length (exact box downsampling; rows sum to 1). `"linear"`:
    linear interpolation with half-pixel centres (like `keras.ops.image.resize`
    with `"bilinear"` and `antialias=False`), edges clamped.
    """
    check_choice(method, "method", ("area", "linear"))
    n_out, n_in = int(n_out), int(n_in)
    if n_out < 1 or n_in < 1:
        raise ValueError(f"Sizes must be >= 1. Received: n_out={n_out}, n_in={n_in}")
    return _area_matrix(n_out, n_in) if method == "area" else _linear_matrix(n_out, n_in)


def resize_spatial(x, size, method="area"):
    """Resize a channels-last 2D/3D batch along every spatial axis (separable filter).

    One N-D implementation for 2D and 3D: the resize is a product of per-axis
    `(new, old)` matrices (see `resize_matrix`), so it is exact, differentiable
    and works where `keras.ops.image.resize` (2D only) does not.

    Args:
        x: `(N, H, W, C)` or `(N, D, H, W, C)` tensor with static spatial sizes.
        size: target spatial size, an int (same on every axis) or a tuple with
            one entry per spatial axis.
        method: `"area"` (default; box average, use it to downsample masks) or
            `"linear"` (use it to upsample maps for display).

    Returns:
        `(N, *size, C)` tensor in the dtype of `x` (float32 for integer/bool `x`).

    Raises:
        ValueError: `x` not 2D/3D channels-last, unknown spatial sizes, `size`
            with the wrong number of entries or non-positive entries, unknown `method`.

    Example:
        >>> import numpy as np
        >>> from keras_medseg.ops import resize_spatial
        >>> mask = np.zeros((1, 64, 64, 1), "float32"); mask[:, :, :32] = 1
        >>> coarse = resize_spatial(mask, (8, 8))    # (1, 8, 8, 1), left half = 1
    """
    d = spatial_rank(x, "x")
    check_choice(method, "method", ("area", "linear"))
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size),) * d
    size = tuple(size)
    if len(size) != d or any(isinstance(s, bool) or int(s) != s or s < 1 for s in size):
        raise ValueError(
            f"`size` must be a positive int or a tuple of {d} positive ints (one per spatial axis). "
            f"Received: size={size}"
        )
    in_size = tuple(x.shape[1:-1])
    if any(s is None for s in in_size):
        raise ValueError(
            f"`x` must have static spatial sizes to be resized. Received: x.shape={tuple(x.shape)}"
        )
    dtype = keras.backend.standardize_dtype(x.dtype)
    if "float" not in dtype:
        x = ops.cast(x, "float32")
        dtype = "float32"
    s = _SPATIAL_LETTERS[:d]
    for k in range(d):
        if int(size[k]) == int(in_size[k]):
            continue
        m = ops.convert_to_tensor(resize_matrix(size[k], in_size[k], method), dtype=dtype)
        out_letters = s[:k] + "X" + s[k + 1:]
        x = ops.einsum(f"X{s[k]},n{s}c->n{out_letters}c", m, x)
    return x
