"""Detection loss over per-cell predictions: objectness + centre + size."""

import keras
from keras import ops

from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive


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
