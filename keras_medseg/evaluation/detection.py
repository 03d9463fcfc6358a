"""Free-response ROC (FROC) for box detectors, 2D and 3D.

At threshold `t` the detections with score `>= t` are kept. A ground-truth
box is found when at least one kept detection hits it; a kept detection that
hits no ground-truth box is a false positive. A detection hits a box when
their IoU is `>= iou_threshold` (`hit="iou"`) or when the detection's centre
lies inside the box, borders included (`hit="centre"`). Several detections
of the same box count once and are not false positives (the LUNA16 /
CAMELYON16 convention). The curve is sensitivity (share of ground-truth boxes
found) against the average number of false positives per image.

Box conventions are those of `keras_medseg.boxes`.

Reference: A. Yala, "Advanced Imaging: Localization and Segmentation" (lecture,
CPH 100A; bounding-box detection) and the lecture "Convolutional networks -
theory" (FROC for cancer detection in whole-slide images).
"""

import numpy as np
from keras import ops

from keras_medseg import boxes as box_utils
from keras_medseg.evaluation.froc import FROCCurve
from keras_medseg.utils.validation import check_choice


def _per_image(arrays, name, n_images, width=None, scores=False):
    if isinstance(arrays, np.ndarray) and arrays.ndim == (2 if scores else 3):
        arrays = list(arrays)
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"`{name}` must be a list with one array per image. Received: {type(arrays).__name__}")
    if n_images is not None and len(arrays) != n_images:
        raise ValueError(
            f"`{name}` must have one entry per image ({n_images}). Received: {name} with {len(arrays)} entries"
        )
    out = []
    for i, a in enumerate(arrays):
        a = np.asarray(ops.convert_to_numpy(a) if not isinstance(a, (np.ndarray, list, tuple)) else a, "float64")
        if scores:
            a = a.reshape(-1)
        else:
            if a.size == 0:
                a = a.reshape(0, width or 4)
            if a.ndim != 2 or a.shape[1] not in (4, 6) or (width is not None and a.shape[1] != width):
                raise ValueError(
                    f"`{name}[{i}]` must have shape (K, {width or '4 or 6'}) (2D or 3D boxes, all the same). "
                    f"Received: {name}[{i}].shape={a.shape}"
                )
            width = a.shape[1]
        out.append(a)
    return out, width


def _hits(pred, gt, hit, iou_threshold, box_format):
    """Boolean `(P, G)`: does detection p hit ground-truth box g."""
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros((len(pred), len(gt)), bool)
    if hit == "iou":
        iou = np.asarray(ops.convert_to_numpy(box_utils.compute_iou(pred.astype("float32"), gt.astype("float32"),
                                                                    box_format=box_format)))
        return iou >= iou_threshold
    d = pred.shape[1] // 2
    p_c = np.asarray(ops.convert_to_numpy(box_utils.convert_format(pred, box_format, "center")), "float64")
    g = np.asarray(ops.convert_to_numpy(box_utils.convert_format(gt, box_format, "corners")), "float64")
    c = p_c[:, None, :d]
    return np.all((c >= g[None, :, :d]) & (c <= g[None, :, d:]), axis=-1)


def detection_froc(pred_boxes, pred_scores, gt_boxes, hit="iou", iou_threshold=0.5, thresholds=None,
                   box_format="center"):
    """FROC curve of a box detector: average false positives per image and sensitivity per threshold.

    Args:
        pred_boxes: list (one per image) of `(P_i, 4)` (2D) or `(P_i, 6)` (3D)
            detections, e.g. the first output of
            `keras_medseg.zoo.fpn_detector.BoxCoder.decode`.
        pred_scores: list of `(P_i,)` detection scores.
        gt_boxes: list of `(G_i, 4)` or `(G_i, 6)` ground-truth boxes (same dims).
        hit: `"iou"` (default; IoU `>= iou_threshold`) or `"centre"` (the
            detection's centre lies inside the ground-truth box).
        iou_threshold: float in (0, 1], default 0.5 (used by `hit="iou"`).
        thresholds: score thresholds; default `None` uses `inf` followed by
            every distinct score in decreasing order (the full curve).
        box_format: `"center"` (default) or `"corners"`, see `keras_medseg.boxes`.

    Returns:
        `FROCCurve(avg_fp, sensitivity, thresholds)` (the same named tuple as
        `keras_medseg.evaluation.froc_curve`, so `sensitivity_at` and
        `plot_froc` accept it), NumPy arrays sorted by decreasing threshold.

    Raises:
        ValueError: lists of different lengths, boxes without 4/6 values or
            mixing 2D and 3D, scores not matching the boxes, non-finite scores,
            no ground-truth box at all, bad `hit` / `iou_threshold`.
        TypeError: inputs that are not lists of arrays.

    Example:

    ```python
    gt = [np.array([[5.0, 5.0, 4.0, 4.0]])]
    pred = [np.array([[5.0, 5.0, 4.0, 4.0], [20.0, 20.0, 4.0, 4.0]])]
    c = keras_medseg.evaluation.detection_froc(pred, [np.array([0.9, 0.8])], gt)
    c.avg_fp, c.sensitivity   # thresholds inf, 0.9, 0.8 -> ([0, 0, 1], [0, 1, 1])
    ```

    Reference: A. Yala, "Advanced Imaging: Localization and Segmentation" (box
    detection); FROC as in the lecture "Convolutional networks - theory".
    """
    check_choice(hit, "hit", ("iou", "centre"))
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"`iou_threshold` must be in (0, 1]. Received: iou_threshold={iou_threshold}")
    box_utils.check_box_format(box_format)
    gts, width = _per_image(gt_boxes, "gt_boxes", None)
    preds, width = _per_image(pred_boxes, "pred_boxes", len(gts), width=width)
    scores, _ = _per_image(pred_scores, "pred_scores", len(gts), scores=True)
    for i, (p, s) in enumerate(zip(preds, scores)):
        if len(s) != len(p):
            raise ValueError(
                f"`pred_scores[{i}]` must have one score per box of `pred_boxes[{i}]` ({len(p)}). "
                f"Received: {len(s)} scores"
            )
        if not np.all(np.isfinite(s)):
            raise ValueError(f"`pred_scores[{i}]` must be finite. Received: {s.tolist()}")
    n_gt = sum(len(g) for g in gts)
    if n_gt == 0:
        raise ValueError("`gt_boxes` holds no box: sensitivity is undefined. Received: 0 ground-truth boxes")
    fp_scores, gt_best = [], []
    for p, s, g in zip(preds, scores, gts):
        h = _hits(p, g, hit, iou_threshold, box_format)
        fp_scores.append(s[~h.any(axis=1)])
        best = np.where(h, s[:, None], -np.inf).max(axis=0) if len(p) else np.full(len(g), -np.inf)
        gt_best.append(best)
    fp_scores = np.sort(np.concatenate(fp_scores))
    gt_best = np.sort(np.concatenate(gt_best))
    all_scores = np.concatenate(scores)
    if thresholds is None:
        thresholds = np.concatenate([[np.inf], np.unique(all_scores)[::-1]])
    else:
        thresholds = np.sort(np.asarray(thresholds, "float64").reshape(-1))[::-1]
        if thresholds.size == 0:
            raise ValueError("`thresholds` is empty. Received: thresholds=[]")
    n_fp = fp_scores.size - np.searchsorted(fp_scores, thresholds, side="left")
    n_hit = gt_best.size - np.searchsorted(gt_best, thresholds, side="left")
    return FROCCurve(avg_fp=n_fp / len(gts), sensitivity=n_hit / n_gt, thresholds=thresholds)
