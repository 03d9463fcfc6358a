"""`UpwindConv`: upwind advection or Osher-Sethian |grad u| with learnable one-sided kernels."""

from keras_medseg.initializers import BackwardDifference, ForwardDifference
from keras_medseg.layers._stencil import StencilLayer
from keras_medseg.ops.level_set import upwind_advection, upwind_grad_norm
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_choice


@register
class UpwindConv(StencilLayer):
    """Upwind finite differences as convolutions + ReLU.

    `mode="advection"`: inputs `[u, velocity]`, output
    `sum_k ReLU(V_k) (D_k^+ * u) - ReLU(-V_k) (D_k^- * u)` (for `V = grad g` the
    convection term `grad g . grad u`). `mode="grad_norm"`: inputs `[u, speed]`,
    output the Osher-Sethian upwind `|grad u|` for `u_t + speed |grad u| = 0`
    (the side is chosen per voxel by the sign of `speed`, see
    `keras_medseg.ops.upwind_grad_norm`). `D_k^+` / `D_k^-` are learnable kernels
    `(*K, 1, d)` initialised to the forward / backward differences; frozen they
    give the textbook scheme. Boundaries replicate the edge value.

    Args:
        mode: `"advection"` (default) or `"grad_norm"`.
        kernel_size: odd int >= 3 or tuple, default 3.
        trainable_kernels: learn the kernels (default True) or freeze them.
        **kwargs: base layer arguments.

    Input shape: `[u (N, *S, 1), velocity (N, *S, d)]` or `[u, speed (N, *S, 1)]`
        with `S = (H, W)` or `(D, H, W)`.
    Output shape: `(N, *S, 1)`.

    Raises:
        ValueError: unknown `mode`, even `kernel_size`, not two inputs, wrong
            rank, `u` with more than one channel, `velocity` channels != d,
            `speed` channels != 1.

    Example:
    >>> layer = keras_medseg.layers.UpwindConv("advection")
    >>> out = layer([np.random.rand(2, 16, 16, 1), np.random.rand(2, 16, 16, 2)])

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network"
    (upwind scheme = ReLU); Osher & Sethian (1988).
    """

    def __init__(self, mode="advection", kernel_size=3, trainable_kernels=True, **kwargs):
        super().__init__(kernel_size=kernel_size, trainable_kernels=trainable_kernels, **kwargs)
        self.mode = check_choice(mode, "mode", ("advection", "grad_norm"))

    @property
    def _second(self):
        return "velocity" if self.mode == "advection" else "speed"

    def build(self, input_shape):
        _, _, d = self._level_set_pair(input_shape, self._second, one_per_axis=self.mode == "advection")
        self.forward_kernel = self._stencil_weight("forward_kernel", d, 1, d, ForwardDifference())
        self.backward_kernel = self._stencil_weight("backward_kernel", d, 1, d, BackwardDifference())

    def call(self, inputs):
        u, other = inputs
        if self.mode == "advection":
            return upwind_advection(u, other, self.forward_kernel, self.backward_kernel)
        return upwind_grad_norm(u, other, self.forward_kernel, self.backward_kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
