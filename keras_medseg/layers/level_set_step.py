"""`LevelSetStep`: one forward-Euler step of the level-set equation (LSE / LSN)."""

import math
import numbers

from keras import ops

from keras_medseg.initializers import CentralDifference
from keras_medseg.layers._stencil import StencilLayer
from keras_medseg.layers.curvature_conv import CurvatureConv
from keras_medseg.layers.upwind_conv import UpwindConv
from keras_medseg.ops.finite_differences import conv_edge
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive


@register
class LevelSetStep(StencilLayer):
    """One explicit step `u + dt * (alpha g |grad u| + beta g kappa |grad u| + gamma grad g . grad u)`.

    The level-set equation of J. Actor's Level Set Network,
    `u_t = alpha g |grad u| + beta g kappa(u) |grad u| + gamma grad g . grad u`,
    advanced by forward Euler with upwind differences:

    * normal motion: speed `F = g (alpha + beta kappa)` (balloon + curvature),
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

    Input shape: `[u (N, *S, 1), g (N, *S, 1)]`, `S = (H, W)` or `(D, H, W)`;
        `g` is the edge indicator (`keras_medseg.layers.EdgeIndicator`).
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
        u_shape, _, d = self._level_set_pair(input_shape, "g", second_what=" (edge indicator)")
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
        alpha = ops.cast(self.alpha_weight, u.dtype)
        beta = ops.cast(self.beta_weight, u.dtype)
        gamma = ops.cast(self.gamma_weight, u.dtype)
        kappa = self.curvature(u)
        speed = g * (alpha + beta * kappa)
        normal_motion = speed * self.grad_norm([u, -speed])
        velocity = gamma * conv_edge(g, self.edge_gradient_kernel)
        convection = self.advection([u, velocity])
        return u + ops.convert_to_tensor(self.dt, dtype=u.dtype) * (normal_motion + convection)

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
