"""Free-response ROC (FROC) for patch classifiers on whole-slide images.

A tumour counts as detected at threshold `t` when at least one of its patches
scores `>= t`; a false positive is a patch scoring `>= t` on a normal
(cancer-free) slide. The FROC curve plots sensitivity (share of detected
tumours) against the average number of false positives per normal slide.

Reference: the lecture "Convolutional networks - theory" (whole-slide-image
cancer detection, "Model evaluation -
attempt 3 - FROC"); the summary score is the CAMELYON16 one (mean
sensitivity at 1/4, 1/2, 1, 2, 4 and 8 false positives per normal slide).
"""

import collections

import numpy as np

from keras_medseg.utils.validation import check_choice

FROCCurve = collections.namedtuple("FROCCurve", ["avg_fp", "sensitivity", "thresholds"])

DEFAULT_FP_RATES = (0.25, 0.5, 1, 2, 4, 8)


def _as_1d(x, name, n=None):
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be one-dimensional (one entry per patch). Received: {name}.shape={arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"`{name}` must have one entry per patch ({n}). Received: {name} with {arr.shape[0]} entries"
        )
    return arr


def _check_inputs(scores, tumor_ids, slide_ids, normal_slide_ids):
    scores = _as_1d(scores, "scores").astype(np.float64)
    n = scores.shape[0]
    if n == 0:
        raise ValueError("`scores` is empty: FROC needs at least one patch. Received: scores.shape=(0,)")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"`scores` must be finite. Received: {int(np.sum(~np.isfinite(scores)))} non-finite scores")
    tumor_ids = _as_1d(tumor_ids, "tumor_ids", n)
    if not np.issubdtype(tumor_ids.dtype, np.integer):
        raise TypeError(f"`tumor_ids` must be integers (-1 = no tumour). Received: dtype={tumor_ids.dtype}")
    slide_ids = _as_1d(slide_ids, "slide_ids", n)
    normal = np.unique(np.asarray(list(normal_slide_ids) if not isinstance(normal_slide_ids, np.ndarray)
                                  else normal_slide_ids))
    if normal.size == 0:
        raise ValueError(
            "`normal_slide_ids` is empty: the average number of false positives per normal slide "
            "is undefined. Received: normal_slide_ids=[]"
        )
    is_normal = np.isin(slide_ids, normal)
    in_tumor = tumor_ids >= 0
    bad = np.unique(slide_ids[is_normal & in_tumor])
    if bad.size:
        raise ValueError(
            f"Normal slides must not contain tumour patches. Received: tumour patches on normal slides {bad.tolist()}"
        )
    if not np.any(in_tumor):
        raise ValueError("No tumour patches (all `tumor_ids` < 0): sensitivity is undefined.")
    return scores, tumor_ids, slide_ids, normal, is_normal, in_tumor


def _tumor_max_scores(scores, tumor_ids, slide_ids, in_tumor):
    """Highest patch score of every tumour; a tumour is the pair (slide, tumour id)."""
    s = scores[in_tumor]
    keys = np.stack([np.unique(slide_ids, return_inverse=True)[1].reshape(-1)[in_tumor], tumor_ids[in_tumor]], 1)
    _, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    best = np.full(inv.max() + 1, -np.inf)
    np.maximum.at(best, inv, s)
    return best


def froc_curve(scores, tumor_ids, slide_ids, normal_slide_ids, thresholds=None):
    """FROC curve: average false positives per normal slide and sensitivity per threshold.

    Args:
        scores: `(N,)` patch probabilities (any real scores).
        tumor_ids: `(N,)` integers, the tumour a patch belongs to, `-1` (any
            negative) for a patch outside every tumour. Ids need only be
            unique within a slide: a tumour is the pair `(slide id, tumour id)`.
        slide_ids: `(N,)` slide of every patch (ints or strings).
        normal_slide_ids: the cancer-free slides. Every one counts in the
            average, also one without patches in `scores`.
        thresholds: decision thresholds; default `None` uses `inf` followed by
            every distinct score in decreasing order (like
            `sklearn.metrics.roc_curve`), which gives the full curve.

    Returns:
        `FROCCurve(avg_fp, sensitivity, thresholds)` of NumPy arrays sorted by
        decreasing threshold, so `avg_fp` and `sensitivity` never decrease.
        `avg_fp[i]` = number of normal-slide patches with score `>= t_i`
        divided by the number of normal slides; `sensitivity[i]` = share of
        tumours with at least one patch scored `>= t_i`.

    Raises:
        ValueError: mismatched lengths, non-finite scores, no normal slide,
            no tumour, or a tumour patch on a normal slide.
        TypeError: non-integer `tumor_ids`.

    Example:

    >>> c = keras_medseg.evaluation.froc_curve(
    ...     [0.9, 0.2, 0.6], [0, -1, -1], ["a", "a", "b"], normal_slide_ids=["b"])
    >>> c.avg_fp, c.sensitivity   # thresholds inf, 0.9, 0.6, 0.2
    (array([0., 0., 1., 1.]), array([0., 1., 1., 1.]))

    Reference: the lecture "Convolutional networks - theory" (FROC: sensitivity
    vs AvgFP per non-cancerous slide).
    """
    scores, tumor_ids, slide_ids, normal, is_normal, in_tumor = _check_inputs(
        scores, tumor_ids, slide_ids, normal_slide_ids
    )
    if thresholds is None:
        thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    else:
        thresholds = np.sort(_as_1d(thresholds, "thresholds").astype(np.float64))[::-1]
        if thresholds.size == 0:
            raise ValueError("`thresholds` is empty. Received: thresholds=[]")
    fp_scores = np.sort(scores[is_normal])
    tumor_best = np.sort(_tumor_max_scores(scores, tumor_ids, slide_ids, in_tumor))
    # Number of values >= t = size - (number of values < t).
    n_fp = fp_scores.size - np.searchsorted(fp_scores, thresholds, side="left")
    n_hit = tumor_best.size - np.searchsorted(tumor_best, thresholds, side="left")
    return FROCCurve(
        avg_fp=n_fp / normal.size,
        sensitivity=n_hit / tumor_best.size,
        thresholds=thresholds,
    )


def sensitivity_at(avg_fp, sensitivity, fp_rates=DEFAULT_FP_RATES, interpolation="step"):
    """Sensitivity of a FROC curve at given average false-positive rates.

    Args:
        avg_fp, sensitivity: a curve as returned by `froc_curve`.
        fp_rates: average false positives per normal slide to read off.
        interpolation: `"step"` (default) = the best sensitivity of an
            operating point (threshold) whose average FP is `<= rate`, i.e.
            one you can actually choose; `"linear"` = linear interpolation of
            the curve between operating points (CAMELYON16 evaluation
            script), clamped at the ends.

    Returns:
        `(len(fp_rates),)` float64 array.
    """
    check_choice(interpolation, "interpolation", ("step", "linear"))
    avg_fp = np.asarray(avg_fp, np.float64)
    sensitivity = np.asarray(sensitivity, np.float64)
    rates = np.asarray(fp_rates, np.float64).reshape(-1)
    if rates.size == 0 or np.any(~np.isfinite(rates)) or np.any(rates < 0):
        raise ValueError(f"`fp_rates` must be a non-empty list of finite rates >= 0. Received: fp_rates={fp_rates!r}")
    # Best sensitivity for every distinct FP level (ties come from thresholds
    # that only add tumour patches).
    levels, inv = np.unique(avg_fp, return_inverse=True)
    best = np.full(levels.size, -np.inf)
    np.maximum.at(best, inv.reshape(-1), sensitivity)
    best = np.maximum.accumulate(best)
    if interpolation == "linear":
        return np.interp(rates, levels, best)
    idx = np.searchsorted(levels, rates, side="right") - 1
    return np.where(idx >= 0, best[np.clip(idx, 0, None)], 0.0)


def froc_score(scores, tumor_ids, slide_ids, normal_slide_ids, fp_rates=DEFAULT_FP_RATES,
               interpolation="step", return_sensitivities=False):
    """Mean FROC sensitivity at several average false-positive rates (CAMELYON16 score).

    Args:
        scores, tumor_ids, slide_ids, normal_slide_ids: as in `froc_curve`.
        fp_rates: average false positives per normal slide, default
            `(0.25, 0.5, 1, 2, 4, 8)`.
        interpolation: `"step"` (default): at each rate take the best
            sensitivity among thresholds with average FP `<= rate`;
            `"linear"`: interpolate the curve linearly (see `sensitivity_at`).
        return_sensitivities: also return the per-rate sensitivities.

    Returns:
        The mean sensitivity (float in [0, 1]), or `(score, sensitivities)`.

    Raises:
        ValueError: as `froc_curve`, or bad `fp_rates` / `interpolation`.

    Example:

    >>> keras_medseg.evaluation.froc_score(
    ...     [0.9, 0.2, 0.6], [0, -1, -1], ["a", "a", "b"], ["b"])
    1.0
    """
    curve = froc_curve(scores, tumor_ids, slide_ids, normal_slide_ids)
    sens = sensitivity_at(curve.avg_fp, curve.sensitivity, fp_rates, interpolation)
    score = float(np.mean(sens))
    return (score, sens) if return_sensitivities else score
