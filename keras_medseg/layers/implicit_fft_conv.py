"""`ImplicitFFTConv`: a learnable implicit step `(I + h C^T C)^-1` solved by FFT."""

import math

import keras
from keras import ops

from keras_medseg.ops.implicit import implicit_conv_solve
from keras_medseg.ops.implicit_cache import TransferCache
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive, spatial_rank, standardize_kernel_size


def normalize_kernel_size(kernel_size, rank=None, name="kernel_size"):
    """An int or a tuple of odd sizes -> a tuple of `rank` sizes (alias of `standardize_kernel_size`)."""
    return standardize_kernel_size(kernel_size, rank, name=name)


@register
class ImplicitFFTConv(keras.layers.Layer):
    """Implicit (backward-Euler) step of a learnable periodic depthwise convolution.

    Computes `Y = (I + h C^T C)^-1 X` per sample, where `C` is a depthwise
    convolution with periodic boundaries and a learnable kernel, by a division in
    the Fourier domain (`keras_medseg.ops.implicit_conv_solve`). `C^T C` is
    positive semi-definite and `h > 0`, so the solve is always well posed; one
    layer couples every pixel with every other one (its receptive field is the
    whole image). `h` is learnable (`h = exp(log_h)` keeps it positive) unless
    `trainable_h=False`.

    Args:
        kernel_size: int or tuple of odd ints, default 3. Size of the kernel
            of `C` along each spatial axis.
        h: float, default 1.0. Initial step size (> 0).
        trainable_h: bool, default True. Whether `h` is learned.
        kernel_initializer: initializer of the depthwise kernel of `C`
            (shape `(*kernel_size, channels)`), default `"glorot_uniform"`.
        cache_transfer: bool, default True. At inference (`training=False`,
            eager calls with no gradient being recorded, e.g. `predict` on
            torch or `layer(x, training=False)`), reuse the kernel's transfer
            function until the kernel or `h` change (`TransferCache`);
            compiled calls (`predict` on TensorFlow/JAX) form it each call.
        **kwargs: base layer arguments.

    Input shape:
        `(N, H, W, C)` (2D) or `(N, D, H, W, C)` (3D), spatial sizes known and
        at least `kernel_size`.

    Output shape:
        Same as the input.

    Raises:
        ValueError: `h <= 0`, even `kernel_size`, input not 2D/3D, or a
            kernel larger than the image.

    Example:

    >>> import numpy as np
    >>> layer = keras_medseg.layers.ImplicitFFTConv(kernel_size=3, h=0.5)
    >>> y = layer(np.random.rand(2, 32, 32, 8).astype("float32"))
    >>> tuple(y.shape)
    (2, 32, 32, 8)

    Reference:
        Haber, Lensink, Treister, Ruthotto, "IMEXnet: A forward stable deep
        neural network", ICML 2019.
    """

    def __init__(self, kernel_size=3, h=1.0, trainable_h=True, kernel_initializer="glorot_uniform",
                 cache_transfer=True, **kwargs):
        normalize_kernel_size(kernel_size)
        check_positive(h, "h")
        super().__init__(**kwargs)
        self.kernel_size = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else kernel_size
        self.h = float(h)
        self.trainable_h = bool(trainable_h)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.cache_transfer = bool(cache_transfer)
        self.transfer_cache = TransferCache()

    def build(self, input_shape):
        rank = len(input_shape) - 2
        if rank not in (2, 3):
            raise ValueError(
                f"`ImplicitFFTConv` expects a 2D (N, H, W, C) or 3D (N, D, H, W, C) channels-last input. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        sizes = normalize_kernel_size(self.kernel_size, rank)
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"The channel axis of the input must be known. Received: input_shape={input_shape}")
        self.kernel = self.add_weight(
            name="kernel", shape=(*sizes, channels), initializer=self.kernel_initializer
        )
        self.log_h = self.add_weight(
            name="log_h",
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.h)),
            trainable=self.trainable_h,
        )

    @property
    def step_size(self):
        """The current (positive) step size `h = exp(log_h)`."""
        return ops.exp(self.log_h)

    def call(self, inputs, training=None):
        spatial_rank(inputs, "inputs")
        kernel = ops.convert_to_tensor(self.kernel)
        h = ops.exp(self.log_h)
        inverse = None
        if self.cache_transfer and not training:
            inverse = self.transfer_cache.inverse_symbol(kernel, h, tuple(inputs.shape[1:-1]), inputs.dtype)
        # The op casts to float32 (float64 for float64 input) for the FFT.
        return implicit_conv_solve(inputs, kernel, h, inverse_symbol=inverse)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "h": self.h,
                "trainable_h": self.trainable_h,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "cache_transfer": self.cache_transfer,
            }
        )
        return config
