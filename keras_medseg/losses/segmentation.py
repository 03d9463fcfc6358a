"""Segmentation losses for sparse 2D/3D label maps: Dice, Dice + CE, Tversky, focal, cross-entropy (ignore label)."""

import keras
from keras import ops

from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import check_positive


def _sparse_targets(y_true, y_pred, ignore_index, voxel_weight=None):
    """`(onehot (N, P, K) float32, valid (N, P) float32, labels (N, P) int32, probs (N, P, K) float32)`.

    Labels `(N, *S)` or `(N, *S, 1)` integers; `y_pred` `(N, *S, K)` class
    probabilities (softmax) or, for `K == 1`, the foreground probability of a
    sigmoid head (the labels are then 0/1 and the one-hot has the single
    foreground channel). Voxels whose label equals `ignore_index` get
    `valid = 0` and count nowhere.
    """
    p_shape = tuple(y_pred.shape)
    if len(p_shape) not in (4, 5):
        raise ValueError("`y_pred` must be (N, H, W, K) or (N, D, H, W, K) class probabilities. "
                         f"Received: y_pred.shape={p_shape}")
    t_shape = tuple(y_true.shape)
    if len(t_shape) == len(p_shape):
        if t_shape[-1] not in (1, None):
            raise ValueError("`y_true` must hold sparse integer labels, (N, *S) or (N, *S, 1), not one-hot. "
                             f"Received: y_true.shape={t_shape}, y_pred.shape={p_shape}")
        y_true = ops.squeeze(y_true, -1)
    elif len(t_shape) != len(p_shape) - 1:
        raise ValueError(f"`y_true` must be (N, *S) or (N, *S, 1) for y_pred.shape={p_shape}. "
                         f"Received: y_true.shape={t_shape}")
    k = p_shape[-1]
    labels = ops.reshape(ops.cast(ops.round(ops.cast(y_true, "float32")), "int32"), (ops.shape(y_pred)[0], -1))
    probs = ops.reshape(ops.cast(y_pred, "float32"), (ops.shape(y_pred)[0], -1, k))
    if ignore_index is None:
        valid = ops.ones_like(labels, dtype="float32")
    else:
        valid = ops.cast(ops.not_equal(labels, ignore_index), "float32")
        labels = ops.where(ops.equal(labels, ignore_index), 0, labels)
    if voxel_weight is not None:  # per-voxel weights (N, *S) or (N, *S, 1) multiply the validity mask
        valid = valid * ops.reshape(ops.cast(voxel_weight, "float32"), ops.shape(valid))
    if k == 1:
        onehot = ops.cast(ops.expand_dims(labels, -1) > 0, "float32")
    else:
        onehot = ops.one_hot(labels, k, dtype="float32")
    return onehot, valid, labels, probs


def _overlap_terms(y_true, y_pred, ignore_index, include_background, batch, voxel_weight=None):
    """Per-class soft true positives, false positives and false negatives, summed over space (and batch)."""
    onehot, valid, _, probs = _sparse_targets(y_true, y_pred, ignore_index, voxel_weight)
    if probs.shape[-1] > 1 and not include_background:
        onehot, probs = onehot[..., 1:], probs[..., 1:]
    v = valid[..., None]
    axes = (0, 1) if batch else 1
    tp = ops.sum(onehot * probs * v, axis=axes)
    fp = ops.sum((1.0 - onehot) * probs * v, axis=axes)
    fn = ops.sum(onehot * (1.0 - probs) * v, axis=axes)
    return tp, fp, fn


def _per_sample(value, y_pred, batch):
    """A batch-pooled loss repeated per sample, so `sum_over_batch_size` returns it unchanged."""
    return ops.ones((ops.shape(y_pred)[0],), "float32") * value if batch else value


def tversky_loss(y_true, y_pred, alpha=0.5, beta=0.5, ignore_index=None, include_background=False,
                 batch_dice=False, smooth=1e-5, voxel_weight=None):
    """Per-sample soft Tversky loss `1 - mean_k (TP + s) / (TP + alpha FP + beta FN + s)` on sparse labels.

    `alpha = beta = 0.5` is the soft Dice loss. Keras' `keras.losses.Tversky`
    and `keras.losses.Dice` pool every class and voxel into one score and know
    neither sparse labels nor an ignore label, so the per-class sums are done
    here (checked against a NumPy reference in `tests/test_losses.py`).

    Args:
        y_true: integer labels `(N, *S)` or `(N, *S, 1)`; `*S` is 2D or 3D.
        y_pred: `(N, *S, K)` softmax probabilities, or `(N, *S, 1)` sigmoid
            foreground probability (labels 0/1).
        alpha: weight of false positives (default 0.5).
        beta: weight of false negatives (default 0.5).
        ignore_index: label value excluded from every sum (default None).
        include_background: keep class 0 in the mean when `K > 1` (default
            False, as nnU-Net).
        batch_dice: pool the sums over the batch before the ratio (default
            False: one score per sample).
        smooth: `s`, added to numerator and denominator (default 1e-5), so a
            class absent from both labels and prediction scores 1 (loss 0).
        voxel_weight: optional `(N, *S)` weights of the voxels in every sum
            (what Keras' `sample_weight` of a label map's shape becomes).

    Returns:
        `(N,)` float32 losses.

    Raises:
        ValueError: shapes that are not sparse labels against `(N, *S, K)` probabilities.

    Example:

    >>> loss = keras_medseg.losses.tversky_loss(labels, probs, alpha=0.3, beta=0.7)

    Reference: Salehi, Erdogmus, Gholipour, "Tversky loss function for image
    segmentation using 3D fully convolutional deep networks", MLMI 2017;
    Milletari, Navab, Ahmadi, "V-Net", 3DV 2016.
    """
    tp, fp, fn = _overlap_terms(y_true, y_pred, ignore_index, include_background, batch_dice, voxel_weight)
    score = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return _per_sample(1.0 - ops.mean(score, axis=-1), y_pred, batch_dice)


def dice_loss(y_true, y_pred, ignore_index=None, include_background=False, batch_dice=False, smooth=1e-5,
              voxel_weight=None):
    """Per-sample soft Dice loss `1 - mean_k (2 TP + s) / (2 TP + FP + FN + s)` on sparse labels.

    See `tversky_loss` (this is `alpha = beta = 0.5`) for the arguments.

    Example:

    >>> loss = keras_medseg.losses.dice_loss(labels, probs, ignore_index=255)

    Reference: Milletari, Navab, Ahmadi, "V-Net", 3DV 2016.
    """
    return tversky_loss(y_true, y_pred, 0.5, 0.5, ignore_index=ignore_index,
                        include_background=include_background, batch_dice=batch_dice, smooth=smooth,
                        voxel_weight=voxel_weight)


def sparse_segmentation_crossentropy(y_true, y_pred, ignore_index=None, from_logits=False, voxel_weight=None):
    """Per-sample mean cross-entropy over the labelled voxels of a 2D/3D map.

    Flattens the spatial axes to `(N * P, K)` before
    `keras.losses.sparse_categorical_crossentropy` (with `K == 1`:
    `keras.losses.binary_crossentropy`): on torch, the sparse cross-entropy of
    a 2D multi-class map fails with "grad_input must be contiguous". Without
    an ignore label the batch mean equals Keras' own loss (tested).

    Args:
        y_true: integer labels `(N, *S)` or `(N, *S, 1)`.
        y_pred: `(N, *S, K)` probabilities (or logits with `from_logits=True`).
        ignore_index: label value excluded (default None).
        from_logits: `y_pred` holds logits (default False).
        voxel_weight: optional `(N, *S)` voxel weights: each voxel's term is
            multiplied by its weight and the sum divided by the number of
            labelled voxels, as Keras does with a per-pixel `sample_weight`.

    Returns:
        `(N,)` float32: each sample's mean over its non-ignored voxels (0 if none).

    Example:

    >>> loss = keras_medseg.losses.sparse_segmentation_crossentropy(labels, probs, ignore_index=255)
    """
    _, valid, labels, probs = _sparse_targets(y_true, y_pred, ignore_index)
    # Voxel weights multiply each voxel's term; the mean stays over the labelled voxels, as with Keras'
    # `sample_weight` on `sparse_categorical_crossentropy` (same values, so class-balanced training is unchanged).
    weight = valid if voxel_weight is None else valid * ops.reshape(ops.cast(voxel_weight, "float32"),
                                                                    ops.shape(valid))
    k = probs.shape[-1]
    flat_probs = ops.reshape(probs, (-1, k))
    flat_labels = ops.reshape(labels, (-1,))
    if k == 1:
        ce = keras.losses.binary_crossentropy(ops.cast(flat_labels > 0, "float32")[:, None], flat_probs,
                                              from_logits=from_logits)
    else:
        ce = keras.losses.sparse_categorical_crossentropy(flat_labels, flat_probs, from_logits=from_logits)
    ce = ops.reshape(ce, ops.shape(valid)) * weight
    return ops.sum(ce, axis=1) / ops.maximum(ops.sum(valid, axis=1), 1e-12)


def focal_loss(y_true, y_pred, gamma=2.0, alpha=None, ignore_index=None, eps=1e-7, voxel_weight=None):
    """Per-sample focal loss `mean -alpha_y (1 - p_y)**gamma log p_y` over the labelled voxels.

    Args:
        y_true: integer labels `(N, *S)` or `(N, *S, 1)`.
        y_pred: `(N, *S, K)` softmax probabilities (or `(N, *S, 1)` sigmoid).
        gamma: focusing exponent >= 0 (default 2; 0 is cross-entropy).
        alpha: optional per-class weights, a list of K floats (default None).
        ignore_index: label value excluded (default None).
        eps: probability clip (default 1e-7).
        voxel_weight: optional `(N, *S)` voxel weights (a weighted mean).

    Returns:
        `(N,)` float32 losses.

    Example:

    >>> loss = keras_medseg.losses.focal_loss(labels, probs, gamma=2.0)

    Reference: Lin, Goyal, Girshick, He, Dollar, "Focal loss for dense object detection", ICCV 2017.
    """
    onehot, valid, _, probs = _sparse_targets(y_true, y_pred, ignore_index, voxel_weight)
    if probs.shape[-1] == 1:
        probs = ops.concatenate([1.0 - probs, probs], axis=-1)
        onehot = ops.concatenate([1.0 - onehot, onehot], axis=-1)
    p_t = ops.clip(ops.sum(onehot * probs, axis=-1), eps, 1.0)
    term = -ops.power(1.0 - p_t, gamma) * ops.log(p_t)
    if alpha is not None:
        weights = ops.convert_to_tensor(list(alpha), "float32")
        if weights.shape[0] != onehot.shape[-1]:
            raise ValueError(f"`alpha` needs one weight per class ({onehot.shape[-1]}). Received: alpha={alpha!r}")
        term = term * ops.sum(onehot * weights, axis=-1)
    return ops.sum(term * valid, axis=1) / ops.maximum(ops.sum(valid, axis=1), 1e-12)


def _check_ignore(ignore_index):
    if ignore_index is not None and (not isinstance(ignore_index, int) or isinstance(ignore_index, bool)):
        raise ValueError(f"`ignore_index` must be an int or None. Received: ignore_index={ignore_index!r}")
    return ignore_index


class _VoxelWeightedLoss(keras.losses.Loss):
    """A loss whose `sample_weight` shaped like the label map `(N, *S)` weighs the voxels inside the loss
    (`self._voxel_weight` during `call`); a per-sample weight `(N,)` goes to Keras' reduction as usual. The
    names in `_fields` are constructor arguments kept as attributes and written to the config."""

    _fields = ()

    def __init__(self, reduction="sum_over_batch_size", name=None, dtype=None, **fields):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._voxel_weight = None
        for key, value in fields.items():
            setattr(self, key, value)

    def __call__(self, y_true, y_pred, sample_weight=None):
        self._voxel_weight = None
        if sample_weight is not None and len(getattr(sample_weight, "shape", ())) >= len(y_pred.shape) - 1 >= 2:
            self._voxel_weight, sample_weight = sample_weight, None
        try:
            return super().__call__(y_true, y_pred, sample_weight=sample_weight)
        finally:
            self._voxel_weight = None

    def get_config(self):
        config = super().get_config()
        config.update({k: getattr(self, k) for k in self._fields})
        return config


class _SegLoss(_VoxelWeightedLoss):
    """Shared constructor/config of the sparse segmentation losses (an ignore label and voxel weights)."""

    def __init__(self, ignore_index=None, reduction="sum_over_batch_size", name=None, dtype=None, **fields):
        super().__init__(reduction, name, dtype, **fields)
        self.ignore_index = _check_ignore(ignore_index)

    def get_config(self):
        config = super().get_config()
        config["ignore_index"] = self.ignore_index
        return config


@register
class DiceLoss(_SegLoss):
    """Soft Dice loss for sparse multi-class labels in 2D/3D, with an ignore label (see `dice_loss`).

    Args:
        ignore_index: label value that counts nowhere (default None).
        include_background: keep class 0 in the class mean (default False).
        batch_dice: pool over the batch before the ratio (default False).
        smooth: added to numerator and denominator (default 1e-5).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    >>> model.compile("adam", loss=keras_medseg.losses.DiceLoss(ignore_index=255))

    Reference: Milletari, Navab, Ahmadi, "V-Net", 3DV 2016.
    """

    _fields = ("include_background", "batch_dice", "smooth")

    def __init__(self, ignore_index=None, include_background=False, batch_dice=False, smooth=1e-5,
                 reduction="sum_over_batch_size", name="dice_loss", dtype=None):
        super().__init__(ignore_index, reduction, name, dtype, include_background=bool(include_background),
                         batch_dice=bool(batch_dice), smooth=check_positive(smooth, "smooth", allow_zero=True))

    def call(self, y_true, y_pred):
        return dice_loss(y_true, y_pred, self.ignore_index, self.include_background, self.batch_dice, self.smooth,
                         voxel_weight=self._voxel_weight)


@register
class TverskyLoss(_SegLoss):
    """Soft Tversky loss for sparse labels (see `tversky_loss`); `alpha` weighs FP, `beta` FN.

    Args:
        alpha: false-positive weight (default 0.3).
        beta: false-negative weight (default 0.7).
        ignore_index, include_background, batch_dice, smooth: as `DiceLoss`.
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    >>> model.compile("adam", loss=keras_medseg.losses.TverskyLoss(alpha=0.3, beta=0.7))

    Reference: Salehi, Erdogmus, Gholipour, MLMI 2017.
    """

    _fields = ("alpha", "beta", "include_background", "batch_dice", "smooth")

    def __init__(self, alpha=0.3, beta=0.7, ignore_index=None, include_background=False, batch_dice=False,
                 smooth=1e-5, reduction="sum_over_batch_size", name="tversky_loss", dtype=None):
        super().__init__(ignore_index, reduction, name, dtype,
                         alpha=check_positive(alpha, "alpha", allow_zero=True),
                         beta=check_positive(beta, "beta", allow_zero=True),
                         include_background=bool(include_background),
                         batch_dice=bool(batch_dice), smooth=check_positive(smooth, "smooth", allow_zero=True))

    def call(self, y_true, y_pred):
        return tversky_loss(y_true, y_pred, self.alpha, self.beta, self.ignore_index, self.include_background,
                            self.batch_dice, self.smooth, voxel_weight=self._voxel_weight)


@register
class FocalLoss(_SegLoss):
    """Focal loss for sparse labels in 2D/3D with an ignore label (see `focal_loss`).

    Args:
        gamma: focusing exponent (default 2.0).
        alpha: optional list of per-class weights (default None).
        ignore_index: label value that counts nowhere (default None).
        reduction, name, dtype: as in `keras.losses.Loss`.

    Example:

    >>> model.compile("adam", loss=keras_medseg.losses.FocalLoss(gamma=2.0))

    Reference: Lin et al., ICCV 2017.
    """

    _fields = ("gamma", "alpha")

    def __init__(self, gamma=2.0, alpha=None, ignore_index=None, reduction="sum_over_batch_size",
                 name="focal_loss", dtype=None):
        super().__init__(ignore_index, reduction, name, dtype, gamma=check_positive(gamma, "gamma", allow_zero=True),
                         alpha=None if alpha is None else [float(a) for a in alpha])

    def call(self, y_true, y_pred):
        return focal_loss(y_true, y_pred, self.gamma, self.alpha, self.ignore_index, voxel_weight=self._voxel_weight)


@register
class SegmentationCrossentropy(_SegLoss):
    """Sparse cross-entropy of 2D/3D label maps with an ignore label, on every backend.

    See `sparse_segmentation_crossentropy`; the zoo's segmentation models use
    it (alone or inside `DiceCELoss`) instead of
    `keras.losses.SparseCategoricalCrossentropy`, which fails on torch for 2D
    multi-class maps.

    Args:
        ignore_index: label value that counts nowhere (default None).
        from_logits: `y_pred` holds logits (default False).
        reduction, name, dtype: as in `keras.losses.Loss`.
    """

    _fields = ("from_logits",)

    def __init__(self, ignore_index=None, from_logits=False, reduction="sum_over_batch_size",
                 name="segmentation_crossentropy", dtype=None):
        super().__init__(ignore_index, reduction, name, dtype, from_logits=bool(from_logits))

    def call(self, y_true, y_pred):
        return sparse_segmentation_crossentropy(y_true, y_pred, self.ignore_index, self.from_logits,
                                                voxel_weight=self._voxel_weight)


@register
class DiceCELoss(_SegLoss):
    """`dice_weight * Dice + ce_weight * cross-entropy` for sparse labels in 2D/3D (nnU-Net's default loss).

    Args:
        dice_weight: weight of the soft Dice term (default 1.0).
        ce_weight: weight of the cross-entropy term (default 1.0).
        ignore_index: label value that counts nowhere (default None).
        include_background, batch_dice, smooth: of the Dice term, as `DiceLoss`.
        reduction, name, dtype: as in `keras.losses.Loss`.

    Input shapes: labels `(N, *S)`/`(N, *S, 1)` ints; `y_pred` `(N, *S, K)`
    softmax or `(N, *S, 1)` sigmoid.

    Example:

    >>> model.compile("adam", loss=keras_medseg.losses.DiceCELoss(ignore_index=255))

    Reference: Isensee, Jaeger, Kohl, Petersen, Maier-Hein, "nnU-Net", Nature Methods 2021.
    """

    _fields = ("dice_weight", "ce_weight", "include_background", "batch_dice", "smooth")

    def __init__(self, dice_weight=1.0, ce_weight=1.0, ignore_index=None, include_background=False,
                 batch_dice=False, smooth=1e-5, reduction="sum_over_batch_size", name="dice_ce_loss", dtype=None):
        super().__init__(ignore_index, reduction, name, dtype,
                         dice_weight=check_positive(dice_weight, "dice_weight", allow_zero=True),
                         ce_weight=check_positive(ce_weight, "ce_weight", allow_zero=True),
                         include_background=bool(include_background), batch_dice=bool(batch_dice),
                         smooth=check_positive(smooth, "smooth", allow_zero=True))

    def call(self, y_true, y_pred):
        w = self._voxel_weight
        dice = dice_loss(y_true, y_pred, self.ignore_index, self.include_background, self.batch_dice, self.smooth,
                         voxel_weight=w)
        ce = sparse_segmentation_crossentropy(y_true, y_pred, self.ignore_index, voxel_weight=w)
        return self.dice_weight * dice + self.ce_weight * ce
