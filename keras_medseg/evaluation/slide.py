"""Slide-level prediction from patch scores (slide positive iff its best patch is).

Reference: the lecture "Convolutional networks - theory" (cancer detection in
whole-slide images: "Predict WSI positive iff at least one patch I satisfies
F(I) >= t").
"""

import collections

import numpy as np
from sklearn.metrics import roc_auc_score

from keras_medseg.evaluation.froc import DEFAULT_FP_RATES, _as_1d, froc_score

SlidePrediction = collections.namedtuple("SlidePrediction", ["slide_ids", "scores", "predictions"])


def slide_scores(scores, slide_ids):
    """Maximum patch score of every slide.

    Args:
        scores: `(N,)` patch scores.
        slide_ids: `(N,)` slide of each patch.

    Returns:
        `(ids, max_scores)`: the distinct slide ids (sorted) and their
        maximum patch score.
    """
    scores = _as_1d(scores, "scores").astype(np.float64)
    slide_ids = _as_1d(slide_ids, "slide_ids", scores.shape[0])
    if scores.size == 0:
        raise ValueError("`scores` is empty. Received: scores.shape=(0,)")
    ids, inv = np.unique(slide_ids, return_inverse=True)
    best = np.full(ids.size, -np.inf)
    np.maximum.at(best, inv.reshape(-1), scores)
    return ids, best


def slide_level(scores, slide_ids, threshold=0.5):
    """Slide-level prediction: a slide is positive iff its maximum patch score is `>= threshold`.

    Args:
        scores: `(N,)` patch probabilities.
        slide_ids: `(N,)` slide of each patch.
        threshold: decision threshold `t`, default 0.5.

    Returns:
        `SlidePrediction(slide_ids, scores, predictions)`: sorted distinct
        slide ids, their maximum patch score and boolean predictions.

    Raises:
        ValueError: mismatched lengths, empty input or a non-finite threshold.

    Example:

    >>> p = keras_medseg.evaluation.slide_level([0.1, 0.8, 0.3], ["a", "a", "b"], 0.5)
    >>> p.predictions
    array([ True, False])

    Reference: the lecture "Convolutional networks - theory" (whole-slide images).
    """
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"`threshold` must be finite. Received: threshold={threshold}")
    ids, best = slide_scores(scores, slide_ids)
    return SlidePrediction(ids, best, best >= threshold)


def _slide_labels(ids, slide_ids, slide_labels):
    if isinstance(slide_labels, dict):
        missing = [s for s in ids.tolist() if s not in slide_labels]
        if missing:
            raise ValueError(f"`slide_labels` has no label for slides {missing[:5]}.")
        return np.asarray([int(slide_labels[s]) for s in ids.tolist()])
    labels = _as_1d(slide_labels, "slide_labels", len(slide_ids))
    _, per_slide = slide_scores(labels.astype(np.float64), slide_ids)
    return (per_slide > 0).astype(int)


def slide_roc_auc(scores, slide_ids, slide_labels):
    """ROC-AUC of the slide-level prediction (max patch score per slide).

    Args:
        scores: `(N,)` patch scores.
        slide_ids: `(N,)` slide of each patch.
        slide_labels: a `{slide_id: 0/1}` dict, or `(N,)` per-patch labels (a
            slide is positive iff one of its patches is).

    Returns:
        `sklearn.metrics.roc_auc_score` of slide labels vs. slide scores.

    Raises:
        ValueError: a slide without a label, or all slides of one class.
    """
    ids, best = slide_scores(scores, slide_ids)
    y = _slide_labels(ids, _as_1d(slide_ids, "slide_ids"), slide_labels)
    if np.unique(y).size < 2:
        raise ValueError(
            f"Slide-level ROC-AUC needs positive and negative slides. Received: {ids.size} slides, all labelled {y[0]}"
        )
    return float(roc_auc_score(y, best))


def froc_report(scores, tumor_ids, slide_ids, labels, fp_rates=DEFAULT_FP_RATES, threshold=0.5,
                interpolation="step"):
    """FROC and slide-level summary of patch scores, as one dict (used by `keras-medseg evaluate --froc`).

    Normal slides are the slides without a positive patch label.

    Args:
        scores, tumor_ids, slide_ids: as in `froc_curve`.
        labels: `(N,)` 0/1 patch labels.
        fp_rates: FROC rates, default `(0.25, 0.5, 1, 2, 4, 8)`.
        threshold: slide-level threshold.
        interpolation: see `froc_score`.

    Returns:
        dict with `froc` (mean sensitivity), `sensitivity_at` (`{rate: sens}`),
        `slide_roc_auc` (None when all slides share a class), `slide_accuracy`
        at `threshold`, `num_slides`, `num_normal_slides`, `num_tumors`.
    """
    labels = _as_1d(labels, "labels", len(np.asarray(scores)))
    slide_ids = _as_1d(slide_ids, "slide_ids", len(labels))
    tumor_ids = np.asarray(tumor_ids)
    ids, pos = slide_scores(labels.astype(np.float64), slide_ids)
    normal = ids[pos <= 0]
    out = {"num_slides": int(ids.size), "num_normal_slides": int(normal.size)}
    keys = {(s, t) for s, t in zip(slide_ids[tumor_ids >= 0].tolist(), tumor_ids[tumor_ids >= 0].tolist())}
    out["num_tumors"] = len(keys)
    if normal.size and keys:
        score, sens = froc_score(scores, tumor_ids, slide_ids, normal, fp_rates, interpolation,
                                 return_sensitivities=True)
        out["froc"] = score
        out["sensitivity_at"] = {float(r): float(s) for r, s in zip(fp_rates, sens)}
    else:
        out["froc"] = None
        out["sensitivity_at"] = {}
    pred = slide_level(scores, slide_ids, threshold)
    out["slide_accuracy"] = float(np.mean(pred.predictions == (pos > 0)))
    out["slide_roc_auc"] = slide_roc_auc(scores, slide_ids, labels) if 0 < normal.size < ids.size else None
    return out
