"""Per-class segmentation metrics in millimetres: Dice, IoU, HD95, ASSD, surface Dice.

Definitions (for one class, prediction mask P and truth mask T on one grid
with voxel size `spacing` in mm):

* surface of a mask: its voxels with at least one face neighbour (6-connected
  in 3D, 4-connected in 2D) outside the mask; the image border counts as
  outside;
* `d(x, S)`: Euclidean distance in mm from voxel centre x to the nearest
  voxel centre of surface S (scipy's exact Euclidean distance transform with
  `sampling=spacing`);
* `dice = 2|P & T| / (|P| + |T|)`, `iou = |P & T| / |P | T|`;
* `hd95 = max(q95{d(p, dT): p in dP}, q95{d(t, dP): t in dT})`, the larger of
  the two directed 95th percentiles (numpy's linear percentile);
* `assd` = mean of all distances of both directions together
  (`(sum_p d(p, dT) + sum_t d(t, dP)) / (|dP| + |dT|)`);
* `surface_dice` at tolerance tau mm (Nikolov et al.): the fraction of
  surface voxels of both masks lying within tau of the other surface,
  `(#{p: d(p, dT) <= tau} + #{t: d(t, dP) <= tau}) / (|dP| + |dT|)`
  (voxel counting, not mesh areas).

Empty masks (documented values): both empty -> dice = iou = surface_dice = 1,
hd95 = assd = 0 (a correct "nothing here"); exactly one empty -> dice = iou =
surface_dice = 0, hd95 = assd = inf (there is no surface to measure to).
"""

import numpy as np

__all__ = ["METRIC_NAMES", "binary_surface_metrics", "segmentation_metrics", "summarize_metrics"]

METRIC_NAMES = ("dice", "iou", "hd95", "assd", "surface_dice")


def _surface(mask):
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def _crop_box(a, b):
    both = a | b
    idx = [np.flatnonzero(both.any(axis=tuple(j for j in range(both.ndim) if j != i))) for i in range(both.ndim)]
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)


def binary_surface_metrics(prediction, truth, spacing=None, tolerance=1.0):
    """Dice, IoU, HD95, ASSD and surface Dice of two binary masks.

    Args:
        prediction: bool array `(*S)` (2D or 3D).
        truth: bool array of the same shape.
        spacing: sequence of float, mm per axis; default 1 mm for every axis.
        tolerance: float, surface Dice tolerance in mm (default 1.0).

    Returns:
        dict with keys `dice`, `iou`, `hd95`, `assd` (mm), `surface_dice`.
        See the module docstring for the definitions and the empty-mask values.
    """
    from scipy import ndimage

    p, t = np.asarray(prediction, bool), np.asarray(truth, bool)
    np_, nt = int(p.sum()), int(t.sum())
    if np_ == 0 and nt == 0:
        return {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "assd": 0.0, "surface_dice": 1.0}
    inter = int((p & t).sum())
    dice = 2.0 * inter / (np_ + nt)
    iou = inter / (np_ + nt - inter)
    if np_ == 0 or nt == 0:
        return {"dice": dice, "iou": iou, "hd95": float("inf"), "assd": float("inf"), "surface_dice": 0.0}
    # Work in the bounding box of both masks: every surface voxel is inside it, so the
    # distances to the nearest surface voxel are unchanged.  One voxel of margin keeps
    # the border-as-outside rule from marking box-edge voxels that are not at the image edge.
    box = _crop_box(p, t)
    pad_box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
    p, t = p[pad_box], t[pad_box]
    sp, st = _surface(p), _surface(t)
    sampling = tuple(float(s) for s in spacing) if spacing is not None else None
    d_to_t = ndimage.distance_transform_edt(~st, sampling=sampling)
    d_to_p = ndimage.distance_transform_edt(~sp, sampling=sampling)
    a, b = d_to_t[sp], d_to_p[st]
    hd95 = max(float(np.percentile(a, 95)), float(np.percentile(b, 95)))
    assd = float((a.sum() + b.sum()) / (a.size + b.size))
    sdice = float(((a <= tolerance).sum() + (b <= tolerance).sum()) / (a.size + b.size))
    return {"dice": dice, "iou": iou, "hd95": hd95, "assd": assd, "surface_dice": sdice}


def segmentation_metrics(prediction, truth, spacing=None, classes=None, tolerance=1.0, ignore_index=None):
    """Per-class Dice, IoU, HD95, ASSD and surface Dice of two label maps, in mm.

    Args:
        prediction: int array `(*S)`, predicted class ids (2D or 3D).
        truth: int array `(*S)`, reference class ids.
        spacing: sequence of float, mm per axis (default 1 mm each), e.g. the
            `spacing` of the `ImageRecord` both maps are on.
        classes: iterable of class ids to score, or a dict `{id: name}`.
            Default: every id > 0 found in either map (background 0 is not
            scored).
        tolerance: float, surface Dice tolerance in mm (default 1.0).
        ignore_index: int or None; voxels where `truth == ignore_index` are
            left out of every metric.

    Returns:
        dict `{class_name: {"dice", "iou", "hd95", "assd", "surface_dice"}}`
        (`class_name` is the dict value given in `classes`, else the id as
        str). Empty masks: see the module docstring.

    Raises:
        ValueError: shapes differ, or `spacing` does not have one positive
            value per axis (named).

    Example:
    >>> m = keras_medseg.evaluation.segmentation_metrics(pred, gt, spacing=(0.7, 0.7, 5.0))  # doctest: +SKIP
    >>> m["1"]["hd95"]  # doctest: +SKIP

    Reference: Nikolov et al., "Deep learning to achieve clinically applicable
    segmentation of head and neck anatomy for radiotherapy" (surface Dice);
    checked against a brute-force surface-distance reference in the tests.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(
            f"`prediction` and `truth` must have one shape. Received: prediction.shape={prediction.shape}, "
            f"truth.shape={truth.shape}"
        )
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != truth.ndim or any(not np.isfinite(s) or s <= 0 for s in spacing):
            raise ValueError(
                f"`spacing` must hold one positive mm value per axis ({truth.ndim}). Received: spacing={spacing}"
            )
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"`tolerance` must be a finite number of mm >= 0. Received: tolerance={tolerance}")
    if classes is None:
        ids = sorted(set(np.unique(prediction).tolist()) | set(np.unique(truth).tolist()))
        ids = [i for i in ids if i > 0 and i != ignore_index]
        classes = {i: str(i) for i in ids}
    elif not isinstance(classes, dict):
        classes = {int(i): str(i) for i in classes}
    valid = None if ignore_index is None else truth != ignore_index
    out = {}
    for cid, name in classes.items():
        p, t = prediction == cid, truth == cid
        if valid is not None:
            p, t = p & valid, t & valid
        out[name] = binary_surface_metrics(p, t, spacing=spacing, tolerance=tolerance)
    return out


def summarize_metrics(per_case):
    """Mean, median and count over cases for each class and metric.

    Args:
        per_case: dict `{case: segmentation_metrics(...) result}`.

    Returns:
        dict `{class_name: {metric: {"mean", "median", "n", "n_infinite"}}}`;
        mean and median are over the cases with a finite value (a case where
        exactly one mask is empty has infinite HD95/ASSD and is counted in
        `n_infinite`, not averaged).
    """
    out = {}
    for metrics in per_case.values():
        for cname, values in metrics.items():
            for m, v in values.items():
                out.setdefault(cname, {}).setdefault(m, []).append(v)
    summary = {}
    for cname, by_metric in out.items():
        summary[cname] = {}
        for m, vals in by_metric.items():
            arr = np.asarray(vals, dtype=float)
            fin = arr[np.isfinite(arr)]
            summary[cname][m] = {
                "mean": float(fin.mean()) if fin.size else float("nan"),
                "median": float(np.median(fin)) if fin.size else float("nan"),
                "n": int(arr.size),
                "n_infinite": int(arr.size - fin.size),
            }
    return summary
