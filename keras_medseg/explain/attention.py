"""Attention analysis for attention-pooling models: upsampled maps and attention mass inside a mask.

Works on any model output of `(N, *grid, heads)` attention maps that sum to 1
over space (e.g. the `attention` output of `zoo.build("attention_classifier")`).

Reference: Ilse et al., "Attention-based Deep Multiple Instance Learning", ICML 2018
(attention pooling); the localisation-as-attention lecture behind `AttentionMaskLoss`.
"""

from keras import ops

from keras_medseg.losses import attention_mask_to_grid
from keras_medseg.ops.attention import resize_spatial
from keras_medseg.utils.validation import spatial_rank


def upsample_attention(attention, image_size, method="linear"):
    """Resize attention maps to the image size for display (2D and 3D).

    Args:
        attention: `(N, *grid, heads)` maps (the model's `attention` output).
        image_size: target spatial size (int or tuple), e.g. `x.shape[1:-1]`.
        method: `"linear"` (default, smooth) or `"area"` (blocky, exact box).

    Returns:
        `(N, *image_size, heads)` NumPy array (values are interpolated, not
        renormalised: use it for display, not as a distribution).

    Raises:
        ValueError: `attention` not 2D/3D channels-last, bad `image_size` or `method`.

    Example:
        >>> from keras_medseg.explain import upsample_attention
        >>> risk, att = model.predict(x)
        >>> overlay = upsample_attention(att, x.shape[1:-1])   # (N, H, W, heads)
    """
    attention = ops.convert_to_tensor(attention)
    spatial_rank(attention, "attention")
    return ops.convert_to_numpy(resize_spatial(attention, image_size, method=method))


def attention_mass_inside(attention, mask):
    """Share of each head's attention that lies inside `mask`: `sum alpha * A` per sample and head.

    Args:
        attention: `(N, *grid, heads)` maps summing to 1 over space.
        mask: `(N, *S)` or `(N, *S, 1 or heads)` binary mask at any resolution
            (area-resized to the grid, as in the loss).

    Returns:
        `(N, heads)` NumPy array in [0, 1] (`exp(-L_attn)` up to `eps`).
    """
    attention = ops.cast(ops.convert_to_tensor(attention), "float32")
    mask = ops.cast(ops.convert_to_tensor(mask), "float32")
    a = attention_mask_to_grid(mask, attention)
    axes = tuple(range(1, len(attention.shape) - 1))
    return ops.convert_to_numpy(ops.sum(attention * a, axis=axes))


__all__ = ["attention_mass_inside", "upsample_attention"]
