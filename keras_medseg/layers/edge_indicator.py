"""`EdgeIndicator`: learnable edge indicator `g = 1 / (1 + sum_j (sigma_j * I)^2)`."""

import keras
from keras import ops

from keras_medseg.initializers import CentralDifference
from keras_medseg.layers._stencil import StencilLayer
from keras_medseg.ops.finite_differences import conv_edge, gaussian_kernel
from keras_medseg.ops.level_set import edge_indicator
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive, check_positive_int


@register
class EdgeIndicator(StencilLayer):
    """Edge indicator `g_I = 1 / (1 + sum_j (sigma_j * I)^2)` with learnable kernels.

    The first `d` kernels start as central differences along the spatial axes,
    so the untrained (or frozen) layer computes `1 / (1 + |grad I|^2)`.
    Kernels beyond `d` (`num_kernels > d`) start as small random kernels
    (normal, stddev 1e-2) so that they can learn; they perturb `g` only
    slightly at initialisation. A multi-channel image is summed over its
    channels inside each convolution. Boundaries replicate the edge value.

    Args:
        num_kernels: number of kernels `J` (int >= d) or None (default) for `d`.
        kernel_size: odd int >= 3 or tuple, default 3.
        smoothing_sigma: optional Gaussian pre-smoothing (fixed, per channel,
            size `2*ceil(3 sigma)+1`), default None (no smoothing).
        trainable_kernels: learn the kernels (default True) or freeze them at
            the stencils (the textbook edge indicator).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape: `(N, H, W, C)` or `(N, D, H, W, C)`.
    Output shape: `(N, H, W, 1)` or `(N, D, H, W, 1)`, values in (0, 1].

    Raises:
        ValueError: `num_kernels` < 1 or < d, `smoothing_sigma <= 0`, even
            `kernel_size`, input not 4D/5D or with unknown channels.

    Example:
    >>> layer = keras_medseg.layers.EdgeIndicator(trainable_kernels=False)
    >>> g = layer(np.random.rand(2, 32, 32, 1))  # (2, 32, 32, 1)

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network"
    (edge indicator of the Level Set Network).
    """

    def __init__(self, num_kernels=None, kernel_size=3, smoothing_sigma=None, trainable_kernels=True, **kwargs):
        super().__init__(kernel_size=kernel_size, trainable_kernels=trainable_kernels, **kwargs)
        self.num_kernels = None if num_kernels is None else check_positive_int(num_kernels, "num_kernels")
        self.smoothing_sigma = None if smoothing_sigma is None else float(check_positive(smoothing_sigma,
                                                                                      "smoothing_sigma"))

    def build(self, input_shape):
        d = self._spatial_dims(input_shape, "image")
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"EdgeIndicator needs a known number of image channels. Received: shape={input_shape}")
        num = d if self.num_kernels is None else self.num_kernels
        if num < d:
            raise ValueError(
                f"`num_kernels` must be at least the number of spatial axes ({d}) so that the layer can start as "
                f"|grad I|. Received: num_kernels={self.num_kernels}"
            )
        self.kernel = self._stencil_weight("kernel", d, channels, d, CentralDifference())
        self.extra_kernel = None
        if num > d:
            self.extra_kernel = self.add_weight(
                name="extra_kernel",
                shape=tuple(self.kernel.shape[:-1]) + (num - d,),
                initializer=keras.initializers.RandomNormal(stddev=1e-2),
                trainable=self.trainable_kernels,
            )
        self._smoothing = None
        if self.smoothing_sigma is not None:
            self._smoothing = gaussian_kernel(self.smoothing_sigma, d, channels)

    def call(self, image):
        if self._smoothing is not None:
            image = conv_edge(image, self._smoothing)
        kernel = ops.cast(self.kernel, image.dtype)
        if self.extra_kernel is not None:
            kernel = ops.concatenate([kernel, ops.cast(self.extra_kernel, image.dtype)], axis=-1)
        return edge_indicator(image, kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

    def get_config(self):
        config = super().get_config()
        config.update({"num_kernels": self.num_kernels, "smoothing_sigma": self.smoothing_sigma})
        return config
