"""Attention-mask supervision loss: `-log(sum alpha * A + eps)` on the attention grid."""

import keras
from keras import ops

from keras_medseg.ops.attention import resize_spatial
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive


def attention_mask_to_grid(y_true, y_pred):
    """Bring the mask `y_true` to the attention grid of `y_pred` (area resize), channels 1 or heads.

    Args:
        y_true: mask `(N, *S)` or `(N, *S, 1 or heads)` at any resolution.
        y_pred: attention maps `(N, *grid, heads)` (2D or 3D).

    Returns:
        float tensor `(N, *grid, 1 or heads)`.

    Raises:
        ValueError: `y_pred` not 4D/5D, or `y_true` with other spatial axes or channels.
    """
    p_shape = tuple(y_pred.shape)
    t_shape = tuple(y_true.shape)
    if len(p_shape) not in (4, 5):
        raise ValueError(
            "`y_pred` (the attention maps) must be (N, H, W, heads) or (N, D, H, W, heads). "
            f"Received: y_pred.shape={p_shape}"
        )
    d = len(p_shape) - 2
    if len(t_shape) == len(p_shape) - 1:
        # mask without a channel axis: one mask shared by every head
        y_true = ops.expand_dims(y_true, -1)
        t_shape = tuple(y_true.shape)
    if len(t_shape) != len(p_shape):
        raise ValueError(
            f"`y_true` (the mask) must have {d} spatial axes like `y_pred`: shape (N, *spatial) or "
            f"(N, *spatial, 1 or heads). Received: y_true.shape={tuple(t_shape)}, y_pred.shape={p_shape}"
        )
    heads = p_shape[-1]
    if t_shape[-1] is not None and heads is not None and t_shape[-1] not in (1, heads):
        raise ValueError(
            f"`y_true` (the mask) must have 1 channel or one per attention head ({heads}). "
            f"Received: y_true.shape={t_shape}, y_pred.shape={p_shape}"
        )
    grid, mask_grid = p_shape[1:-1], t_shape[1:-1]
    if tuple(grid) != tuple(mask_grid):
        if any(s is None for s in grid) or any(s is None for s in mask_grid):
            raise ValueError(
                "`y_true` (the mask) and `y_pred` need static spatial sizes so the mask can be "
                f"resized to the attention grid. Received: y_true.shape={t_shape}, y_pred.shape={p_shape}"
            )
        y_true = resize_spatial(y_true, tuple(grid), method="area")
    return y_true


def attention_mask_loss(y_true, y_pred, eps=1e-7, skip_empty_masks=True):
    """Per-sample attention-mask loss `mean_heads -log(sum_positions alpha * A + eps)`.

    Args:
        y_true: binary mask `A`, `(N, *S')`, `(N, *S', 1)` (shared by all heads)
            or `(N, *S', heads)`, at image resolution or any other grid: it is
            area-resized to the attention grid `S` (so a coarse mask such as
            "left half" becomes the covered fraction of each attention cell).
        y_pred: attention maps `alpha`, `(N, *S, heads)`, each summing to 1
            over space (e.g. from `keras_medseg.layers.AttentionPool`).
        eps: float, default 1e-7. Keeps the log finite.
        skip_empty_masks: bool, default True. Samples whose mask is empty
            (e.g. negative cases without a location) contribute 0 instead of
            the constant `-log(eps)`.

    Returns:
        `(N,)` loss per sample, computed in float32 (float64 for float64 inputs).

    Raises:
        ValueError: `eps <= 0`; mask and attention shapes that cannot be
            matched (rank, spatial-axis count, channel count).
    """
    check_positive(eps, "eps")
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.convert_to_tensor(y_true)
    dtype = "float64" if keras.backend.standardize_dtype(y_pred.dtype) == "float64" else "float32"
    y_pred = ops.cast(y_pred, dtype)
    y_true = ops.cast(y_true, dtype)
    a = attention_mask_to_grid(y_true, y_pred)
    axes = tuple(range(1, len(y_pred.shape) - 1))
    agreement = ops.sum(y_pred * a, axis=axes)  # (N, heads)
    per_head = -ops.log(agreement + ops.cast(eps, dtype))
    # sum / count rather than ops.mean: Keras' JAX `mean` reduces float64 in float32
    loss = ops.sum(per_head, axis=-1) / ops.cast(y_pred.shape[-1], dtype)
    if skip_empty_masks:
        present = ops.cast(ops.sum(ops.abs(a), axis=tuple(range(1, len(a.shape)))) > 0, dtype)
        loss = loss * present
    return loss


@register
class AttentionMaskLoss(keras.losses.Loss):
    """Attention-map supervision `L_attn = -log(sum alpha * A + eps)` (mean over heads and batch).

    `alpha` (`y_pred`) are softmax-over-space attention maps and `A` (`y_true`)
    a binary mask of where the finding is - exact or coarse ("left lung"). The
    mask may be given at image resolution: it is area-resized to the attention
    grid (`keras_medseg.ops.resize_spatial`). Because `alpha` sums to 1, the
    loss is 0 (up to `eps`) exactly when all attention mass lies inside the
    mask; a mask of ones gives `-log(1 + eps)`. Used as
    `L = L_task + lambda * L_attn` through Keras `loss_weights`.

    Args:
        eps: float, default 1e-7. Keeps the log finite (> 0).
        skip_empty_masks: bool, default True. Samples with an empty mask
            (negatives without a location) contribute 0.
        reduction: Keras reduction, default `"sum_over_batch_size"`.
        name: default `"attention_mask_loss"`.
        dtype: loss dtype, default the Keras float type.

    Shapes:
        `y_pred`: `(N, H, W, heads)` or `(N, D, H, W, heads)`.
        `y_true`: `(N, H', W')`, `(N, H', W', 1)`, `(N, H', W', heads)` (3D:
        with `D'`), any static spatial size.

    Raises:
        ValueError: `eps <= 0`; mask/attention shapes that cannot be matched
            (different number of spatial axes, channel count other than 1 or heads).

    Example:
        >>> import numpy as np
        >>> from keras_medseg.losses import AttentionMaskLoss
        >>> alpha = np.full((1, 2, 2, 1), 0.25, "float32")
        >>> mask = np.zeros((1, 64, 64, 1), "float32"); mask[:, :, 32:] = 1   # right half
        >>> float(AttentionMaskLoss()(mask, alpha))   # -log(0.5) = 0.693...

    Reference:
        A. Yala, "Advanced Imaging: Localization and Segmentation" (lecture,
        CPH 100A): "Supervising attention maps", `L_Attn(alpha, A) =
        -log(alpha . A)`, coarse supervision, `L = L_Risk + lambda L_Attn`.
    """

    def __init__(self, eps=1e-7, skip_empty_masks=True, reduction="sum_over_batch_size",
                 name="attention_mask_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.eps = check_positive(eps, "eps")
        self.skip_empty_masks = bool(skip_empty_masks)

    def call(self, y_true, y_pred):
        return attention_mask_loss(y_true, y_pred, eps=self.eps, skip_empty_masks=self.skip_empty_masks)

    def get_config(self):
        config = super().get_config()
        config.update({"eps": self.eps, "skip_empty_masks": self.skip_empty_masks})
        return config
