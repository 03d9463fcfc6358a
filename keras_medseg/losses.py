"""Losses that Keras does not ship (attention-mask supervision, box loss, ...)."""

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


_attention_mask_to_grid = attention_mask_to_grid  # former private name, kept as an alias


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


def box_loss(y_true, y_pred, objectness="mse", centre_weight=1.0, size_weight=1.0, focal_gamma=2.0,
             eps=1e-7):
    """Per-sample detection loss `L_p + p * L_c + p * L_size` over per-cell predictions.

    Layout of `y_true` / `y_pred` (see `keras_medseg.zoo.fpn_detector`): the
    last axis is `(p, centre offsets (d), log sizes (d))`, i.e. 5 channels for
    2D boxes and 7 for 3D. `p` is the objectness (a probability in `y_pred`),
    the offsets are the box centre relative to its cell in [0, 1), the sizes
    are `log(size / anchor size)`.

    With `t` the target and `^` the prediction, for every cell
    `l = L_p(p^, p) + p * (centre_weight * sum_k (o^_k - o_k)^2 + size_weight * sum_k (s^_k - s_k)^2)`,
    summed over cells and divided by the number of objects `max(sum p, 1)`
    of the sample (so the box terms count only in cells that hold an object).
    `L_p` is the squared error `(p^ - p)^2` (`objectness="mse"`, the lecture's
    choice), binary cross-entropy (`"bce"`) or the focal loss
    `-(1 - p_t)^gamma log(p_t)` (`"focal"`).

    Args:
        y_true: `(N, ..., 1 + 2d)` encoded targets.
        y_pred: `(N, ..., 1 + 2d)` predictions, same shape.
        objectness: `"mse"` (default), `"bce"` or `"focal"`.
        centre_weight: float >= 0, default 1.0.
        size_weight: float >= 0, default 1.0.
        focal_gamma: float >= 0, default 2.0 (focal only).
        eps: float > 0, probability clip for the logs, default 1e-7.

    Returns:
        `(N,)` loss per sample (float32).
    """
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    c = y_pred.shape[-1]
    if c not in (5, 7) or tuple(y_true.shape)[-1] != c:
        raise ValueError(
            "`y_true` and `y_pred` must end with 5 (2D: p, cx, cy, w, h) or 7 "
            "(3D: p, cx, cy, cz, w, h, d) channels. "
            f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
        )
    d = (c - 1) // 2
    if objectness not in ("mse", "bce", "focal"):
        raise ValueError(
            f"`objectness` must be one of ['bce', 'focal', 'mse']. Received: objectness={objectness!r}"
        )
    p_t, p_hat = y_true[..., 0], y_pred[..., 0]
    if objectness == "mse":
        l_p = ops.square(p_hat - p_t)
    else:
        q = ops.clip(p_hat, eps, 1.0 - eps)
        l_p = -(p_t * ops.log(q) + (1.0 - p_t) * ops.log(1.0 - q))
        if objectness == "focal":
            pt = p_t * q + (1.0 - p_t) * (1.0 - q)
            l_p = l_p * ops.power(1.0 - pt, focal_gamma)
    l_c = ops.sum(ops.square(y_pred[..., 1:1 + d] - y_true[..., 1:1 + d]), axis=-1)
    l_s = ops.sum(ops.square(y_pred[..., 1 + d:] - y_true[..., 1 + d:]), axis=-1)
    per_cell = l_p + p_t * (centre_weight * l_c + size_weight * l_s)
    axes = tuple(range(1, len(per_cell.shape)))
    n_obj = ops.maximum(ops.sum(p_t, axis=axes), 1.0)
    return ops.sum(per_cell, axis=axes) / n_obj


@register
class BoxLoss(keras.losses.Loss):
    """Box detection loss `L_p + p L_c + p L_size` for `fpn_detector` outputs.

    See `box_loss` for the formula. Targets come from
    `keras_medseg.zoo.fpn_detector.encode_targets`.

    Args:
        objectness: `"mse"` (default, as in the lecture), `"bce"` or `"focal"`.
        centre_weight: float >= 0, weight of the centre-offset term, default 1.0.
        size_weight: float >= 0, weight of the log-size term, default 1.0.
        focal_gamma: float >= 0, focusing exponent for `"focal"`, default 2.0.
        eps: float > 0, probability clip, default 1e-7.
        reduction, name, dtype: as in `keras.losses.Loss`.

    Input shapes: `y_true`, `y_pred` `(N, cells, 5)` for 2D boxes or
    `(N, cells, 7)` for 3D boxes (any extra cell axes are summed too).

    Raises:
        ValueError: unknown `objectness`, negative weights, channel count not 5 or 7.

    Example:
        >>> import numpy as np
        >>> from keras_medseg.losses import BoxLoss
        >>> t = np.zeros((1, 4, 5), "float32"); t[0, 1] = [1, 0.5, 0.5, 0.0, 0.0]
        >>> float(BoxLoss()(t, t))   # 0.0

    Reference:
        A. Yala, "Advanced Imaging: Localization and Segmentation" (lecture,
        CPH 100A), "Bounding box prediction": `L = L_p + p L_c + p L_size` (MSE).
    """

    def __init__(self, objectness="mse", centre_weight=1.0, size_weight=1.0, focal_gamma=2.0, eps=1e-7,
                 reduction="sum_over_batch_size", name="box_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if objectness not in ("mse", "bce", "focal"):
            raise ValueError(
                f"`objectness` must be one of ['bce', 'focal', 'mse']. Received: objectness={objectness!r}"
            )
        self.objectness = objectness
        self.centre_weight = check_positive(centre_weight, "centre_weight", allow_zero=True)
        self.size_weight = check_positive(size_weight, "size_weight", allow_zero=True)
        self.focal_gamma = check_positive(focal_gamma, "focal_gamma", allow_zero=True)
        self.eps = check_positive(eps, "eps")

    def call(self, y_true, y_pred):
        return box_loss(y_true, y_pred, objectness=self.objectness, centre_weight=self.centre_weight,
                        size_weight=self.size_weight, focal_gamma=self.focal_gamma, eps=self.eps)

    def get_config(self):
        config = super().get_config()
        config.update({"objectness": self.objectness, "centre_weight": self.centre_weight,
                       "size_weight": self.size_weight, "focal_gamma": self.focal_gamma, "eps": self.eps})
        return config
