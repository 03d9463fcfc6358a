"""`EdgeIndicator`: learnable edge indicator `g = 1 / (1 + sum_j (sigma_j * I)^2)`."""

import keras
from keras import ops

from keras_medseg.initializers import CentralDifference
from keras_medseg.layers._stencil import StencilLayer
from keras_medseg.ops.finite_differences import conv_edge, gaussian_kernel
from keras_medseg.ops.level_set import check_edge_threshold, check_finite, edge_indicator
from keras_medseg.ops.level_set_stopping import AUTO_THRESHOLD_K
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
        scale: edge contrast `s` in `g = 1 / (1 + sum_j (sigma_j * (s I))^2)`:
            a positive float (default 1.0) or `"auto"` (per image, from the
            99.5th percentile of the response magnitude, see
            `keras_medseg.ops.level_set.auto_edge_scale`; independent of the
            intensity range of the image).
        threshold: None (default: output `g` only), a float in (0, 1) or
            `"auto"`: also output the balloon's propagation image
            `P = max(g - t, 0) / (1 - t)`, 0 on edges stronger than the
            threshold, as a second channel (`"auto"`: `t` per image from the
            median and median absolute deviation of the response magnitude,
            see `keras_medseg.ops.edge_indicator`).
        threshold_k: deviations above the median for `threshold="auto"`,
            default 9.0 (`keras_medseg.ops.level_set_stopping.AUTO_THRESHOLD_K`).
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape: `(N, H, W, C)` or `(N, D, H, W, C)`.
    Output shape: `(N, H, W, 1)` or `(N, D, H, W, 1)`, values in (0, 1]
        (2 channels `[g, P]` with a `threshold`).

    Raises:
        ValueError: `num_kernels` < 1 or < d, `smoothing_sigma <= 0`, even
            `kernel_size`, `scale` neither positive nor "auto", `threshold`
            neither in (0, 1) nor "auto", `threshold_k < 0`, input not
            4D/5D or with unknown channels, an image with NaN/Inf values
            (when the values are known, see `keras_medseg.ops.level_set.check_finite`).

    Example:
    >>> layer = keras_medseg.layers.EdgeIndicator(trainable_kernels=False)
    >>> g = layer(np.random.rand(2, 32, 32, 1))  # (2, 32, 32, 1)

    Reference: J. Actor, "Identification of Kernels in a Convolutional Neural Network"
    (edge indicator of the Level Set Network).
    """

    def __init__(self, num_kernels=None, kernel_size=3, smoothing_sigma=None, trainable_kernels=True, scale=1.0,
                 threshold=None, threshold_k=AUTO_THRESHOLD_K, **kwargs):
        super().__init__(kernel_size=kernel_size, trainable_kernels=trainable_kernels, **kwargs)
        self.threshold = check_edge_threshold(threshold)
        self.threshold_k = float(check_positive(threshold_k, "threshold_k", allow_zero=True))
        if not (isinstance(scale, str) and scale == "auto"):
            if isinstance(scale, (str, bool)) or not isinstance(scale, (int, float)):
                raise ValueError(f"`scale` must be a positive number or 'auto'. Received: scale={scale!r}")
            scale = float(check_positive(scale, "scale"))
        self.scale = scale
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
        image = check_finite(image, "image")
        if self._smoothing is not None:
            image = conv_edge(image, self._smoothing)
        kernel = ops.cast(self.kernel, image.dtype)
        if self.extra_kernel is not None:
            kernel = ops.concatenate([kernel, ops.cast(self.extra_kernel, image.dtype)], axis=-1)
        return edge_indicator(image, kernel, scale=self.scale, threshold=self.threshold, threshold_k=self.threshold_k)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1 if self.threshold is None else 2,)

    def get_config(self):
        config = super().get_config()
        config.update({"num_kernels": self.num_kernels, "smoothing_sigma": self.smoothing_sigma,
                       "scale": self.scale, "threshold": self.threshold, "threshold_k": self.threshold_k})
        return config
