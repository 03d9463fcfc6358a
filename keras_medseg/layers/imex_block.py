"""`IMEXBlock`: one implicit-explicit (IMEX) step, the building block of IMEXnet."""

import math

import keras
import numpy as np
from keras import ops

from keras_medseg.layers.factories import normalization as norm_layer
from keras_medseg.ops.implicit import implicit_conv_solve
from keras_medseg.ops.implicit_cache import TransferCache
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive, check_positive_int, spatial_rank, standardize_kernel_size

NORMALIZATIONS = ("batch", "instance", "layer", None)


@register
class MultiscaleLaplacian(keras.initializers.Initializer):
    """Initializer of an `L` kernel: scaled Laplacian stencils, one diffusion length per channel.

    Channel `c` gets `C_c = s_c * Laplacian` (the 5-point / 7-point stencil in a
    3 x 3 / 3 x 3 x 3 kernel), so the implicit solve `(I + h C^T C)^-1` damps the
    Fourier mode of wave number `k` by about `1 / (1 + h s_c^2 |k|^4)` and passes
    the image mean untouched. `s_c = length_c^2 / sqrt(h)` puts the half-damping
    at `|k| = 1 / length_c`; the lengths run log-uniformly from `min_length` to
    `max_length` pixels over the channels, so from the first step on some
    channels stay local and some average over the whole image (on Q-tips, where
    the class of a rod is told by both of its ends, this is what lets the
    IMEXnet learn the class in a few epochs instead of growing `L` slowly from a
    small random kernel).

    Args:
        max_length: float, longest diffusion length in pixels (e.g. the image
            size of the block's input).
        h: float, default 1.0. The block's step size.
        min_length: float, default 1.0. Shortest diffusion length (pixels).

    Shape: `(3,) * rank + (channels,)`; other shapes raise `ValueError`.

    Example:

    >>> init = keras_medseg.layers.MultiscaleLaplacian(max_length=64)
    >>> tuple(init((3, 3, 16)).shape)
    (3, 3, 16)

    Reference: Haber, Lensink, Treister, Ruthotto, "IMEXnet: A forward stable
    deep neural network", ICML 2019 (the implicit operator `L = C^T C`).
    """

    def __init__(self, max_length, h=1.0, min_length=1.0):
        check_positive(max_length, "max_length")
        check_positive(h, "h")
        check_positive(min_length, "min_length")
        self.max_length = float(max_length)
        self.h = float(h)
        self.min_length = float(min_length)

    def __call__(self, shape, dtype=None):
        shape = tuple(shape)
        rank = len(shape) - 1
        if rank not in (2, 3) or any(k != 3 for k in shape[:-1]):
            raise ValueError(f"`MultiscaleLaplacian` needs a 3x3 or 3x3x3 depthwise kernel shape "
                             f"(3, 3[, 3], channels). Received: shape={shape}")
        stencil = np.zeros((3,) * rank)
        centre = (1,) * rank
        stencil[centre] = -2.0 * rank
        for axis in range(rank):
            for off in (0, 2):
                idx = list(centre)
                idx[axis] = off
                stencil[tuple(idx)] = 1.0
        lengths = np.geomspace(self.min_length, max(self.max_length, self.min_length), shape[-1])
        scales = lengths**2 / math.sqrt(self.h)
        return ops.convert_to_tensor(stencil[..., None] * scales, dtype=dtype or "float32")

    def get_config(self):
        return {"max_length": self.max_length, "h": self.h, "min_length": self.min_length}


@register
class IMEXBlock(keras.layers.Layer):
    """One IMEX step: explicit ResNet residual, implicit periodic diffusion-like operator.

    With `L = C^T C` (`C` a learnable periodic depthwise convolution) and
    `f(Y) = K_2 sigma(N(K_1 Y))` the ResNet residual, the IMEX step

        (I + hL) Y+ = (I + hL) Y + h f(Y)

    is, after multiplying by `(I + hL)^-1`,

        Y+ = Y + h (I + hL)^-1 f(Y),

    which costs one FFT solve (`keras_medseg.ops.implicit_conv_solve`) on top of
    the residual. The solve couples every pixel of the image in every block
    (a global receptive field). With `implicit=False` the block is the plain
    explicit ResNet step `Y+ = Y + h f(Y)` (forward Euler, `L = 0`) with exactly
    the same parameters except the `L` kernel, so the two are directly
    comparable. `h` is a fixed step size (the scale of `f` and of `L` are
    learned through `K_2` and the `L` kernel).

    `K_1`, `K_2` are full `kernel_size` convolutions `filters -> filters` with
    zero ("same") padding; `K_1` has a bias only when there is no
    normalization; `K_2` has none.

    Args:
        filters: int, number of channels; must equal the input channels (the
            step preserves the width).
        kernel_size: int or tuple of odd ints, default 3. Size of `K_1`, `K_2`
            and of the `L` kernel.
        implicit: bool, default True. IMEX step (True) or explicit ResNet step.
        h: float, default 1.0. Step size (> 0).
        normalization: one of `"batch"` (default), `"instance"`, `"layer"` or
            None: `N` in the residual.
        activation: activation `sigma`, default `"relu"`.
        kernel_initializer: initializer of `K_1` and `K_2`, default `"he_normal"`.
        implicit_initializer: initializer of the `L` kernel, default
            `"glorot_uniform"`.
        cache_transfer: bool, default True. At inference (`training=False`,
            eager calls with no gradient being recorded), reuse the `L`
            kernel's transfer function until the kernel changes
            (`keras_medseg.ops.implicit_cache.TransferCache`); compiled calls
            form it each call.
        **kwargs: base layer arguments.

    Input shape:
        `(N, H, W, filters)` (2D) or `(N, D, H, W, filters)` (3D); the implicit
        step needs known spatial sizes, at least `kernel_size`.

    Output shape:
        Same as the input.

    Raises:
        ValueError: `filters < 1`, `h <= 0`, even `kernel_size`, unknown
            `normalization`, input not 2D/3D, or input channels != `filters`.

    Example:

    >>> import numpy as np
    >>> block = keras_medseg.layers.IMEXBlock(filters=8, h=0.5)
    >>> y = block(np.random.rand(2, 32, 32, 8).astype("float32"))
    >>> tuple(y.shape)
    (2, 32, 32, 8)

    Reference:
        Haber, Lensink, Treister, Ruthotto, "IMEXnet: A forward stable deep
        neural network", ICML 2019.
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        implicit=True,
        h=1.0,
        normalization="batch",
        activation="relu",
        kernel_initializer="he_normal",
        implicit_initializer="glorot_uniform",
        cache_transfer=True,
        **kwargs,
    ):
        check_positive_int(filters, "filters")
        standardize_kernel_size(kernel_size)
        check_positive(h, "h")
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {list(NORMALIZATIONS)}. Received: normalization={normalization!r}"
            )
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = tuple(kernel_size) if isinstance(kernel_size, (tuple, list)) else kernel_size
        self.implicit = bool(implicit)
        self.h = float(h)
        self.normalization = normalization
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.implicit_initializer = keras.initializers.get(implicit_initializer)
        self.cache_transfer = bool(cache_transfer)
        self.transfer_cache = TransferCache()
        self.norm = None if normalization is None else norm_layer(normalization, "norm", dtype=self.dtype_policy)

    def build(self, input_shape):
        rank = len(input_shape) - 2
        if rank not in (2, 3):
            raise ValueError(
                f"`IMEXBlock` expects a 2D (N, H, W, C) or 3D (N, D, H, W, C) channels-last input. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if input_shape[-1] != self.filters:
            raise ValueError(
                f"`IMEXBlock` preserves the width: `filters` must equal the input channels "
                f"({input_shape[-1]}). Received: filters={self.filters}"
            )
        sizes = standardize_kernel_size(self.kernel_size, rank)
        shape = (*sizes, self.filters, self.filters)
        self.kernel_1 = self.add_weight(name="kernel_1", shape=shape, initializer=self.kernel_initializer)
        self.bias_1 = None
        if self.norm is None:
            self.bias_1 = self.add_weight(name="bias_1", shape=(self.filters,), initializer="zeros")
        else:
            self.norm.build(tuple(input_shape))
        self.kernel_2 = self.add_weight(name="kernel_2", shape=shape, initializer=self.kernel_initializer)
        self.implicit_kernel = None
        if self.implicit:
            self.implicit_kernel = self.add_weight(
                name="implicit_kernel", shape=(*sizes, self.filters), initializer=self.implicit_initializer
            )

    def residual(self, inputs, training=None):
        """The explicit term `f(Y) = K_2 sigma(N(K_1 Y))`."""
        z = ops.conv(inputs, ops.cast(self.kernel_1, inputs.dtype), padding="same")
        if self.bias_1 is not None:
            z = z + ops.cast(self.bias_1, inputs.dtype)
        if self.norm is not None:
            z = self.norm(z, training=training)
        z = self.activation(z)
        return ops.conv(z, ops.cast(self.kernel_2, z.dtype), padding="same")

    def call(self, inputs, training=None):
        spatial_rank(inputs, "inputs")
        f = self.residual(inputs, training=training)
        if self.implicit:
            kernel = ops.convert_to_tensor(self.implicit_kernel)
            inverse = None
            if self.cache_transfer and not training:
                inverse = self.transfer_cache.inverse_symbol(kernel, self.h, tuple(f.shape[1:-1]), f.dtype)
            f = implicit_conv_solve(f, kernel, self.h, inverse_symbol=inverse)
        return inputs + self.h * f

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "implicit": self.implicit,
                "h": self.h,
                "normalization": self.normalization,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "implicit_initializer": keras.initializers.serialize(self.implicit_initializer),
                "cache_transfer": self.cache_transfer,
            }
        )
        return config
