"""`PositionEmbedding`: a learned additive embedding, one vector per position of a 2D/3D token grid."""

import keras
from keras import ops

from keras_medseg.utils.serialization import register


@register
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned `(*S, C)` embedding to a channels-last token grid `(N, *S, C)`.

    The ViT / UNETR position embedding (`prod(S) * C` parameters, MONAI's
    `PatchEmbeddingBlock.position_embeddings`), kept on the token grid instead
    of a flattened sequence, so the grid needs static sizes.

    Args:
        initializer: of the embedding (default truncated normal, stddev 0.02,
            as in ViT).
        **kwargs: base layer arguments.

    Input shape: `(N, H, W, C)` or `(N, D, H, W, C)` with static sizes.
    Output shape: the same.

    Raises:
        ValueError: input not 2D/3D channels-last or with unknown sizes.

    Example:

    >>> tokens = keras_medseg.layers.PositionEmbedding()(np.zeros((1, 6, 6, 6, 32), "float32"))

    Reference: Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021;
    Hatamizadeh et al., "UNETR: Transformers for 3D Medical Image Segmentation", WACV 2022.
    """

    def __init__(self, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer or keras.initializers.TruncatedNormal(stddev=0.02))

    def build(self, input_shape):
        if len(input_shape) not in (4, 5) or any(s is None for s in input_shape[1:]):
            raise ValueError("PositionEmbedding expects (N, H, W, C) or (N, D, H, W, C) with static sizes. "
                             f"Received: input_shape={tuple(input_shape)}")
        self.embedding = self.add_weight(name="embedding", shape=tuple(input_shape[1:]), initializer=self.initializer)

    def call(self, x):
        return x + ops.cast(self.embedding, x.dtype)[None]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["initializer"] = keras.initializers.serialize(self.initializer)
        return config
