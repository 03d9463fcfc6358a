"""Linear (bilinear / trilinear) upsampling by integer factors, channels-last 2D/3D, any spatial size."""

import numbers

from keras import ops

from keras_medseg.utils.validation import spatial_rank


def _factors(factor, d):
    if isinstance(factor, numbers.Integral) and not isinstance(factor, bool):
        factor = (int(factor),) * d
    if not isinstance(factor, (tuple, list)) or len(factor) != d or any(
            isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 1 for f in factor):
        raise ValueError(f"`factor` must be a positive int or a tuple of {d} positive ints. "
                         f"Received: factor={factor!r}")
    return tuple(int(f) for f in factor)


def _upsample_axis(x, axis, factor):
    """Linear upsampling along one axis with half-pixel centres and clamped edges."""
    if factor == 1:
        return x

    def part(start, stop):
        index = [slice(None)] * len(x.shape)
        index[axis] = slice(start, stop)
        return x[tuple(index)]

    before = ops.concatenate([part(0, 1), part(None, -1)], axis=axis)  # x[i - 1], edge clamped
    after = ops.concatenate([part(1, None), part(-1, None)], axis=axis)  # x[i + 1], edge clamped
    phases = []
    for r in range(factor):
        # output s*i + r sits at input coordinate i + f with f = (r + 0.5) / s - 0.5 in (-0.5, 0.5)
        f = (r + 0.5) / factor - 0.5
        phases.append((1.0 + f) * x - f * before if f < 0 else (1.0 - f) * x + f * after)
    shape = list(ops.shape(x))  # ints, or scalar tensors for sizes known only at run time
    shape[axis] = shape[axis] * factor
    return ops.reshape(ops.stack(phases, axis=axis + 1), shape)


def upsample_linear(x, factor=2):
    """Upsample a channels-last 2D/3D batch by integer factors with (bi/tri)linear interpolation.

    Output voxel `s * i + r` along an axis sits at input coordinate
    `i + (r + 0.5) / s - 0.5` (half-pixel centres) and interpolates its two
    neighbours; coordinates beyond the first/last voxel take the edge value.
    This is `torch.nn.functional.interpolate(mode="trilinear",
    align_corners=False)` (and `keras.ops.image.resize(..., "bilinear")` in
    2D), separable and differentiable, in `keras.ops` only, for spatial sizes
    unknown until run time.

    Args:
        x: `(N, H, W, C)` or `(N, D, H, W, C)` float tensor.
        factor: int (every axis) or one int per spatial axis (default 2).

    Returns:
        `(N, *(S * factor), C)` tensor in the dtype of `x`.

    Raises:
        ValueError: `x` not 2D/3D channels-last, or a bad `factor`.

    Example:
        >>> import numpy as np
        >>> from keras_medseg.ops import upsample_linear
        >>> y = upsample_linear(np.random.rand(1, 4, 4, 4, 8).astype("float32"), 2)  # (1, 8, 8, 8, 8)

    Reference: checked against `torch.nn.functional.interpolate` and
    `keras_medseg.ops.resize_spatial(method="linear")` in
    `tests/ops/test_upsample.py`.
    """
    d = spatial_rank(x, "x")
    factors = _factors(factor, d)
    x = ops.convert_to_tensor(x)
    for k in range(d):
        x = _upsample_axis(x, k + 1, factors[k])
    return x
