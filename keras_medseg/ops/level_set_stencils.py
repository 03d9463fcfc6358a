"""Fast path of the frozen level-set step: the finite-difference stencils as slices of one padded tensor.

`LevelSetStep` with frozen kernels (`lse`) applies the textbook stencils
(forward, backward and central differences, unit spacing, replicate
boundaries). Written as convolutions they cost a `(3,)*d x 1 x 5d` convolution
plus a `(3,)*d x d x 1` one per time step, mostly multiplications by zero, and
a compiler (XLA on CPU) cannot skip them because the kernels are variables.
Here the same numbers come from differences of shifted slices of ONE
edge-padded copy of `u` (and one of each normal component for the
divergence): a handful of element-wise operations per voxel that XLA fuses into
a single pass. The convolution path (`keras_medseg.ops.level_set`) stays the
reference and the path for learned kernels; the tests check that both give
the same numbers.

`compiled_function` runs a time loop under XLA on TensorFlow (`tf.function(
jit_compile=True)`, which Keras does not enable on CPU by itself); on JAX the
loop is already compiled (`jax.lax` control flow inside `jax.jit`), on PyTorch
it runs as written.

Reference: S. Osher, J. Sethian (1988) for the upwind norm; J. Actor, "Identification of Kernels in a
Convolutional Neural Network" (level-set equation, stencils as convolution kernels).
"""

import keras
from keras import ops

from keras_medseg.ops.finite_differences import pad_edge, safe_sqrt


def _axis_slice(d, axis, piece):
    """Index of `(N, *S)` that takes `piece` along spatial `axis` and the interior `1:-1` elsewhere."""
    index = [slice(None)]
    for k in range(d):
        index.append(piece if k == axis else slice(1, -1))
    return tuple(index)


def one_sided_differences(u):
    """Forward and backward differences of `u` `(N, *S)` (no channel axis) along every spatial axis.

    Replicate boundaries. Returns:
        `(forward, backward)`: two lists of `d` tensors `(N, *S)`,
        `forward[k] = u[i+1] - u[i]`, `backward[k] = u[i] - u[i-1]` along axis `k`
        (the numbers of `conv_edge(u, stencil_kernel("forward"/"backward", ...))`).
    """
    d = len(u.shape) - 1
    padded = pad_edge(u, [(1, 1)] * d)
    centre = padded[_axis_slice(d, -1, None)]
    forward = [padded[_axis_slice(d, k, slice(2, None))] - centre for k in range(d)]
    backward = [centre - padded[_axis_slice(d, k, slice(0, -2))] for k in range(d)]
    return forward, backward


def central_divergence(components):
    """`sum_k D_k^0 n_k` for `d` fields `(N, *S)` (no channel axis; central differences, replicate boundaries).

    Each field is padded on its own (one materialised tensor each, so that a
    fusing compiler does not recompute it for every shifted slice).
    """
    d = len(components)
    total = None
    for k, component in enumerate(components):
        padded = pad_edge(component, [(1, 1)] * d)
        term = padded[_axis_slice(d, k, slice(2, None))] - padded[_axis_slice(d, k, slice(0, -2))]
        total = term if total is None else total + term
    return 0.5 * total


def central_gradient(x):
    """Central differences `0.5 (x[i+1] - x[i-1])` of `x` `(N, *S, 1)` along every spatial axis: `(N, *S, d)`.

    Replicate boundaries: the numbers of `conv_edge(x, stencil_kernel("central", ...))`
    (the frozen `edge_gradient_kernel` of `LevelSetStep`, hence its `velocity`
    up to the factor gamma), from slices of one edge-padded copy instead of a
    convolution: a `(16, 256, 256, 1)` batch with a `3 x 3 x 1 x 2` kernel cost
    about 70 ms of CPU as a convolution on TensorFlow and on JAX (2 CPU
    cores), against a few ms as one fused pass of slices.
    """
    level = x[..., 0]
    d = len(level.shape) - 1
    padded = pad_edge(level, [(1, 1)] * d)
    return ops.stack([0.5 * (padded[_axis_slice(d, k, slice(2, None))] - padded[_axis_slice(d, k, slice(0, -2))])
                      for k in range(d)], axis=-1)


def stencil_step(u, g, velocity, alpha, beta, dt, eps, propagation=None):
    """One forward-Euler level-set step with the textbook stencils (same numbers as `LevelSetStep` frozen).

    `u + dt * ((alpha P + beta g kappa) |grad u|_upwind + sum_k ReLU(V_k) D_k^+ u - ReLU(-V_k) D_k^- u)`,
    with `P = g`, or the separate `propagation` image (see `LevelSetStep`).

    The single channel is dropped for the arithmetic: arrays `(N, *S)` with
    the spatial axes last are laid out densely in memory, while `(N, *S, 1)`
    slices and a `d`-channel stack of the normals made XLA on CPU stride
    through memory (measured 1.3-1.6x slower per step, same numbers).

    Args:
        u: level set `(N, *S, 1)`.
        g: edge indicator `(N, *S, 1)`.
        velocity: convection velocity `gamma grad g`, `(N, *S, d)`.
        alpha, beta: scalars or 0-d tensors (balloon, curvature).
        dt: time step (float).
        eps: curvature regulariser (float).
        propagation: None (`P = g`) or the balloon's image `(N, *S, 1)`.

    Returns:
        `(N, *S, 1)`, the level set after one step.
    """
    d = len(u.shape) - 2
    level, edge = u[..., 0], g[..., 0]
    forward, backward = one_sided_differences(level)
    gradient = [0.5 * (f + b) for f, b in zip(forward, backward)]
    norm = safe_sqrt(sum(ops.square(c) for c in gradient))
    inverse = 1.0 / (norm + ops.convert_to_tensor(eps, dtype=u.dtype))
    kappa = central_divergence([c * inverse for c in gradient])
    if propagation is not None:
        speed = alpha * propagation[..., 0] + beta * edge * kappa
    else:
        speed = edge * (alpha + beta * kappa)
    relu = ops.relu
    # Osher-Sethian upwind |grad u| for u_t - speed |grad u| = 0 (side chosen by the sign of -speed)
    grow = sum(ops.square(relu(b)) + ops.square(relu(-f)) for f, b in zip(forward, backward))
    shrink = sum(ops.square(relu(f)) + ops.square(relu(-b)) for f, b in zip(forward, backward))
    grad_norm = safe_sqrt(ops.where(ops.stop_gradient(speed) <= 0, grow, shrink))
    convection = None
    for k in range(d):
        v = velocity[..., k]
        term = relu(v) * forward[k] - relu(-v) * backward[k]
        convection = term if convection is None else convection + term
    step = level + ops.convert_to_tensor(dt, dtype=u.dtype) * (speed * grad_norm + convection)
    return ops.expand_dims(step, -1)


def keep_static_shape(x, like):
    """`x` with the static shape of `like` (the level set it replaces) in a TensorFlow graph; `x` elsewhere.

    A step broadcasts `u` against the edge indicator; when the two carry
    different partial shapes (`(1, None, None, 1)` and `(None, None, None,
    1)` after `model.predict` relaxed its input shapes), the result would
    lose the known dimensions and a `while_loop` refuses a loop variable
    whose shape changes. JAX and PyTorch shapes are always concrete.
    """
    if keras.backend.backend() != "tensorflow" or None not in tuple(x.shape):
        return x
    import tensorflow as tf

    return tf.ensure_shape(x, tf.TensorShape(x.shape).merge_with(tf.TensorShape(like.shape)))


def _gradient_tape_active():
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - moved in a future TensorFlow: never compile under a tape
        return True
    return bool(record.could_possibly_record())


def compiled_function(function, jit_compile=True):
    """`function` compiled by XLA on TensorFlow when `jit_compile`; `function` itself otherwise.

    On TensorFlow the returned callable runs `tf.function(function,
    jit_compile=True)` (inside a Keras graph: one XLA cluster; Keras does not
    enable XLA on CPU by itself), except while a `GradientTape` records: XLA
    cannot pass a `while_loop`'s gradient accumulators across its boundary,
    so a differentiated call runs `function` as written. JAX already compiles
    `jax.lax` loops and whole models (`jax.jit`); PyTorch runs eagerly. The
    `keras.ops` body is the same on every path, so both give the same numbers
    (tested).
    """
    if not (jit_compile and keras.backend.backend() == "tensorflow"):
        return function
    import tensorflow as tf

    xla = tf.function(function, jit_compile=True, autograph=False, reduce_retracing=True)

    def call(*args):
        return function(*args) if _gradient_tape_active() else xla(*args)

    return call
