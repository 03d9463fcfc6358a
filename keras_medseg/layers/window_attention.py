"""`WindowAttention`: multi-head self-attention over a 2D/3D grid, global (ViT) or in shifted windows (Swin)."""

import math
import numbers

import keras

from keras_medseg.ops.windows import window_attention
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive_int


def _window(window_size):
    if window_size is None:
        return None
    if isinstance(window_size, numbers.Integral) and not isinstance(window_size, bool):
        window_size = (int(window_size),)
    if not isinstance(window_size, (tuple, list)) or not window_size or any(
            isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1 for w in window_size):
        raise ValueError(f"`window_size` must be None, a positive int or a tuple of positive ints. "
                         f"Received: window_size={window_size!r}")
    return tuple(int(w) for w in window_size)


@register
class WindowAttention(keras.layers.Layer):
    """Multi-head self-attention on a channels-last grid, in (shifted) windows or over all tokens.

    With `window_size=None` every token attends to every other token of its
    image (the ViT encoder of UNETR, tokens kept on their grid). With a window
    the grid is cut into windows of `window_size` tokens that attend within
    themselves, with a learned relative position bias; `shift=True` rolls the
    grid by half a window first and masks pairs that were not neighbours (the
    Swin Transformer's shifted windows). Axes not longer than the window form
    one window and are not shifted. See `keras_medseg.ops.windows.window_attention`.

    Weights: `qkv_kernel (C, 3C)`, `qkv_bias (3C,)` (if `qkv_bias`),
    `proj_kernel (C, C)`, `proj_bias (C,)` and, for windows,
    `relative_position_bias_table (prod(2 * window_size - 1), num_heads)`: the
    parameter count of MONAI's `SABlock` / Swin `WindowAttention`.

    Args:
        num_heads: attention heads; the channels must be divisible by it.
        window_size: None (global, default), an int or one int per spatial axis.
        shift: shift the windows by `window_size // 2` (default False).
        qkv_bias: add a bias to the query/key/value projection (default True).
        relative_position_bias: learn a relative position bias per head
            (default None: True for windows, False for global attention).
        kernel_initializer: of both projections (default "glorot_uniform").
        **kwargs: base layer arguments.

    Input shape: `(N, H, W, C)` or `(N, D, H, W, C)` (static sizes for windows).
    Output shape: the same.

    Raises:
        ValueError: bad `num_heads`/`window_size`, `C` not divisible by
            `num_heads`, a window with the wrong number of axes, a bias
            without a window, or unknown sizes with a window.

    Example:

    >>> layer = keras_medseg.layers.WindowAttention(num_heads=2, window_size=4, shift=True)
    >>> y = layer(np.random.rand(1, 8, 8, 8, 6).astype("float32"))

    Reference: Liu et al., "Swin Transformer: Hierarchical Vision Transformer
    using Shifted Windows", ICCV 2021; Dosovitskiy et al., "An Image is Worth
    16x16 Words", ICLR 2021; outputs checked against MONAI's blocks with the
    same weights in `tests/layers/test_window_attention.py`.
    """

    def __init__(self, num_heads, window_size=None, shift=False, qkv_bias=True, relative_position_bias=None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.window_size = _window(window_size)
        self.shift = bool(shift)
        self.qkv_bias = bool(qkv_bias)
        if relative_position_bias is None:
            relative_position_bias = self.window_size is not None
        if relative_position_bias and self.window_size is None:
            raise ValueError("`relative_position_bias=True` needs a `window_size`. "
                             f"Received: window_size=None, relative_position_bias={relative_position_bias!r}")
        if self.shift and self.window_size is None:
            raise ValueError("`shift=True` needs a `window_size`. Received: window_size=None, shift=True")
        self.relative_position_bias = bool(relative_position_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _table_window(self, d):
        window = self.window_size
        if len(window) == 1:
            return window * d
        if len(window) != d:
            raise ValueError(f"`window_size` must have one entry per spatial axis ({d}). "
                             f"Received: window_size={window}")
        return window

    def build(self, input_shape):
        d = len(input_shape) - 2
        if d not in (2, 3):
            raise ValueError(f"WindowAttention expects (N, H, W, C) or (N, D, H, W, C). "
                             f"Received: input_shape={tuple(input_shape)}")
        channels = input_shape[-1]
        if channels is None or channels % self.num_heads:
            raise ValueError(f"The input channels ({channels}) must be divisible by num_heads. "
                             f"Received: num_heads={self.num_heads}")
        if self.window_size is not None:
            self._table_window(d)
            if any(s is None for s in input_shape[1:-1]):
                raise ValueError(f"Windowed attention needs static spatial sizes. "
                                 f"Received: input_shape={tuple(input_shape)}")
        self.qkv_kernel = self.add_weight(name="qkv_kernel", shape=(channels, 3 * channels),
                                          initializer=self.kernel_initializer)
        self.qkv_bias_weight = (self.add_weight(name="qkv_bias", shape=(3 * channels,), initializer="zeros")
                                if self.qkv_bias else None)
        self.proj_kernel = self.add_weight(name="proj_kernel", shape=(channels, channels),
                                           initializer=self.kernel_initializer)
        self.proj_bias = self.add_weight(name="proj_bias", shape=(channels,), initializer="zeros")
        self.bias_table = None
        if self.relative_position_bias:
            rows = math.prod(2 * w - 1 for w in self._table_window(d))
            self.bias_table = self.add_weight(name="relative_position_bias_table", shape=(rows, self.num_heads),
                                              initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def call(self, x):
        d = len(x.shape) - 2
        window = shift = table = None
        if self.window_size is not None:
            window = self._table_window(d)
            shift = tuple(w // 2 for w in window) if self.shift else None
            table = window
        return window_attention(x, self.qkv_kernel, self.proj_kernel, self.num_heads, qkv_bias=self.qkv_bias_weight,
                                proj_bias=self.proj_bias, window=window, shift=shift, bias_table=self.bias_table,
                                table_window=table)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "window_size": self.window_size,
            "shift": self.shift,
            "qkv_bias": self.qkv_bias,
            "relative_position_bias": self.relative_position_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        })
        return config
