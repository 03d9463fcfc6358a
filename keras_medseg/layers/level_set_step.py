"""`LevelSetStep`: one forward-Euler step of the level-set equation (LSE / LSN)."""

import math
import numbers

from keras import ops

from keras_medseg.initializers import CentralDifference
from keras_medseg.layers._stencil import StencilLayer
from keras_medseg.layers.curvature_conv import CurvatureConv
from keras_medseg.layers.upwind_conv import UpwindConv
from keras_medseg.ops.finite_differences import conv_edge
from keras_medseg.ops.level_set import (
    _working_dtype,
    advection_from_differences,
    curvature_from_gradient,
    grad_norm_from_differences,
)
from keras_medseg.ops.level_set_stencils import central_gradient, keep_static_shape, stencil_step
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive


def split_propagation(g):
    """`g` `(N, *S, 1)` as it is; `(N, *S, 2)` as the pair `(g[..., :1], g[..., 1:])` of dense arrays.

    `LevelSetStep.advance` takes either form; the pair keeps the per-step
    reads contiguous (see `LevelSetEvolution`).
    """
    if g.shape[-1] == 2:
        return g[..., :1], g[..., 1:]
    return g


@register
class LevelSetStep(StencilLayer):
    """One explicit step `u + dt * (alpha g |grad u| + beta g kappa |grad u| + gamma grad g . grad u)`.

    The level-set equation of J. Actor's Level Set Network,
    `u_t = alpha g |grad u| + beta g kappa(u) |grad u| + gamma grad g . grad u`,
    advanced by forward Euler with upwind differences:

    * normal motion: speed `F = alpha P + beta g kappa` (balloon + curvature),
      with `P = g` (the lecture's equation) or a separate propagation image
      `P` passed as a second channel of `g` (e.g. `EdgeIndicator(threshold=
      "auto")`: a balloon that stops at strong edges),
      `|grad u|` is the Osher-Sethian upwind norm for `u_t - F |grad u| = 0`,
      i.e. `UpwindConv("grad_norm")` called with speed `-F`;
    * convection: `UpwindConv("advection")` with velocity `V = gamma grad g`
      (`grad g` by a central-difference kernel), which upwinds
      `gamma grad g . grad u` correctly for either sign of `gamma`;
    * `kappa` by `CurvatureConv`.

    Sign conventions (u < 0 inside the object): `alpha > 0` shrinks the
    object, `alpha < 0` inflates it (balloon); `beta > 0` is mean-curvature
    smoothing; `gamma > 0` pulls the front towards edges (minima of `g`).
    With `trainable_kernels=False` (and frozen coefficients) this is the
    textbook scheme (LSE); trained, the Level Set Network (LSN). One layer is
    meant to be called once per time step (shared weights).

    Args:
        alpha: balloon coefficient (initial value), default -1.0.
        beta: curvature coefficient, default 0.2.
        gamma: convection coefficient, default 1.0.
        dt: time step (fixed), default 0.1.
        eps: curvature regulariser, default 1e-8.
        kernel_size: odd int >= 3 or tuple, default 3.
        trainable_kernels: learn the finite-difference kernels (default True).
        trainable_coefficients: learn alpha, beta, gamma (default True).
        **kwargs: base layer arguments.

    Input shape: `[u (N, *S, 1), g (N, *S, 1 or 2)]`, `S = (H, W)` or `(D, H, W)`;
        `g` is the edge indicator (`keras_medseg.layers.EdgeIndicator`),
        optionally with the propagation image `P` as a second channel.
    Output shape: `(N, *S, 1)`, the level set after one step.

    Raises:
        ValueError: `dt <= 0`, `eps <= 0`, non-finite coefficients, even
            `kernel_size`, not two inputs, wrong rank or channel counts.

    Example:
    >>> step = keras_medseg.layers.LevelSetStep(alpha=-1.0, trainable_kernels=False)
    >>> u1 = step([u0, g])  # u0, g: (N, 64, 64, 1)

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network"
    (LSE -> LSN: forward Euler = residual
    connection, upwind differences = convolutions + ReLU).
    """

    def __init__(self, alpha=-1.0, beta=0.2, gamma=1.0, dt=0.1, eps=1e-8, kernel_size=3, trainable_kernels=True,
                 trainable_coefficients=True, **kwargs):
        super().__init__(kernel_size=kernel_size, trainable_kernels=trainable_kernels, **kwargs)
        for arg, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"`{arg}` must be a finite real number. Received: {arg}={value!r}")
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.dt = float(check_positive(dt, "dt"))
        self.eps = float(check_positive(eps, "eps"))
        if not isinstance(trainable_coefficients, bool):
            raise TypeError(
                f"`trainable_coefficients` must be a bool. Received: trainable_coefficients={trainable_coefficients!r}"
            )
        self.trainable_coefficients = trainable_coefficients
        common = {"kernel_size": kernel_size, "trainable_kernels": trainable_kernels, "dtype": self.dtype_policy}
        self.curvature = CurvatureConv(eps=eps, name="curvature", **common)
        self.grad_norm = UpwindConv("grad_norm", name="grad_norm", **common)
        self.advection = UpwindConv("advection", name="advection", **common)

    def build(self, input_shape):
        u_shape, _, d = self._level_set_pair(input_shape, "g", second_what=" (edge indicator)", channels=(1, 2))
        self.curvature.build(u_shape)
        self.grad_norm.build([u_shape, u_shape])
        self.advection.build([u_shape, u_shape[:-1] + (d,)])
        self.edge_gradient_kernel = self._stencil_weight("edge_gradient_kernel", d, 1, d, CentralDifference())
        self.alpha_weight = self._coefficient("alpha", self.alpha)
        self.beta_weight = self._coefficient("beta", self.beta)
        self.gamma_weight = self._coefficient("gamma", self.gamma)

    def _coefficient(self, name, value):
        # exact in float64 (keras.initializers.Constant rounds through float32)
        return self.add_weight(name=name, shape=(), trainable=self.trainable_coefficients,
                               initializer=lambda shape, dtype=None: ops.full(shape, value, dtype=dtype))

    def call(self, inputs):
        u, g = inputs
        return self.advance(u, g, self.velocity(g))

    def velocity(self, g):
        """Convection velocity `gamma grad g` `(N, *S, d)`: constant over the time steps, computed once.

        Only the edge indicator (channel 0 of `g`) moves the front by convection. With frozen kernels the
        same numbers come from slices (`central_gradient`, bit for bit the convolution, tested): the
        convolution cost about 70 ms of CPU per batch of 16 images of 256 x 256 (TensorFlow and JAX, 2 cores).
        """
        work = _working_dtype(g)
        g = ops.cast(g[..., :1], work)
        gradient = conv_edge(g, self.edge_gradient_kernel) if self.trainable_kernels else central_gradient(g)
        return ops.cast(self.gamma_weight, work) * gradient

    def fused_kernel(self, dtype):
        """The five kernels applied to `u` (upwind D+/D- twice, curvature gradient) as one `(*K, 1, 5d)` kernel."""
        kernels = [self.grad_norm.forward_kernel, self.grad_norm.backward_kernel, self.advection.forward_kernel,
                   self.advection.backward_kernel, self.curvature.gradient_kernel]
        return ops.concatenate([ops.cast(k, dtype) for k in kernels], axis=-1)

    def advance(self, u, g, velocity, kernel=None):
        """One step from `u` given `g` and the precomputed `velocity` (see `velocity`); `kernel`: `fused_kernel`.

        `g`: `(N, *S, 1)`, `(N, *S, 2)` or the pair from `split_propagation`.

        Learned kernels: all five convolutions of `u` run as one convolution
        with `5d` output channels (the same numbers as the five separate
        layers). Frozen kernels (`trainable_kernels=False`, the textbook
        scheme): the stencils are applied as differences of shifted slices
        (`keras_medseg.ops.level_set_stencils.stencil_step`), several times
        faster, same numbers; the frozen kernel weights are kept for saving
        and loading but not read.
        """
        out_dtype = u.dtype
        work = _working_dtype(u)
        u = ops.cast(u, work)
        g, propagation = g if isinstance(g, (tuple, list)) else split_propagation(g) if g.shape[-1] == 2 else (g, None)
        g = ops.cast(g, work)
        propagation = None if propagation is None else ops.cast(propagation, work)
        velocity = ops.cast(velocity, work)
        if not self.trainable_kernels:
            # frozen kernels ARE the stencils: differences of slices of one padded tensor (same numbers)
            step = stencil_step(u, g, velocity, ops.cast(self.alpha_weight, work),
                                ops.cast(self.beta_weight, work), self.dt, self.eps, propagation)
            return keep_static_shape(ops.cast(step, out_dtype), u)
        kernel = self.fused_kernel(work) if kernel is None else kernel
        d = len(u.shape) - 2
        diffs = conv_edge(u, kernel)
        gn_plus, gn_minus = diffs[..., :d], diffs[..., d:2 * d]
        ad_plus, ad_minus = diffs[..., 2 * d:3 * d], diffs[..., 3 * d:4 * d]
        kappa = curvature_from_gradient(diffs[..., 4 * d:], ops.cast(self.curvature.divergence_kernel, work),
                                        self.eps)
        alpha = ops.cast(self.alpha_weight, work)
        beta = ops.cast(self.beta_weight, work)
        if propagation is not None:
            speed = alpha * propagation + beta * g * kappa
        else:
            speed = g * (alpha + beta * kappa)
        normal_motion = speed * grad_norm_from_differences(gn_plus, gn_minus, -speed)
        convection = advection_from_differences(ad_plus, ad_minus, velocity)
        step = u + ops.convert_to_tensor(self.dt, dtype=work) * (normal_motion + convection)
        return keep_static_shape(ops.cast(step, out_dtype), u)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update({
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "dt": self.dt,
            "eps": self.eps,
            "trainable_coefficients": self.trainable_coefficients,
        })
        return config
