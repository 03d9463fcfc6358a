"""Multi-head attention pooling: a learned, softmax-over-space weighted average."""

import keras
from keras import ops

from keras_medseg.ops.attention import attention_pool
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive_int, spatial_rank


@register
class AttentionPool(keras.layers.Layer):
    """Multi-head attention pooling over all spatial positions (2D and 3D).

    `f(z)` is a 1x1 convolution (a per-position linear map) from the `C`
    feature channels to `heads` logits; it has no bias because the softmax over
    positions is invariant to a per-head constant (a bias would get a zero
    gradient). Each head's map
    `alpha_h = softmax_over_positions(f(z)_h)` weights the features:
    `pooled_h = sum_positions alpha_h * z`. With a zero kernel every head is a
    global average pool. The softmax and the weighted sum run in float32 (see
    `keras_medseg.ops.attention_pool`), so the layer is safe under `mixed_float16`.

    Args:
        heads: int, default 1. Number of attention maps (>= 1).
        return_attention: bool, default False. Also return the attention maps.
        flatten: bool, default True. Return the pooled features as
            `(N, heads * C)` (ready for a `Dense` head; head-major, i.e. head 0's
            `C` channels first) instead of `(N, heads, C)`.
        kernel_initializer: initialiser of the `(C, heads)` kernel of the 1x1
            convolution `f`, default `"glorot_uniform"` (`"zeros"` starts every
            head as a global average pool).
        kernel_regularizer: optional regulariser of that kernel.
        **kwargs: standard layer arguments (`name`, `dtype`, `trainable`).

    Input shape:
        `(N, H, W, C)` (2D) or `(N, D, H, W, C)` (3D), channels-last.

    Output shape:
        pooled `(N, heads * C)` (or `(N, heads, C)` with `flatten=False`);
        with `return_attention=True` the tuple `(pooled, attention)` where
        `attention` is `(N, H, W, heads)` or `(N, D, H, W, heads)`, each map
        summing to 1 over space.

    Raises:
        ValueError: `heads < 1`; input not 2D/3D channels-last or with an
            unknown channel count.
        TypeError: non-integer `heads`.

    Example:
        >>> import numpy as np
        >>> from keras_medseg.layers import AttentionPool
        >>> layer = AttentionPool(heads=4, return_attention=True)
        >>> z = np.random.rand(2, 16, 16, 8).astype("float32")
        >>> pooled, alpha = layer(z)          # (2, 32), (2, 16, 16, 4)
        >>> z3 = np.random.rand(2, 8, 8, 8, 8).astype("float32")
        >>> AttentionPool(heads=2, flatten=False)(z3).shape   # (2, 2, 8)

    Reference:
        A. Yala, "Advanced Imaging: Localization and Segmentation" (lecture,
        CPH 100A; localisation as attention): `AttnPool(z) = sum alpha z`,
        `alpha = softmax(f(z))`, several heads `[AttnPool(Z), AttnPool(Z), ...]`.
    """

    def __init__(
        self,
        heads=1,
        return_attention=False,
        flatten=True,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.heads = check_positive_int(heads, "heads")
        self.return_attention = bool(return_attention)
        self.flatten = bool(flatten)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def _check_input_shape(self, input_shape):
        input_shape = tuple(input_shape)
        spatial_rank(keras.KerasTensor(input_shape), "inputs")
        if input_shape[-1] is None:
            raise ValueError(
                f"The channel axis of `inputs` must be known. Received: inputs.shape={input_shape}"
            )
        return input_shape

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        channels = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel",
            shape=(channels, self.heads),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )

    def call(self, inputs):
        if inputs.shape[-1] != self.kernel.shape[0]:
            raise ValueError(
                f"`inputs` must have {self.kernel.shape[0]} channels (the layer was built for that). "
                f"Received: inputs.shape={tuple(inputs.shape)}"
            )
        kernel = ops.cast(self.kernel, inputs.dtype)
        # einsum, not matmul: Keras 3.15.1's torch matmul computes float64 operands in float32
        logits = ops.einsum("...c,ch->...h", inputs, kernel)
        pooled, attention = attention_pool(inputs, logits)
        if self.flatten:
            pooled = ops.reshape(pooled, (-1, self.heads * int(inputs.shape[-1])))
        if self.return_attention:
            return pooled, attention
        return pooled

    def compute_output_shape(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        n, channels = input_shape[0], input_shape[-1]
        if self.flatten:
            pooled = (n, self.heads * channels)
        else:
            pooled = (n, self.heads, channels)
        if self.return_attention:
            return pooled, tuple(input_shape[:-1]) + (self.heads,)
        return pooled

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "heads": self.heads,
                "return_attention": self.return_attention,
                "flatten": self.flatten,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
