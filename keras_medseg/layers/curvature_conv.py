"""`CurvatureConv`: mean curvature `div(grad u / (|grad u| + eps))` with learnable kernels."""

from keras_medseg.initializers import CentralDifference
from keras_medseg.layers._stencil import StencilLayer
from keras_medseg.ops.level_set import curvature
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive


@register
class CurvatureConv(StencilLayer):
    """Curvature of a level set with learnable gradient and divergence kernels.

    `grad^ u = rho * u` (kernel `(*K, 1, d)`, central-difference init),
    `n = grad^ u / (|grad^ u| + eps)`, `kappa = sigma * n` (kernel `(*K, d, 1)`,
    central-difference init, summed over the components: the divergence).
    Frozen, this is the textbook curvature (signed distance to a circle of
    radius r: 1/r, sphere: 2/r). Computed in float32 under mixed precision.
    Boundaries replicate the edge value.

    Args:
        eps: positive regulariser of the normal, default 1e-8.
        kernel_size: odd int >= 3 or tuple, default 3.
        trainable_kernels: learn the kernels (default True) or freeze them.
        **kwargs: base layer arguments.

    Input shape: `(N, H, W, 1)` or `(N, D, H, W, 1)`.
    Output shape: same as the input.

    Raises:
        ValueError: `eps <= 0`, even `kernel_size`, input not 4D/5D or with
            more than one channel.

    Example:
    >>> kappa = keras_medseg.layers.CurvatureConv(trainable_kernels=False)(np.random.rand(1, 32, 32, 1))

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network"
    (curvature term of the Level Set Network).
    """

    def __init__(self, eps=1e-8, kernel_size=3, trainable_kernels=True, **kwargs):
        super().__init__(kernel_size=kernel_size, trainable_kernels=trainable_kernels, **kwargs)
        self.eps = float(check_positive(eps, "eps"))

    def build(self, input_shape):
        d = self._spatial_dims(input_shape, "u")
        if input_shape[-1] != 1:
            raise ValueError(f"`u` must have exactly one channel. Received: u.shape={tuple(input_shape)}")
        self.gradient_kernel = self._stencil_weight("gradient_kernel", d, 1, d, CentralDifference("out"))
        self.divergence_kernel = self._stencil_weight("divergence_kernel", d, d, 1, CentralDifference("in"))

    def call(self, u):
        return curvature(u, self.eps, self.gradient_kernel, self.divergence_kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"eps": self.eps})
        return config
