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

from keras import ops

from keras_medseg.ops.finite_differences import conv_edge, safe_sqrt, stencil_kernel
from keras_medseg.utils.validation import check_positive, spatial_rank

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


def edge_indicator(image, kernels=None):
    """Edge indicator `g = 1 / (1 + sum_j (k_j * I)^2)`, one channel in (0, 1].

    With the default kernels (`k_j` = central difference along spatial axis j)
    this is `1 / (1 + |grad I|^2)`. A multi-channel image is summed over its
    channels inside each convolution (kernel layout `(*K, C, J)`).

    Args:
        image: `(N, H, W, C)` or `(N, D, H, W, C)`.
        kernels: optional `(*K, C, J)` kernels (odd sizes); default central
            differences `(3, ..., 3, C, d)`.

    Returns:
        `(N, H, W, 1)` or `(N, D, H, W, 1)`.

    Raises:
        ValueError: `image` not 4D/5D, or `kernels` of the wrong rank, with
            even sizes or with `C_in` different from the image channels.

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
    _check_kernel(kernels, "kernels", d, c_in=channels)
    responses = conv_edge(image, kernels)
    return 1.0 / (1.0 + ops.sum(ops.square(responses), axis=-1, keepdims=True))


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
    sq_pos = ops.sum(ops.square(ops.relu(d_minus)) + ops.square(ops.relu(-d_plus)), axis=-1, keepdims=True)
    sq_neg = ops.sum(ops.square(ops.relu(d_plus)) + ops.square(ops.relu(-d_minus)), axis=-1, keepdims=True)
    sq = ops.where(ops.stop_gradient(speed) >= 0, sq_pos, sq_neg)
    return ops.cast(safe_sqrt(sq), out_dtype)


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
    norm = safe_sqrt(ops.sum(ops.square(grad), axis=-1, keepdims=True))
    normal = grad / (norm + ops.convert_to_tensor(eps, dtype=grad.dtype))
    return ops.cast(conv_edge(normal, divergence_kernels), out_dtype)
