"""Level-set operators on `keras.ops`: edge indicator, upwind advection, upwind |grad u|, curvature.

All functions take channels-last batches `(N, *S, C)` with 2 or 3 spatial axes,
work in float32 and float64 (float16 inputs are computed in float32 where a
square root or a division is involved and cast back), are differentiable, and
use unit grid spacing.

Boundary convention: inputs are padded by replicating the edge value (zero
flux), see `keras_medseg.ops.finite_differences`.

Every operator accepts optional kernels (Keras layout `(*K, C_in, C_out)`,
applied as cross-correlations) so that the layers in `keras_medseg.layers` can
pass learned kernels; the defaults are the finite-difference stencils and give
the textbook formulas.

Reference: J. Actor, "Identification of kernels in a convolutional neural
network" (Rice University, 2020): level-set equation and the Level Set Network.
"""

import numbers

import numpy as np
from keras import ops

from keras_medseg.ops.finite_differences import conv_edge, safe_sqrt, stencil_kernel
from keras_medseg.ops.level_set_stopping import AUTO_THRESHOLD_K, robust_edge_level, threshold_propagation
from keras_medseg.utils.validation import (
    check_positive,
    check_positive_int,
    spatial_rank,
)

_LOW_PRECISION = ("float16", "bfloat16")


def _working_dtype(x):
    dtype = str(getattr(x.dtype, "name", x.dtype))
    return "float32" if dtype in _LOW_PRECISION else dtype


def _as_float(x, name):
    if not hasattr(x, "shape"):
        raise TypeError(f"`{name}` must be a tensor or array. Received: {name} of type {type(x).__name__}")
    x = ops.convert_to_tensor(x)
    if "float" not in str(x.dtype):
        x = ops.cast(x, "float32")
    return x


def _check_kernel(kernel, name, d, c_in=None, c_out=None):
    shape = tuple(kernel.shape)
    if len(shape) != d + 2:
        raise ValueError(
            f"`{name}` must have shape (*kernel_size, C_in, C_out) with {d} spatial axes. "
            f"Received: {name}.shape={shape}"
        )
    if any(s is not None and s % 2 == 0 for s in shape[:d]):
        raise ValueError(f"`{name}` must have odd sizes along every spatial axis. Received: {name}.shape={shape}")
    for axis, want, what in ((-2, c_in, "C_in"), (-1, c_out, "C_out")):
        if want is not None and shape[axis] is not None and shape[axis] != want:
            raise ValueError(f"`{name}` must have {what}={want}. Received: {name}.shape={shape}")
    return kernel


def _check_single_channel(u, name):
    if u.shape[-1] is not None and u.shape[-1] != 1:
        raise ValueError(f"`{name}` must have exactly one channel. Received: {name}.shape={tuple(u.shape)}")


def _check_same_grid(u, other, name_u, name_other, channels):
    su, so = tuple(u.shape), tuple(other.shape)
    if len(so) != len(su):
        raise ValueError(
            f"`{name_other}` must have the same rank as `{name_u}` {su}. Received: {name_other}.shape={so}"
        )
    for a, b in zip(su[1:-1], so[1:-1]):
        if a is not None and b is not None and a != b:
            raise ValueError(
                f"`{name_other}` must have the same spatial shape as `{name_u}` {su}. Received: {name_other}.shape={so}"
            )
    if so[-1] is not None and so[-1] != channels:
        raise ValueError(
            f"`{name_other}` must have {channels} channel(s) (one per spatial axis for a velocity). "
            f"Received: {name_other}.shape={so}"
        )


def _one_sided(u, d, forward_kernels, backward_kernels):
    fwd = stencil_kernel("forward", (3,) * d + (1, d)) if forward_kernels is None else forward_kernels
    bwd = stencil_kernel("backward", (3,) * d + (1, d)) if backward_kernels is None else backward_kernels
    _check_kernel(fwd, "forward_kernels", d, 1, d)
    _check_kernel(bwd, "backward_kernels", d, 1, d)
    return conv_edge(u, fwd), conv_edge(u, bwd)


def edge_indicator(image, kernels=None, scale=1.0, threshold=None, threshold_k=None):
    """Edge indicator `g = 1 / (1 + sum_j (k_j * (s I))^2)`, one channel in (0, 1] (two with a `threshold`).

    With the default kernels (`k_j` = central difference along spatial axis j)
    this is `1 / (1 + |grad (s I)|^2)`. A multi-channel image is summed over its
    channels inside each convolution (kernel layout `(*K, C, J)`).

    `scale="auto"` picks `s` per image from the image itself
    (`auto_edge_scale`: the 99.5th percentile of `|k * I|` maps to 7, i.e.
    `g = 0.02` on the strongest edges), so that the same settings hold for CT
    in HU, MRI in arbitrary units and photographs in [0, 255].

    With a `threshold` a second channel holds the propagation image of the
    balloon, `P = max(g - t, 0) / (1 - t)`: 0 on every edge where `g <= t`,
    so that a balloon cannot push through it
    (`keras_medseg.ops.level_set_stopping.threshold_propagation`).
    `threshold="auto"` picks `t` per image as `g` at the gradient level
    `median + threshold_k * 1.4826 MAD` of the response magnitude
    (`keras_medseg.ops.level_set_stopping.robust_edge_level`), like
    scikit-image's `threshold="auto"` for its morphological snake but from
    robust statistics instead of a fixed percentile.

    Args:
        image: `(N, H, W, C)` or `(N, D, H, W, C)`.
        kernels: optional `(*K, C, J)` kernels (odd sizes); default central
            differences `(3, ..., 3, C, d)`.
        scale: positive float (the edge contrast `s`, default 1.0) or `"auto"`.
        threshold: None (default: one channel), a float in (0, 1) (the level
            `t` of `g`) or `"auto"`.
        threshold_k: deviations above the median for `threshold="auto"`,
            default None (`keras_medseg.ops.level_set_stopping.AUTO_THRESHOLD_K`, 9.0).

    Returns:
        `(N, H, W, 1)` or `(N, D, H, W, 1)`; with a `threshold` two channels `[g, P]`.

    Raises:
        ValueError: `image` not 4D/5D, `scale` neither positive nor `"auto"`,
            `threshold` neither in (0, 1) nor `"auto"`, `threshold_k < 0`,
            or `kernels` of the wrong rank, with even sizes or with `C_in`
            different from the image channels.

    Example:
    >>> g = keras_medseg.ops.edge_indicator(np.random.rand(1, 32, 32, 1))

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network" (edge indicator `g_I`).
    """
    image = _as_float(image, "image")
    d = spatial_rank(image, "image")
    channels = image.shape[-1]
    if kernels is None:
        if channels is None:
            raise ValueError(f"`image` needs a known channel count. Received: image.shape={tuple(image.shape)}")
        kernels = stencil_kernel("central", (3,) * d + (channels, d))
    if not (isinstance(scale, str) and scale == "auto"):
        if isinstance(scale, str) or not isinstance(scale, numbers.Real):
            raise ValueError(f"`scale` must be a positive number or 'auto'. Received: scale={scale!r}")
        check_positive(scale, "scale")
    check_edge_threshold(threshold)
    _check_kernel(kernels, "kernels", d, c_in=channels)
    responses = conv_edge(image, kernels)
    if isinstance(scale, str):
        responses = responses * ops.cast(auto_edge_scale(responses), responses.dtype)
    elif scale != 1.0:
        responses = responses * ops.convert_to_tensor(scale, dtype=responses.dtype)
    square = ops.sum(ops.square(responses), axis=-1, keepdims=True)
    g = 1.0 / (1.0 + square)
    if threshold is None:
        return g
    if isinstance(threshold, str):
        k = AUTO_THRESHOLD_K if threshold_k is None else threshold_k
        level = robust_edge_level(safe_sqrt(square), k)
        threshold = 1.0 / (1.0 + ops.square(level))
    return ops.concatenate([g, threshold_propagation(g, threshold)], axis=-1)


def check_edge_threshold(threshold):
    """Refuse an edge `threshold` that is neither None, `"auto"` nor a number in (0, 1); returns it."""
    if threshold is None or (isinstance(threshold, str) and threshold == "auto"):
        return threshold
    if isinstance(threshold, (str, bool)) or not isinstance(threshold, numbers.Real) or not 0 < threshold < 1:
        raise ValueError(f"`threshold` must be None, 'auto' or a number in (0, 1). Received: threshold={threshold!r}")
    return float(threshold)


def upwind_advection(u, velocity, forward_kernels=None, backward_kernels=None):
    """Upwind advection term `sum_k ReLU(V_k) D_k^+ u - ReLU(-V_k) D_k^- u`.

    For `V = grad g` this is the convection term `grad g . grad u` of the
    level-set equation `u_t = ... + grad g . grad u`, discretised so that the
    difference is taken on the side information comes from.

    Args:
        u: level set `(N, *S, 1)`.
        velocity: `(N, *S, d)`, channel k = component along spatial axis k
            (same order as the spatial axes of `u`).
        forward_kernels: optional `(*K, 1, d)` kernels replacing `D_k^+`.
        backward_kernels: optional `(*K, 1, d)` kernels replacing `D_k^-`.

    Returns:
        `(N, *S, 1)`.

    Raises:
        ValueError: wrong rank, `u` with more than one channel, `velocity`
            with a channel count other than the number of spatial axes or
            another spatial shape, bad kernels.

    Example:
    >>> a = keras_medseg.ops.upwind_advection(u, velocity)  # u (1,32,32,1), velocity (1,32,32,2)

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network"
    (convection term with upwind differences and ReLU).
    """
    u = _as_float(u, "u")
    d = spatial_rank(u, "u")
    _check_single_channel(u, "u")
    velocity = _as_float(velocity, "velocity")
    _check_same_grid(u, velocity, "u", "velocity", d)
    velocity = ops.cast(velocity, u.dtype)
    d_plus, d_minus = _one_sided(u, d, forward_kernels, backward_kernels)
    return advection_from_differences(d_plus, d_minus, velocity)


def advection_from_differences(d_plus, d_minus, velocity):
    """Upwind advection `sum_k ReLU(V_k) D_k^+ u - ReLU(-V_k) D_k^- u` from one-sided differences `(N, *S, d)`."""
    terms = ops.relu(velocity) * d_plus - ops.relu(-velocity) * d_minus
    return ops.sum(terms, axis=-1, keepdims=True)


def upwind_grad_norm(u, speed, forward_kernels=None, backward_kernels=None):
    """Osher-Sethian upwind gradient norm `|grad u|` for a signed speed.

    Upwind for the equation `u_t + speed |grad u| = 0`:
    where `speed >= 0`: `sqrt(sum_k max(D_k^- u, 0)^2 + min(D_k^+ u, 0)^2)`,
    where `speed < 0`:  `sqrt(sum_k max(D_k^+ u, 0)^2 + min(D_k^- u, 0)^2)`.
    Only the sign of `speed` is used (no gradient flows into it). The square
    root is exact but made differentiable at 0 with a safe `where` (gradient 0
    there instead of NaN).

    Args:
        u: level set `(N, *S, 1)`.
        speed: `(N, *S, 1)` (or broadcastable to it).
        forward_kernels / backward_kernels: optional `(*K, 1, d)` kernels
            replacing `D_k^+` / `D_k^-`.

    Returns:
        `(N, *S, 1)`, non-negative.

    Raises:
        ValueError: wrong rank, more than one channel in `u` or `speed`, bad kernels.

    Example:
    >>> n = keras_medseg.ops.upwind_grad_norm(u, speed)  # (1,32,32,1) each

    Reference: S. Osher, J. Sethian (1988); J. Actor, "Identification of Kernels in a Convolutional Neural Network".
    """
    u = _as_float(u, "u")
    d = spatial_rank(u, "u")
    _check_single_channel(u, "u")
    speed = _as_float(speed, "speed")
    _check_same_grid(u, speed, "u", "speed", 1)
    out_dtype = u.dtype
    work = _working_dtype(u)
    u = ops.cast(u, work)
    d_plus, d_minus = _one_sided(u, d, forward_kernels, backward_kernels)
    return ops.cast(grad_norm_from_differences(d_plus, d_minus, speed), out_dtype)


def grad_norm_from_differences(d_plus, d_minus, speed):
    """Osher-Sethian upwind `|grad u|` from one-sided differences `(N, *S, d)` each (see `upwind_grad_norm`)."""
    sq_pos = ops.sum(ops.square(ops.relu(d_minus)) + ops.square(ops.relu(-d_plus)), axis=-1, keepdims=True)
    sq_neg = ops.sum(ops.square(ops.relu(d_plus)) + ops.square(ops.relu(-d_minus)), axis=-1, keepdims=True)
    sq = ops.where(ops.stop_gradient(speed) >= 0, sq_pos, sq_neg)
    return safe_sqrt(sq)


def curvature(u, eps=1e-8, gradient_kernels=None, divergence_kernels=None):
    """Mean curvature `kappa = div(grad u / (|grad u| + eps))` with central differences.

    `grad u` is `rho * u` (kernels `(*K, 1, d)`, default central differences),
    the normal `n = grad u / (|grad u| + eps)`, and `kappa = sigma * n`
    (kernels `(*K, d, 1)`, default central differences, summed over the d
    components: the divergence). Unit spacing. For a signed distance to a
    circle of radius r (negative inside) kappa = 1/r, for a sphere 2/r.

    Args:
        u: level set `(N, *S, 1)`.
        eps: positive regulariser of the normal, default 1e-8.
        gradient_kernels: optional `(*K, 1, d)` kernels.
        divergence_kernels: optional `(*K, d, 1)` kernels.

    Returns:
        `(N, *S, 1)`.

    Raises:
        ValueError: `eps <= 0`, wrong rank, more than one channel, bad kernels.

    Example:
    >>> kappa = keras_medseg.ops.curvature(u)  # u (1,32,32,1)

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network"
    (curvature term with learnable rho, sigma).
    """
    check_positive(eps, "eps")
    u = _as_float(u, "u")
    d = spatial_rank(u, "u")
    _check_single_channel(u, "u")
    if gradient_kernels is None:
        gradient_kernels = stencil_kernel("central", (3,) * d + (1, d), axis_channel="out")
    if divergence_kernels is None:
        divergence_kernels = stencil_kernel("central", (3,) * d + (d, 1), axis_channel="in")
    _check_kernel(gradient_kernels, "gradient_kernels", d, 1, d)
    _check_kernel(divergence_kernels, "divergence_kernels", d, d, 1)
    out_dtype = u.dtype
    u = ops.cast(u, _working_dtype(u))
    grad = conv_edge(u, gradient_kernels)
    return ops.cast(curvature_from_gradient(grad, divergence_kernels, eps), out_dtype)


def curvature_from_gradient(grad, divergence_kernels, eps):
    """`div(grad / (|grad| + eps))` from a gradient `(N, *S, d)` (see `curvature`)."""
    norm = safe_sqrt(ops.sum(ops.square(grad), axis=-1, keepdims=True))
    normal = grad / (norm + ops.convert_to_tensor(eps, dtype=grad.dtype))
    return conv_edge(normal, divergence_kernels)


#: Adaptive edge scale (`edge_indicator(..., scale="auto")`): the image is multiplied by
#: `AUTO_EDGE_TARGET / q`, with `q` the `AUTO_EDGE_PERCENTILE`-th percentile of the gradient
#: magnitude over the image, so that `g = 1 / (1 + AUTO_EDGE_TARGET^2)` at that percentile.
AUTO_EDGE_PERCENTILE = 99.5
AUTO_EDGE_TARGET = 7.0


def auto_edge_scale(responses, percentile=AUTO_EDGE_PERCENTILE, target=AUTO_EDGE_TARGET):
    """Per-image factor `target / q_p(|k * I|)` that makes the edge indicator independent of the intensity range.

    Args:
        responses: kernel responses `(N, *S, J)` (for the default kernels the image gradient).
        percentile: percentile in (0, 100] of the response magnitude `sqrt(sum_j r_j^2)` over each image,
            default `AUTO_EDGE_PERCENTILE` (99.5: the strongest edges of the image, robust to a few outliers).
        target: value the scaled magnitude takes at that percentile, default `AUTO_EDGE_TARGET` (7.0, so
            `g` = 0.02 there).

    Returns:
        `(N, 1, ..., 1)` factors (one per image) broadcastable against `responses`.

    Raises:
        ValueError: `percentile` outside (0, 100] or `target <= 0`.
    """
    percentile = check_positive(percentile, "percentile")
    if percentile > 100:
        raise ValueError(f"`percentile` must be in (0, 100]. Received: percentile={percentile}")
    check_positive(target, "target")
    magnitude = safe_sqrt(ops.sum(ops.square(responses), axis=-1))
    batch = magnitude.shape[0] if magnitude.shape[0] is not None else ops.shape(magnitude)[0]
    flat = ops.reshape(magnitude, (batch, -1))  # a static batch stays static (loops downstream keep their shapes)
    q = ops.quantile(flat, percentile / 100.0, axis=1)
    # a flat image has q = 0 (and zero responses): any finite factor gives g = 1 there
    top = ops.max(flat, axis=1)
    q = ops.maximum(q, 1e-3 * top)
    q = ops.where(q > 0, q, ops.ones_like(q))
    scale = ops.convert_to_tensor(target, dtype=q.dtype) / q
    return ops.reshape(scale, (-1,) + (1,) * (len(responses.shape) - 1))


def reinitialize(u, iterations=10, dt=None):
    """Bring a level set back to a signed distance near its zero level set (PDE reinitialisation).

    Evolves `phi_t = S(u) (1 - |grad phi|)` from `phi = u` with Godunov's
    upwind `|grad phi|` and the smoothed sign `S = u / sqrt(u^2 + |grad u|^2)`
    (Peng et al. 1999), `iterations` explicit steps of `dt`. The zero level set
    stays (almost) in place; `|grad phi|` becomes 1 within about
    `iterations * dt` voxels of it. Unit spacing, replicate boundaries.

    Args:
        u: level set `(N, *S, 1)`, negative inside.
        iterations: int >= 1, default 10.
        dt: pseudo time step, default `0.9 / d` (CFL of the Godunov scheme).

    Returns:
        `(N, *S, 1)`, same sign pattern as `u`, `|grad| ~ 1` near the front.

    Raises:
        ValueError: `iterations < 1`, `dt <= 0`, wrong rank or more than one channel.

    Example:
    >>> phi = keras_medseg.ops.reinitialize(3.0 * u, iterations=20)

    Reference: M. Sussman, P. Smereka, S. Osher, "A level set approach for computing solutions to
    incompressible two-phase flow" (1994); D. Peng, B. Merriman, S. Osher, H. Zhao, M. Kang, "A PDE-based
    fast local level set method" (1999). Checked against the Euclidean distance transform of SciPy.
    """
    iterations = check_positive_int(iterations, "iterations")
    u = _as_float(u, "u")
    d = spatial_rank(u, "u")
    _check_single_channel(u, "u")
    dt = 0.9 / d if dt is None else check_positive(dt, "dt")
    out_dtype = u.dtype
    u = ops.cast(u, _working_dtype(u))
    kernel = ops.convert_to_tensor(
        np.concatenate([stencil_kernel("forward", (3,) * d + (1, d)), stencil_kernel("backward", (3,) * d + (1, d)),
                        stencil_kernel("central", (3,) * d + (1, d))], axis=-1), dtype=u.dtype)
    diffs = conv_edge(u, kernel)
    central = diffs[..., 2 * d:]
    sign = u / ops.sqrt(ops.square(u) + ops.sum(ops.square(central), axis=-1, keepdims=True) + 1e-12)
    positive = sign > 0
    step = ops.convert_to_tensor(dt, dtype=u.dtype)

    def body(_, phi):
        diffs = conv_edge(phi, kernel[..., : 2 * d])
        d_plus, d_minus = diffs[..., :d], diffs[..., d:]
        grow = ops.maximum(ops.square(ops.relu(d_minus)), ops.square(ops.relu(-d_plus)))
        shrink = ops.maximum(ops.square(ops.relu(-d_minus)), ops.square(ops.relu(d_plus)))
        norm = safe_sqrt(ops.sum(ops.where(positive, grow, shrink), axis=-1, keepdims=True))
        return phi - step * sign * (norm - 1.0)

    return ops.cast(ops.fori_loop(0, iterations, body, u), out_dtype)


def check_finite(x, name):
    """Refuse NaN/Inf values in `x` with a `ValueError` naming `name` when the values are known.

    Eager tensors and arrays are checked at once (every backend). Inside a
    TensorFlow graph (`model.predict`, `fit`) the check is a graph assertion
    that fails with `InvalidArgumentError` carrying the same message; inside a
    JAX trace the values are unknown and nothing is checked.

    Returns:
        `x` (under a TensorFlow graph: `x` with the assertion attached).
    """
    import keras

    message = f"`{name}` contains NaN or Inf values; clean or mask them before the level-set evolution."
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return tf.debugging.assert_all_finite(x, message)
    elif backend == "jax":
        import jax

        if isinstance(x, jax.core.Tracer):
            return x
    if not bool(ops.convert_to_numpy(ops.all(ops.isfinite(x)))):
        raise ValueError(f"{message} Received: {name} with {int(np.size(ops.convert_to_numpy(x)))} values, "
                         f"{int(np.count_nonzero(~np.isfinite(ops.convert_to_numpy(x))))} of them not finite")
    return x

