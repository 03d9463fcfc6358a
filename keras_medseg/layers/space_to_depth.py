"""`SpaceToDepth`: every `block**d` voxels of a 2D/3D grid become one token with `block**d` times the channels."""

import keras

from keras_medseg.ops.windows import space_to_depth
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive_int


@register
class SpaceToDepth(keras.layers.Layer):
    """`(N, *S, C)` -> `(N, *ceil(S / block), block**d * C)`, odd sizes zero-padded at the end.

    The gather of the Swin Transformer's patch merging (followed there by a
    layer norm and a linear reduction to `2C`); `tf.nn.space_to_depth` for 2D
    and 3D on every backend. No weights. See
    `keras_medseg.ops.windows.space_to_depth` for the channel order.

    Args:
        block: block size along every axis (default 2).
        **kwargs: base layer arguments.

    Input shape: `(N, H, W, C)` or `(N, D, H, W, C)` with static sizes.
    Output shape: `(N, *ceil(S / block), block**d * C)`.

    Raises:
        ValueError: `block` < 1, an input that is not 2D/3D or has unknown sizes.

    Example:

    >>> y = keras_medseg.layers.SpaceToDepth()(np.zeros((1, 8, 8, 8, 4), "float32"))  # (1, 4, 4, 4, 32)

    Reference: Liu et al., "Swin Transformer: Hierarchical Vision Transformer
    using Shifted Windows", ICCV 2021.
    """

    def __init__(self, block=2, **kwargs):
        super().__init__(**kwargs)
        self.block = check_positive_int(block, "block")

    def build(self, input_shape):
        if len(input_shape) not in (4, 5) or any(s is None for s in input_shape[1:-1]):
            raise ValueError("SpaceToDepth expects (N, H, W, C) or (N, D, H, W, C) with static spatial sizes. "
                             f"Received: input_shape={tuple(input_shape)}")

    def call(self, x):
        return space_to_depth(x, self.block)

    def compute_output_shape(self, input_shape):
        d = len(input_shape) - 2
        spatial = tuple(-(-s // self.block) for s in input_shape[1:-1])
        channels = None if input_shape[-1] is None else input_shape[-1] * self.block ** d
        return (input_shape[0], *spatial, channels)

    def get_config(self):
        config = super().get_config()
        config["block"] = self.block
        return config
