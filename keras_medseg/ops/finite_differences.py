"""N-D finite-difference stencils and convolution with replicate ("edge") padding.

One implementation serves 2D and 3D channels-last tensors `(N, *spatial, C)`.
Kernels use the Keras convolution layout `(*kernel_size, C_in, C_out)` and,
like every Keras convolution, are applied as a cross-correlation:
`(k * u)(x) = sum_o k(o) u(x + o)` with the offset `o` counted from the
kernel's centre tap.

Boundary convention: the input is padded by replicating its edge values
(zero flux / Neumann), so a one-sided difference that would reach outside the
grid is zero at the boundary and a central difference there is half the
one-sided difference into the domain.
"""

import numbers

import keras
import numpy as np
from keras import ops

from keras_medseg.utils.validation import check_choice, standardize_kernel_size

# 1D stencils on three taps (offsets -1, 0, +1), applied as cross-correlations.
STENCILS_1D = {
    "forward": (0.0, -1.0, 1.0),  # D^+ u(i) = u(i+1) - u(i)
    "backward": (-1.0, 1.0, 0.0),  # D^- u(i) = u(i) - u(i-1)
    "central": (-0.5, 0.0, 0.5),  # D^0 u(i) = (u(i+1) - u(i-1)) / 2
}


def normalize_kernel_size(kernel_size, spatial_dims, name="kernel_size", minimum=3):
    """Kernel size as a tuple of `spatial_dims` odd integers >= `minimum` (see `standardize_kernel_size`)."""
    return standardize_kernel_size(kernel_size, spatial_dims, name=name, minimum=minimum)


def check_kernel_size_arg(kernel_size, name="kernel_size"):
    """Validate a layer's `kernel_size` argument (odd, >= 3) before the spatial rank is known.

    Returns the int unchanged, or a tuple of 2 or 3 ints.
    """
    sizes = standardize_kernel_size(kernel_size, None, name=name, minimum=3, ranks=(2, 3))
    return sizes[0] if isinstance(kernel_size, numbers.Integral) else sizes


def stencil_kernel(kind, shape, axis_channel="out"):
    """NumPy kernel holding a 1D finite-difference stencil along each spatial axis.

    Args:
        kind: `"forward"`, `"backward"` or `"central"` (see `STENCILS_1D`).
        shape: `(*kernel_size, C_in, C_out)` with odd sizes >= 3; the number
            of spatial dims `d` is `len(shape) - 2`.
        axis_channel: which channel axis enumerates the spatial axes.
            `"out"`: `kernel[..., c, k]` is the stencil along axis `k` for every
            input channel `c` (a gradient: `C_out` >= `d`; channels `k >= d` are
            zero). `"in"`: `kernel[..., k, c]` is the stencil along axis `k` for
            every output channel `c` (a divergence: `C_in` >= `d`).

    Returns:
        float64 NumPy array of `shape`.
    """
    check_choice(kind, "kind", tuple(STENCILS_1D))
    check_choice(axis_channel, "axis_channel", ("out", "in"))
    shape = tuple(int(s) for s in shape)
    d = len(shape) - 2
    sizes = normalize_kernel_size(shape[:d], d, "kernel shape")
    kernel = np.zeros(shape, dtype="float64")
    centre = tuple(s // 2 for s in sizes)
    n_axes = shape[-1] if axis_channel == "out" else shape[-2]
    for k in range(min(d, n_axes)):
        for offset, value in zip((-1, 0, 1), STENCILS_1D[kind]):
            if value == 0.0:
                continue
            index = list(centre)
            index[k] += offset
            if axis_channel == "out":
                kernel[tuple(index) + (slice(None), k)] = value
            else:
                kernel[tuple(index) + (k, slice(None))] = value
    return kernel


def gaussian_kernel(sigma, spatial_dims, channels):
    """Normalised N-D Gaussian, size `2*ceil(3 sigma)+1`, as a `(*K, C, C)` per-channel kernel."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype="float64")
    g1 = np.exp(-0.5 * (x / sigma) ** 2)
    g1 /= g1.sum()
    g = g1
    for _ in range(spatial_dims - 1):
        g = np.multiply.outer(g, g1)
    return g[..., None, None] * np.eye(channels)


def pad_edge(x, pad):
    """Pad the spatial axes of `(N, *S, C)` by replicating the edge values.

    Written with slices and concatenation because `keras.ops.pad(mode="edge")`
    is not available on every backend; differentiable everywhere.

    Args:
        x: tensor `(N, *S, C)`.
        pad: one `(before, after)` pair per spatial axis.
    """
    for axis, (lo, hi) in enumerate(pad, start=1):
        parts = []
        head = (slice(None),) * axis
        if lo:
            first = x[head + (slice(0, 1),)]
            parts.extend([first] * lo)
        parts.append(x)
        if hi:
            last = x[head + (slice(-1, None),)]
            parts.extend([last] * hi)
        if len(parts) > 1:
            x = ops.concatenate(parts, axis=axis)
    return x


def conv_edge(x, kernel):
    """'Same'-size convolution (cross-correlation) of `x` with replicate padding.

    Args:
        x: tensor `(N, *S, C_in)`.
        kernel: tensor or array `(*K, C_in, C_out)` with odd sizes; cast to
            the dtype of `x`.

    Returns:
        tensor `(N, *S, C_out)`.

    On torch, float64 tensors go through `_torch_conv_contiguous` (the same
    cross-correlation, tested equal to `keras.ops.conv`): Keras' torch `conv`
    hands torch a channels-last kernel, and torch's CPU float64 convolution
    backward (`slow_conv2d`) then fails with "grad_weight must be contiguous".
    """
    kernel = ops.cast(kernel, x.dtype)
    sizes = tuple(kernel.shape[:-2])
    x = pad_edge(x, [(k // 2, k // 2) for k in sizes])
    if keras.backend.backend() == "torch" and ops.dtype(x) == "float64":
        return _torch_conv_contiguous(x, kernel)
    return ops.conv(x, kernel, strides=1, padding="valid")


def _torch_conv_contiguous(x, kernel):
    """Valid, stride-1 cross-correlation of `(N, *S, C_in)` with `(*K, C_in, C_out)` in contiguous torch tensors.

    The torch branch of `conv_edge`: the kernel is permuted to torch's
    `(C_out, C_in, *K)` and made contiguous, so the float64 CPU backward
    (`slow_conv2d` / `slow_conv3d`) accepts its gradient.
    """
    import torch.nn.functional as F

    x, kernel = ops.convert_to_tensor(x), ops.convert_to_tensor(kernel)
    d = len(kernel.shape) - 2
    w = kernel.permute(d + 1, d, *range(d)).contiguous()
    xt = x.permute(0, d + 1, *range(1, d + 1)).contiguous()
    y = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[d](xt, w)
    return y.permute(0, *range(2, d + 2), 1)


def safe_sqrt(x):
    """`sqrt(x)` for `x >= 0` whose gradient at `x == 0` is 0 instead of inf/NaN.

    The value is exactly `sqrt(x)`; a `where` keeps the zero entries out of the
    square root so autodiff never evaluates `1 / sqrt(0)`.
    """
    positive = x > 0
    safe = ops.where(positive, x, ops.ones_like(x))
    return ops.where(positive, ops.sqrt(safe), ops.zeros_like(x))
