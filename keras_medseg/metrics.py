"""Segmentation metrics: Dice and IoU per class and on average.

Keras already has the IoU family (`keras.metrics.MeanIoU`, `IoU`,
`BinaryIoU`) and a Dice *loss* (`keras.losses.Dice`); this module adds only
what Keras lacks:

* `MeanDice`: a streaming Dice metric for `compile(metrics=...)`, built on the
  confusion matrix that `keras.metrics.IoU` accumulates.
* `MeanIoU`: `keras.metrics.MeanIoU` with the same numbers, but its confusion
  matrix comes from one one-hot matrix product instead of `ops.scatter`, which
  Keras 3.15's torch backend runs as a Python loop over every pixel (0.5 s a
  step on a 65k-pixel batch). `MeanDice` uses the same product.
* `segmentation_metrics(num_classes)`: the metric list the zoo's segmentation
  models compile with (mean IoU + mean Dice, sigmoid or softmax heads).
* `dice_iou_table(y_true, y_pred, num_classes)`: per-class Dice/IoU of a whole
  evaluation set in NumPy, and `format_table` to print one or several of them
  side by side (used by `keras-medseg evaluate` and `demo`).
* Multi-label (one sigmoid channel per possibly overlapping region):
  `MultiLabelDice` (streaming, per region or their mean) and
  `multilabel_dice_iou_table` (NumPy, the same table format).

For one class, with TP/FP/FN pixel counts: `IoU = TP / (TP + FP + FN)`,
`Dice = 2 TP / (2 TP + FP + FN) = 2 IoU / (1 + IoU)`.
"""

import keras
import numpy as np
from keras import ops

from keras_medseg.utils.serialization import register


def confusion_matrix(y_true, y_pred, num_classes, sample_weight=None):
    """Confusion matrix `(num_classes, num_classes)` (rows: true, columns: predicted), `keras.ops` only.

    One product of one-hot matrices, `one_hot(y_true)^T @ (w * one_hot(y_pred))`: O(pixels x classes^2)
    work, compiled on every backend (no scatter). Pixels whose true or predicted id lies outside
    `0..num_classes-1` count nowhere (as in `keras.metrics.IoU`). Checked against
    `sklearn.metrics.confusion_matrix` and `keras.metrics.MeanIoU` in the tests.

    Args:
        y_true, y_pred: integer class ids of one shape (any rank; flattened).
        num_classes: int.
        sample_weight: optional weights broadcastable to the flattened `y_true` (default 1).

    Returns:
        float32 tensor `(num_classes, num_classes)`.
    """
    y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    y_pred = ops.reshape(ops.cast(y_pred, "int32"), (-1,))
    valid = (y_true >= 0) & (y_true < num_classes) & (y_pred >= 0) & (y_pred < num_classes)
    weight = ops.cast(valid, "float32")
    if sample_weight is not None:
        weight = weight * ops.broadcast_to(ops.cast(sample_weight, "float32"), ops.shape(y_true))
    true_1h = ops.one_hot(ops.where(valid, y_true, 0), num_classes, dtype="float32")
    pred_1h = ops.one_hot(ops.where(valid, y_pred, 0), num_classes, dtype="float32")
    return ops.matmul(ops.transpose(true_1h), pred_1h * ops.expand_dims(weight, -1))


class _OneHotConfusion:
    """`update_state` of `keras.metrics.IoU` with the confusion matrix of `confusion_matrix` (same semantics:
    sparse/dense inputs, `ignore_class`, per-pixel `sample_weight`)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        if not self.sparse_y_true:
            y_true = ops.argmax(y_true, axis=self.axis)
        if not self.sparse_y_pred:
            y_pred = ops.argmax(y_pred, axis=self.axis)
        y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        if sample_weight is not None:
            sample_weight = ops.cast(sample_weight, "float32")
            if len(sample_weight.shape) > 1:
                sample_weight = ops.reshape(sample_weight, (-1,))
        if self.ignore_class is not None:
            keep = ops.cast(ops.not_equal(y_true, self.ignore_class), "float32")
            sample_weight = keep if sample_weight is None else keep * sample_weight
        cm = confusion_matrix(y_true, y_pred, self.num_classes, sample_weight)
        return self.total_cm.assign(self.total_cm + ops.cast(cm, self.total_cm.dtype))


@register
class MeanIoU(_OneHotConfusion, keras.metrics.MeanIoU):
    """`keras.metrics.MeanIoU` (same arguments and numbers) without `ops.scatter` in its update.

    Keras 3.15's torch backend runs `ops.scatter` as a Python loop over pixels; this version forms the
    confusion matrix with one matrix product on every backend. Values equal `keras.metrics.MeanIoU`
    (tested on TensorFlow, JAX and torch).
    """


@register
class MeanDice(_OneHotConfusion, keras.metrics.IoU):
    """Mean Dice coefficient over classes, accumulated over batches.

    Args:
        num_classes: number of classes (2 for a binary problem).
        target_class_ids: classes to average (default None: all).
        threshold: for a one-channel sigmoid output give a threshold (e.g.
            0.5): `y_pred > threshold` is class 1 (default None: the
            prediction holds class scores along the last axis, or class ids if
            `sparse_y_pred=True`).
        sparse_y_true: labels are class ids (default True) or one-hot.
        sparse_y_pred: predictions are class ids (default False: scores, argmax).
        name, dtype: as for Keras metrics.

    Shapes: `y_true (N, *spatial)` class ids, `y_pred (N, *spatial, C)` scores
    (2D: `(N, H, W, C)`, 3D: `(N, D, H, W, C)`).

    Example:

    >>> m = keras_medseg.metrics.MeanDice(num_classes=4)
    >>> model.compile("adam", "sparse_categorical_crossentropy", metrics=[m])  # doctest: +SKIP

    Reference: Dice (1945); Milletari et al., V-Net (2016).
    """

    def __init__(self, num_classes, target_class_ids=None, threshold=None, sparse_y_true=True,
                 sparse_y_pred=False, name="mean_dice", dtype=None, ignore_class=None, axis=-1):
        if target_class_ids is None:
            target_class_ids = list(range(num_classes))
        if threshold is not None:
            sparse_y_pred = True
        super().__init__(num_classes=num_classes, target_class_ids=target_class_ids, name=name,
                         dtype=dtype, ignore_class=ignore_class, sparse_y_true=sparse_y_true,
                         sparse_y_pred=sparse_y_pred, axis=axis)
        self.threshold = threshold

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.threshold is not None:
            y_pred = ops.cast(ops.greater(y_pred, self.threshold), "int32")
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)

    def result(self):
        cm = ops.cast(self.total_cm, "float32")
        tp = ops.diagonal(cm)
        denominator = ops.sum(cm, axis=0) + ops.sum(cm, axis=1)  # 2 TP + FP + FN
        ids = ops.convert_to_tensor(self.target_class_ids, dtype="int32")
        tp = ops.take(tp, ids)
        denominator = ops.take(denominator, ids)
        valid = ops.greater(denominator, 0.0)
        dice = ops.where(valid, 2.0 * tp / ops.maximum(denominator, 1e-9), 0.0)
        return ops.sum(dice) / ops.maximum(ops.sum(ops.cast(valid, "float32")), 1.0)

    def get_config(self):
        config = super().get_config()
        config["threshold"] = self.threshold
        return config


@register
class MultiLabelDice(keras.metrics.Metric):
    """Dice of sigmoid region channels (regions may overlap), accumulated over batches.

    Each channel is thresholded (`y_pred > threshold`) and compared with its
    0/1 target; true/false positives and false negatives are summed per region
    over every batch. The result is one region's Dice (`region=r`; 1.0 while
    the region is absent from both target and prediction) or the mean over the
    regions present in either so far (a region absent from both does not
    count, as `MeanDice`). Checked against
    `sklearn.metrics.f1_score` per channel in the tests.

    Args:
        num_regions: int, the number of region channels `R`.
        threshold: probability above which a voxel is in a region (default 0.5).
        region: int or None: the channel to score (default None: the mean).
        name, dtype: as for Keras metrics.

    Shapes: `y_true` and `y_pred` `(N, *S, R)`; `sample_weight` `(N,)` or `(N, *S)`.

    Example:

    >>> metrics = [keras_medseg.metrics.MultiLabelDice(3, name="mean_dice")] + [
    ...     keras_medseg.metrics.MultiLabelDice(3, region=r, name=f"dice_{n}")
    ...     for r, n in enumerate(["wt", "tc", "et"])]  # doctest: +SKIP
    """

    def __init__(self, num_regions, threshold=0.5, region=None, name="multilabel_dice", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if isinstance(num_regions, bool) or not isinstance(num_regions, (int, np.integer)) or num_regions < 1:
            raise ValueError(f"`num_regions` must be an int >= 1. Received: num_regions={num_regions!r}")
        if region is not None and (isinstance(region, bool) or not isinstance(region, (int, np.integer))
                                   or not 0 <= region < num_regions):
            raise ValueError(f"`region` must be None or an int in [0, {num_regions}). Received: region={region!r}")
        self.num_regions, self.threshold = int(num_regions), float(threshold)
        self.region = None if region is None else int(region)
        self.counts = self.add_variable(shape=(3, self.num_regions), initializer="zeros", name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        r = self.num_regions
        if y_pred.shape[-1] != r or len(y_true.shape) != len(y_pred.shape):
            raise ValueError(f"`MultiLabelDice` needs y_true and y_pred shaped (N, *S, {r}). "
                             f"Received: y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}")
        n = ops.shape(y_pred)[0]
        t = ops.reshape(ops.cast(ops.greater(ops.cast(y_true, "float32"), 0.5), "float32"), (n, -1, r))
        p = ops.reshape(ops.cast(ops.greater(ops.cast(y_pred, "float32"), self.threshold), "float32"), (n, -1, r))
        if sample_weight is None:
            w = ops.ones_like(t[..., :1])
        else:
            w = ops.cast(sample_weight, "float32")
            w = ops.reshape(w, (n, 1, 1)) if len(w.shape) == 1 else ops.reshape(w, (n, -1, 1))
        tp = ops.sum(t * p * w, axis=(0, 1))
        fp = ops.sum((1.0 - t) * p * w, axis=(0, 1))
        fn = ops.sum(t * (1.0 - p) * w, axis=(0, 1))
        self.counts.assign(self.counts + ops.stack([tp, fp, fn]))

    def per_region(self):
        """Dice per region so far, `(R,)` float32; NaN for a region absent from target and prediction."""
        tp, fp, fn = ops.unstack(ops.convert_to_tensor(self.counts), axis=0)
        denominator = 2.0 * tp + fp + fn
        return ops.where(denominator > 0, 2.0 * tp / ops.maximum(denominator, 1e-9), float("nan"))

    def result(self):
        dice = self.per_region()
        valid = ops.logical_not(ops.isnan(dice))
        if self.region is not None:
            return ops.where(valid[self.region], dice[self.region], 1.0)
        return ops.sum(ops.where(valid, dice, 0.0)) / ops.maximum(ops.sum(ops.cast(valid, "float32")), 1.0)

    def reset_state(self):
        self.counts.assign(ops.zeros(self.counts.shape, self.counts.dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"num_regions": self.num_regions, "threshold": self.threshold, "region": self.region})
        return config


def segmentation_metrics(num_classes):
    """Metrics for `compile`: accuracy, mean IoU and mean Dice.

    Args:
        num_classes: 1 for a one-channel sigmoid head (binary problem, class 1
            = foreground, threshold 0.5), >= 2 for a softmax head with integer
            labels.

    Returns:
        list of Keras metrics named `accuracy`, `mean_iou`, `mean_dice`.
    """
    if num_classes == 1:
        return [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.BinaryIoU(target_class_ids=[0, 1], threshold=0.5, name="mean_iou"),
            MeanDice(num_classes=2, threshold=0.5, name="mean_dice"),
        ]
    return [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        MeanIoU(num_classes=num_classes, sparse_y_pred=False, name="mean_iou"),
        MeanDice(num_classes=num_classes, name="mean_dice"),
    ]


def to_labels(y_pred, threshold=0.5):
    """Class ids from a prediction: argmax over the last axis, or a threshold for one channel.

    Args:
        y_pred: NumPy array `(N, *spatial, C)` of scores; `C == 1` means a
            sigmoid output (class 1 where `y_pred > threshold`).
        threshold: threshold for one-channel outputs (default 0.5).

    Returns:
        int32 array `(N, *spatial)`.
    """
    y_pred = np.asarray(y_pred)
    if y_pred.shape[-1] == 1:
        return (y_pred[..., 0] > threshold).astype(np.int32)
    return np.argmax(y_pred, axis=-1).astype(np.int32)


def dice_iou_table(y_true, y_pred, num_classes=None):
    """Per-class Dice and IoU over a whole set of label maps.

    Args:
        y_true: int array `(N, *spatial)` of class ids.
        y_pred: int array of class ids with the shape of `y_true`, or scores
            `(N, *spatial, C)` (argmax; a single channel is thresholded at 0.5).
        num_classes: number of classes (default: `max(y_true, y_pred) + 1`).

    Returns:
        dict with `classes` (list of ids), `dice`, `iou`, `support` (true pixel
        count) as float arrays per class - NaN for a class that appears
        neither in `y_true` nor in `y_pred` - and `mean_dice`, `mean_iou`
        (NaN-ignoring means over classes) and `accuracy`.

    Raises:
        ValueError: shapes do not match, or labels outside `0..num_classes-1`.

    Example:

    >>> t = keras_medseg.metrics.dice_iou_table([[0, 1, 1]], [[0, 1, 0]])
    >>> float(t["iou"][1])
    0.5
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == y_true.ndim + 1:
        y_pred = to_labels(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            "`y_pred` must be class ids shaped like `y_true` or scores with one more (class) axis. "
            f"Received: y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}"
        )
    y_true = y_true.astype(np.int64).ravel()
    y_pred = y_pred.astype(np.int64).ravel()
    if num_classes is None:
        num_classes = int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"`{name}` holds class ids outside 0..{num_classes - 1}. "
                f"Received: min={arr.min()}, max={arr.max()}, num_classes={num_classes}"
            )
    cm = np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    tp = np.diag(cm).astype(np.float64)
    return _table(tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp, cm.sum(axis=1), float(tp.sum() / max(cm.sum(), 1)))


def _table(tp, fp, fn, support, accuracy):
    """`dice_iou_table`'s dict from per-class (or per-region) counts: NaN where a class is in neither array."""
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    mean = lambda a: float(np.nanmean(a)) if np.any(~np.isnan(a)) else float("nan")  # noqa: E731
    return {"classes": list(range(len(tp))), "dice": dice, "iou": iou, "support": support, "mean_dice": mean(dice),
            "mean_iou": mean(iou), "accuracy": accuracy}


def multilabel_dice_iou_table(y_true, y_pred, threshold=0.5):
    """Per-region Dice and IoU of sigmoid region channels over a whole set, in `dice_iou_table`'s format.

    Args:
        y_true: `(..., R)` 0/1 region masks (e.g. `regions_from_labels` of the label maps).
        y_pred: `(..., R)` 0/1 masks or probabilities (thresholded at `threshold`), same shape.
        threshold: probability above which a voxel is in a region (default 0.5).

    Returns:
        dict with `classes` (region indices), `dice`, `iou`, `support` (target voxels) per region - NaN
        for a region in neither array - `mean_dice`, `mean_iou` (NaN-ignoring) and `accuracy` (share of
        voxel-region pairs right). `format_table(table, class_names=[...region names])` prints it.

    Raises:
        ValueError: shapes differ.

    Example:

    >>> t = keras_medseg.metrics.multilabel_dice_iou_table([[1, 1], [0, 1]], [[1, 0], [0, 1]])
    >>> t["dice"].tolist()
    [1.0, 0.6666666666666666]
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim < 1:
        raise ValueError("`y_true` and `y_pred` must be region masks of one shape (..., R). "
                         f"Received: y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}")
    r = y_true.shape[-1]
    t = y_true.reshape(-1, r) > 0.5
    p = y_pred.reshape(-1, r) > threshold
    tp = np.sum(t & p, axis=0).astype(np.float64)
    fp = np.sum(~t & p, axis=0).astype(np.float64)
    fn = np.sum(t & ~p, axis=0).astype(np.float64)
    return _table(tp, fp, fn, t.sum(axis=0), float(np.mean(t == p)) if t.size else float("nan"))


def format_table(tables, class_names=None):
    """Text table of one or several `dice_iou_table` results, side by side.

    Args:
        tables: a `dice_iou_table` result, or `{column_name: result}`.
        class_names: optional names for the class rows (default `class 0`...).

    Returns:
        str: one row per class plus `mean` and `accuracy`, columns
        `<name> Dice` and `<name> IoU` for every table.
    """
    if "iou" in tables and "dice" in tables:
        tables = {"": tables}
    names = list(tables)
    classes = tables[names[0]]["classes"]
    class_names = class_names or [f"class {c}" for c in classes]
    header = ["class"]
    for n in names:
        header += [f"{n} Dice".strip(), f"{n} IoU".strip()]
    rows = []
    for i, c in enumerate(class_names):
        row = [c]
        for n in names:
            row += [f"{tables[n]['dice'][i]:.3f}", f"{tables[n]['iou'][i]:.3f}"]
        rows.append(row)
    mean_row = ["mean"]
    acc_row = ["accuracy"]
    for n in names:
        mean_row += [f"{tables[n]['mean_dice']:.3f}", f"{tables[n]['mean_iou']:.3f}"]
        acc_row += [f"{tables[n]['accuracy']:.4f}", ""]
    rows += [mean_row, acc_row]
    widths = [max(len(r[j]) for r in [header] + rows) for j in range(len(header))]
    fmt = lambda r: "  ".join(s.ljust(w) if j == 0 else s.rjust(w) for j, (s, w) in enumerate(zip(r, widths)))  # noqa: E731
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    return "\n".join(lines)
