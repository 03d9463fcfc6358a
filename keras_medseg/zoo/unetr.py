"""UNETR: a ViT encoder on 16^d patches with a convolutional decoder, 2D and 3D (`zoo.build("unetr", ...)`).

The image is cut into 16x16(x16) patches, embedded by a strided convolution
to `hidden_size` channels plus a learned position embedding, and passed through
`num_layers` pre-norm transformer blocks (layer norm, global multi-head
self-attention, layer norm, GELU MLP; residual around each). The tokens stay on
their grid, so the hidden states after blocks L/4, L/2 and 3L/4 (the paper's
z3, z6, z9 for L = 12) are feature maps: they are brought up to 1/2, 1/4 and
1/8 of the input resolution by stacks of 2x2 transposed convolutions (each
followed by a residual convolution block), the last state (after a final layer
norm) is the bottleneck, and a UNet decoder of transposed convolutions,
concatenations and residual blocks returns to full resolution, where the skip
is a residual block on the image itself.

Layer names: `{name}_patchify`, `{name}_patch_embed`, `{name}_pos_embed`,
`{name}_block{l}_{norm1,attn,add1,norm2,mlp1,mlp2,add2}`, `{name}_encoder_norm`,
`{name}_enc1_...` (image skip), `{name}_enc{k}_up0` + `{name}_enc{k}_up{j}` /
`{name}_enc{k}_block{j}_...` (k = 2, 3, 4), `{name}_dec{k}_{up,concat,conv1,...}`,
`{name}_head`, `{name}_output`.

Reference: Hatamizadeh et al., "UNETR: Transformers for 3D Medical Image
Segmentation", WACV 2022. Parameter counts equal MONAI's `UNETR` up to one
unused layer norm per block there (`tests/zoo/test_volume_params.py`).
"""

import keras
import numpy as np

from keras_medseg.layers import PositionEmbedding, SpaceToDepth, WindowAttention
from keras_medseg.layers.factories import normalization as norm_layer_of
from keras_medseg.utils.validation import check_positive_int, check_spatial_dims, spatial_shape
from keras_medseg.zoo import _blocks
from keras_medseg.zoo.registry import register_model

PATCH_SIZE = 16  # four 2x upsamplings in the decoder bring 1/16 back to full resolution


def transformer_block(x, num_heads, mlp_dim, prefix, window_size=None, shift=False, qkv_bias=False):
    """Pre-norm transformer block on a token grid: `x + attn(LN(x))`, then `x + MLP(LN(x))` (GELU, exact)."""
    hidden = x.shape[-1]
    y = norm_layer_of("layer", f"{prefix}_norm1", epsilon=1e-5)(x)
    y = WindowAttention(num_heads, window_size=window_size, shift=shift, qkv_bias=qkv_bias, name=f"{prefix}_attn")(y)
    x = keras.layers.Add(name=f"{prefix}_add1")([x, y])
    y = norm_layer_of("layer", f"{prefix}_norm2", epsilon=1e-5)(x)
    y = keras.layers.Dense(mlp_dim, activation="gelu", name=f"{prefix}_mlp1")(y)
    y = keras.layers.Dense(hidden, name=f"{prefix}_mlp2")(y)
    return keras.layers.Add(name=f"{prefix}_add2")([x, y])


def _example(model, batch_size, seed):
    rng = np.random.default_rng(seed)
    in_shape = tuple(model.inputs[0].shape[1:])
    x = rng.normal(size=(batch_size, *in_shape)).astype("float32")
    channels = model.outputs[0].shape[-1]
    if channels == 1:
        y = rng.integers(0, 2, size=(batch_size, *in_shape[:-1], 1)).astype("float32")
    else:
        y = rng.integers(0, channels, size=(batch_size, *in_shape[:-1])).astype("int32")
    return x, y


@register_model(
    "unetr",
    description="UNETR (Hatamizadeh 2022): ViT encoder on 16^3 patches, hidden states decoded by a conv UNet",
    spatial_dims=(2, 3),
    task="segmentation",
    tiny={"input_size": 16, "feature_size": 4, "hidden_size": 16, "mlp_dim": 16, "num_heads": 2, "num_layers": 4},
    example=_example,
)
def unetr(*, spatial_dims: int = 3, input_size: int | tuple = 96, in_channels: int = 1, num_classes: int = 2,
          feature_size: int = 16, hidden_size: int = 768, mlp_dim: int = 3072, num_heads: int = 12,
          num_layers: int = 12, qkv_bias: bool = False, normalization: str | None = "instance",
          norm_affine: bool = False, loss: str = "dice_ce", ignore_index: int | None = None,
          learning_rate: float = 1e-4, name: str = "unetr") -> keras.Model:
    """UNETR for 2D/3D segmentation, compiled (Adam, Dice + cross-entropy, IoU/Dice metrics).

    Args:
        spatial_dims: 2 or 3 (default 3).
        input_size: spatial size, int or tuple, divisible by 16 (default 96 as
            in the paper); required, the position embedding has one vector per
            patch.
        in_channels: image channels (default 1).
        num_classes: 1 gives a sigmoid head; >= 2 a softmax head with integer
            labels (default 2).
        feature_size: decoder width at full resolution, doubled per level
            (default 16).
        hidden_size: transformer width (default 768, ViT-Base).
        mlp_dim: MLP width (default 3072).
        num_heads: attention heads; must divide `hidden_size` (default 12).
        num_layers: transformer blocks, a multiple of 4 (default 12).
        qkv_bias: bias in the query/key/value projection (default False, as MONAI).
        normalization: of the convolution blocks: "instance" (default),
            "group", "batch" or None.
        norm_affine: learn a scale and shift in those norms (default False,
            as MONAI's instance norm).
        loss: "dice_ce" (default) or "ce".
        ignore_index: label value the loss skips (default None).
        learning_rate: Adam learning rate (default 1e-4, as the paper).
        name: model name / layer prefix (default "unetr").

    Input/output shapes: 2D `(N, H, W, in_channels) -> (N, H, W, max(num_classes, 1))`,
    3D `(N, D, H, W, in_channels) -> (N, D, H, W, max(num_classes, 1))`.

    Raises:
        ValueError: bad `spatial_dims`, `input_size` (None or not divisible by
            16), `hidden_size` not divisible by `num_heads`, `num_layers` not
            a positive multiple of 4, bad `normalization` or `loss`.

    Example:

    >>> model = keras_medseg.zoo.build("unetr", input_size=64, hidden_size=192, mlp_dim=768, num_heads=3)

    Reference: Hatamizadeh et al., "UNETR: Transformers for 3D Medical Image
    Segmentation", WACV 2022; parameter counts checked against MONAI's `UNETR`
    (table in docs/zoo.md).
    """
    spatial_dims = check_spatial_dims(spatial_dims)
    in_channels = check_positive_int(in_channels, "in_channels")
    num_classes = _blocks.check_compile_args(num_classes, loss, learning_rate, ignore_index)
    feature_size = check_positive_int(feature_size, "feature_size")
    hidden_size = check_positive_int(hidden_size, "hidden_size")
    mlp_dim = check_positive_int(mlp_dim, "mlp_dim")
    num_heads = check_positive_int(num_heads, "num_heads")
    if hidden_size % num_heads:
        raise ValueError(f"`hidden_size` ({hidden_size}) must be divisible by `num_heads`. "
                         f"Received: num_heads={num_heads}")
    num_layers = check_positive_int(num_layers, "num_layers")
    if num_layers % 4:
        raise ValueError(f"`num_layers` must be a multiple of 4 (skips after L/4, L/2, 3L/4 blocks). "
                         f"Received: num_layers={num_layers}")
    normalization = _blocks.check_normalization(normalization)
    name = _blocks.check_name(name)
    shape = spatial_shape(input_size, spatial_dims, divisible_by=PATCH_SIZE, allow_none=False,
                          why="the position embedding needs one vector per 16-voxel patch")
    affine = bool(norm_affine)

    def res(x, filters, prefix):
        return _blocks.conv_block(x, filters, 3, 1, normalization, prefix, affine=affine, residual=True)

    inputs = keras.Input(shape=(*shape, in_channels), name=f"{name}_input")
    # the patch embedding, a convolution with kernel = stride = 16, as a gather + matrix product (same weights,
    # and its gradient is a plain matmul: TensorFlow's CPU gradient of a 16^3-kernel strided Conv3D is very slow)
    x = SpaceToDepth(PATCH_SIZE, name=f"{name}_patchify")(inputs)
    x = keras.layers.Dense(hidden_size, name=f"{name}_patch_embed")(x)
    x = PositionEmbedding(name=f"{name}_pos_embed")(x)
    taps = {}
    for layer in range(num_layers):
        x = transformer_block(x, num_heads, mlp_dim, f"{name}_block{layer}", qkv_bias=qkv_bias)
        taps[layer + 1] = x
    x = norm_layer_of("layer", f"{name}_encoder_norm", epsilon=1e-5)(x)

    enc1 = res(inputs, feature_size, f"{name}_enc1")
    skips = {1: enc1}
    quarter = num_layers // 4
    for k, (state, extra) in {2: (quarter, 2), 3: (2 * quarter, 1), 4: (3 * quarter, 0)}.items():
        width = feature_size * 2 ** (k - 1)
        y = _blocks.transposed_conv(taps[state], width, 2, 2, f"{name}_enc{k}_up0")
        for j in range(extra):
            y = _blocks.transposed_conv(y, width, 2, 2, f"{name}_enc{k}_up{j + 1}")
            y = res(y, width, f"{name}_enc{k}_block{j}")
        skips[k] = y
    for k in (4, 3, 2, 1):
        x = _blocks.up_block(x, skips[k], feature_size * 2 ** (k - 1), 3, 2, 2, normalization, f"{name}_dec{k}",
                             affine=affine, residual=True)
    outputs = _blocks.head(x, num_classes, name)
    model = keras.Model(inputs, outputs, name=name)
    return _blocks.compile_segmenter(model, num_classes, loss, ignore_index, learning_rate)
