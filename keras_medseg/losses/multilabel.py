"""Multi-label segmentation losses: one sigmoid channel per region, regions may overlap.

Brain-tumour data is the usual case: the label map's classes (necrosis 1,
oedema 2, enhancing tumour 4 in the BraTS convention) are trained as nested
regions, whole tumour `{1, 2, 4}` containing tumour core `{1, 4}` containing
enhancing tumour `{4}`, each its own sigmoid output, because a softmax over
the classes cannot say "this voxel is in three regions". The targets are
`(N, *S, R)` 0/1 masks, one channel per region (`keras_medseg.data.regions.
regions_from_labels` makes them from a label map); the predictions are
`(N, *S, R)` sigmoid probabilities (or logits with `from_logits=True`).

For region `r` of sample `n`, with soft counts over the voxels `v`
`TP = sum_v t p`, `FP = sum_v (1 - t) p`, `FN = sum_v t (1 - p)`:
`Dice_r = (2 TP + s) / (2 TP + FP + FN + s)` and the loss is
`1 - mean_r Dice_r`; the cross-entropy term is the binary cross-entropy
averaged over voxels and regions. Checked against NumPy formulas and finite
differences in `tests/test_multilabel.py`.

Reference: Myronenko, "3D MRI brain tumor segmentation using autoencoder
regularization", BrainLes 2018 (sigmoid outputs for the three nested regions);
Isensee et al., "nnU-Net", Nature Methods 2021 (region-based training with
Dice + BCE).
"""

import keras
from keras import ops

from keras_medseg.losses.segmentation import _VoxelWeightedLoss
from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive

__all__ = ["MultiLabelDiceCELoss", "MultiLabelDiceLoss", "multilabel_crossentropy", "multilabel_dice_loss"]


def _targets(y_true, y_pred, from_logits, voxel_weight):
    """`(t (N, P, R), p (N, P, R) probabilities, logits or None, w (N, P, 1))`, validated; float32 (float64
    for float64 predictions, so gradients can be checked by finite differences)."""
    p_shape, t_shape = tuple(y_pred.shape), tuple(y_true.shape)
    if len(p_shape) not in (4, 5):
        raise ValueError("`y_pred` must be (N, H, W, R) or (N, D, H, W, R) region scores, one channel per region. "
                         f"Received: y_pred.shape={p_shape}")
    if len(t_shape) != len(p_shape) or t_shape[-1] not in (p_shape[-1], None):
        raise ValueError("Multi-label targets must be 0/1 masks shaped like `y_pred`, one channel per region "
                         "(keras_medseg.data.regions.regions_from_labels makes them from a label map). "
                         f"Received: y_true.shape={t_shape}, y_pred.shape={p_shape}")
    r = p_shape[-1]
    n = ops.shape(y_pred)[0]
    dtype = "float64" if keras.backend.standardize_dtype(y_pred.dtype) == "float64" else "float32"
    t = ops.reshape(ops.cast(y_true, dtype), (n, -1, r))
    scores = ops.reshape(ops.cast(y_pred, dtype), (n, -1, r))
    logits = scores if from_logits else None
    p = ops.sigmoid(scores) if from_logits else scores
    if voxel_weight is None:
        w = ops.ones_like(t[..., :1])
    else:
        w = ops.reshape(ops.cast(voxel_weight, dtype), (n, -1, 1))
    return t, p, logits, w


def multilabel_dice_loss(y_true, y_pred, batch_dice=False, smooth=1e-5, from_logits=False, voxel_weight=None):
    """Per-sample soft Dice loss `1 - mean_r (2 TP_r + s) / (2 TP_r + FP_r + FN_r + s)` of sigmoid regions.

    Args:
        y_true: `(N, *S, R)` 0/1 region masks (`*S` 2D or 3D); regions may overlap.
        y_pred: `(N, *S, R)` sigmoid probabilities (logits with `from_logits=True`).
        batch_dice: pool the sums over the batch before the ratio (default False: one score per sample).
        smooth: `s` (default 1e-5): a region absent from both target and prediction scores 1 (loss 0).
        from_logits: `y_pred` holds logits (default False).
        voxel_weight: optional `(N, *S)` weights of the voxels in every sum (0 leaves a voxel out).

    Returns:
        `(N,)` float32 losses.

    Raises:
        ValueError: `y_true` is not shaped like `y_pred` (e.g. a label map instead of region masks).

    Example:

    >>> loss = keras_medseg.losses.multilabel_dice_loss(masks, probs)  # masks, probs: (N, D, H, W, 3)
    """
    t, p, _, w = _targets(y_true, y_pred, from_logits, voxel_weight)
    axes = (0, 1) if batch_dice else 1
    tp = ops.sum(t * p * w, axis=axes)
    fp = ops.sum((1.0 - t) * p * w, axis=axes)
    fn = ops.sum(t * (1.0 - p) * w, axis=axes)
    dice = (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth)
    loss = 1.0 - ops.sum(dice, axis=-1) / dice.shape[-1]  # not ops.mean: on JAX and torch it sums in float32
    return ops.ones((ops.shape(y_pred)[0],), loss.dtype) * loss if batch_dice else loss


def multilabel_crossentropy(y_true, y_pred, from_logits=False, voxel_weight=None, eps=1e-7):
    """Per-sample binary cross-entropy averaged over voxels and regions.

    The same values as `keras.losses.binary_crossentropy` (which averages over the region axis), written out
    because Keras' version sums float64 inputs in float32 on JAX and torch (its gradient then fails a float64
    finite-difference check by 6%); checked against NumPy in the tests.

    Args:
        y_true: `(N, *S, R)` 0/1 region masks.
        y_pred: `(N, *S, R)` sigmoid probabilities (logits with `from_logits=True`).
        from_logits: `y_pred` holds logits (default False; then computed stably from the logits).
        voxel_weight: optional `(N, *S)` voxel weights: each voxel's term is multiplied by its weight and the
            sum divided by the number of voxels with a weight above 0.
        eps: probability clip for `from_logits=False` (default 1e-7, as Keras).

    Returns:
        `(N,)` float32 losses.
    """
    t, p, logits, w = _targets(y_true, y_pred, from_logits, voxel_weight)
    if logits is not None:  # log(1 + e^-|x|) + max(x, 0) - t x: no overflow for large |x|
        term = ops.relu(logits) - logits * t + ops.log1p(ops.exp(-ops.abs(logits)))  # relu: torch's maximum is float32
    else:
        p = ops.clip(p, eps, 1.0 - eps)
        term = -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
    counted = ops.sum(ops.cast(w > 0, w.dtype), axis=(1, 2))
    return ops.sum(ops.sum(term, axis=-1) / term.shape[-1] * w[..., 0], axis=1) / ops.maximum(counted, 1e-12)


@register
class MultiLabelDiceLoss(_VoxelWeightedLoss):
    """Soft Dice loss of `R` sigmoid region channels, 2D or 3D (see `multilabel_dice_loss`).

    Args:
        batch_dice: pool over the batch before the ratio (default False).
        smooth: added to numerator and denominator (default 1e-5).
        from_logits: the model outputs logits (default False: sigmoid probabilities).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Shapes: targets and predictions `(N, H, W, R)` or `(N, D, H, W, R)`.

    Example:

    >>> model.compile("adam", loss=keras_medseg.losses.MultiLabelDiceLoss())
    """

    _fields = ("batch_dice", "smooth", "from_logits")

    def __init__(self, batch_dice=False, smooth=1e-5, from_logits=False, reduction="sum_over_batch_size",
                 name="multilabel_dice_loss", dtype=None):
        super().__init__(reduction, name, dtype, batch_dice=bool(batch_dice),
                         smooth=check_positive(smooth, "smooth", allow_zero=True), from_logits=bool(from_logits))

    def call(self, y_true, y_pred):
        return multilabel_dice_loss(y_true, y_pred, self.batch_dice, self.smooth, self.from_logits,
                                    voxel_weight=self._voxel_weight)


@register
class MultiLabelDiceCELoss(_VoxelWeightedLoss):
    """`dice_weight * multi-label Dice + ce_weight * binary cross-entropy` of `R` sigmoid regions.

    The region-based training loss of nnU-Net for brain tumours (Dice + BCE per region).

    Args:
        dice_weight: weight of the soft Dice term (default 1.0).
        ce_weight: weight of the binary cross-entropy term (default 1.0).
        batch_dice, smooth, from_logits: as `MultiLabelDiceLoss`.
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    >>> model.compile("adam", loss=keras_medseg.losses.MultiLabelDiceCELoss(),
    ...               metrics=[keras_medseg.metrics.MultiLabelDice(num_regions=3)])  # doctest: +SKIP
    """

    _fields = ("dice_weight", "ce_weight", "batch_dice", "smooth", "from_logits")

    def __init__(self, dice_weight=1.0, ce_weight=1.0, batch_dice=False, smooth=1e-5, from_logits=False,
                 reduction="sum_over_batch_size", name="multilabel_dice_ce_loss", dtype=None):
        super().__init__(reduction, name, dtype,
                         dice_weight=check_positive(dice_weight, "dice_weight", allow_zero=True),
                         ce_weight=check_positive(ce_weight, "ce_weight", allow_zero=True),
                         batch_dice=bool(batch_dice), smooth=check_positive(smooth, "smooth", allow_zero=True),
                         from_logits=bool(from_logits))

    def call(self, y_true, y_pred):
        w = self._voxel_weight
        dice = multilabel_dice_loss(y_true, y_pred, self.batch_dice, self.smooth, self.from_logits, voxel_weight=w)
        ce = multilabel_crossentropy(y_true, y_pred, self.from_logits, voxel_weight=w)
        return self.dice_weight * dice + self.ce_weight * ce
