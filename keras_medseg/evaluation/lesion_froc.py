"""Lesion-level FROC of whole-slide probability maps under the CAMELYON16 protocol.

`lesion_froc(prob_maps, tumor_masks, mpp, protocol="camelyon16")` scores a
cohort the way the CAMELYON16 challenge did, so numbers compare with
published ones:

1. **Candidates** from each probability map by non-maximum suppression: take
   the highest pixel above `prob_threshold` (0.5), record it, blank a
   `box_size` square around it, repeat.
2. **Lesions** from each ground-truth mask: tumour pixels grown by half of
   `grow_um` (75 um, about 5 tumour cells; the challenge's evaluation code
   halves it), holes filled, 8-connected components. Components whose major
   axis is below `itc_um + grow_um` (200 + 75 um) are *isolated tumour
   cells*: a candidate on one is neither a hit nor a false positive, and they
   are not counted as lesions.
3. A candidate on a lesion is a hit (the lesion's score is its best hit); one
   outside every lesion is a false positive, **on every slide** (tumour slides
   included), averaged over all slides. Sensitivity and false positives per
   slide at each distinct candidate probability give the curve; the score is
   the mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8 false positives per slide,
   linearly interpolated (the challenge's evaluation code, including its
   omission of the lowest probability from the curve).

The lecture's protocol (patch-level: a tumour is found when a patch whose
inner square lies on it scores over the threshold; false positives are
patches on normal slides only) is `keras_medseg.evaluation.froc_score`, named
`protocol="lecture"` where both are offered (`keras-medseg evaluate --froc`).

Reference: B. Ehteshami Bejnordi et al., "Diagnostic assessment of deep
learning algorithms for detection of lymph node metastases in women with
breast cancer", JAMA 2017 (CAMELYON16); checked against MONAI's
`monai.apps.pathology.metrics.LesionFROC` on the same maps in the tests.
"""

import numpy as np

from keras_medseg.evaluation.froc import DEFAULT_FP_RATES

__all__ = ["PROTOCOLS", "lesion_froc", "lesion_mask", "nms_candidates"]

#: Lesion-level FROC protocols (`"lecture"` is the patch-level `froc_score`).
PROTOCOLS = ("camelyon16", "lecture")


def nms_candidates(prob_map, prob_threshold=0.5, box_size=48):
    """Detections of a probability map by non-maximum suppression: `(probs (n,), rows (n,), cols (n,))`.

    Repeatedly takes the highest pixel while it is above `prob_threshold`
    (the first in row-major order among ties) and sets the `box_size` square
    starting `box_size // 2` pixels above and left of it to 0.

    Raises:
        ValueError: a map that is not 2D or not finite, or `box_size` < 1.

    Example:

    >>> probs, rows, cols = keras_medseg.evaluation.lesion_froc.nms_candidates(heatmap, box_size=8)

    Reference: the CAMELYON16 evaluation (Ehteshami Bejnordi et al., JAMA 2017).
    """
    p = np.array(prob_map, np.float64, copy=True)
    if p.ndim != 2 or not np.isfinite(p).all():
        raise ValueError(f"`prob_map` must be a finite 2D array (NaN off tissue -> 0). Received: shape={p.shape}")
    box = int(box_size)
    if box < 1:
        raise ValueError(f"`box_size` must be a positive number of map pixels. Received: box_size={box_size!r}")
    lo, hi = box // 2, box - box // 2
    out = []
    while p.size and p.max() > prob_threshold:
        r, c = np.unravel_index(int(np.argmax(p)), p.shape)
        out.append((p[r, c], r, c))
        p[max(0, r - lo):r + hi, max(0, c - lo):c + hi] = 0.0
    if not out:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    probs, rows, cols = (np.asarray(v) for v in zip(*out))
    return probs.astype(np.float64), rows.astype(np.int64), cols.astype(np.int64)


def lesion_mask(tumor_mask, mpp, grow_um=75.0, itc_um=200.0):
    """The lesions of a binary tumour mask: `(labels (H, W) int, itc_labels set)` (see the module docstring).

    Args:
        tumor_mask: `(H, W)` array, non-zero = tumour.
        mpp: float, microns per mask pixel.
        grow_um: float, growth distance in um (half of it is applied), default 75.
        itc_um: float, isolated-tumour-cell diameter in um, default 200.

    Example:

    >>> labels, itc = keras_medseg.evaluation.lesion_froc.lesion_mask(mask, mpp=16.0)

    Reference: the CAMELYON16 evaluation (Ehteshami Bejnordi et al., JAMA 2017).
    """
    from scipy import ndimage
    from skimage import measure

    mask = np.asarray(tumor_mask) != 0
    if mask.ndim != 2:
        raise ValueError(f"`tumor_mask` must be 2D. Received: shape={mask.shape}")
    if not mask.any():
        return np.zeros(mask.shape, np.int64), set()
    grown = ndimage.distance_transform_edt(~mask) < grow_um / (mpp * 2.0)
    labels = measure.label(ndimage.binary_fill_holes(grown), connectivity=2)
    limit = (itc_um + grow_um) / mpp
    itc = {r.label for r in measure.regionprops(labels) if r.axis_major_length < limit}
    return labels, itc


def lesion_froc(prob_maps, tumor_masks, mpp, protocol="camelyon16", fp_rates=DEFAULT_FP_RATES, prob_threshold=0.5,
                box_size=48, grow_um=75.0, itc_um=200.0):
    """CAMELYON16 lesion-level FROC of a cohort's probability maps.

    Args:
        prob_maps: list of `(H_i, W_i)` probability maps, one per slide (NaN
            = not scored, read as 0).
        tumor_masks: list of the same shapes, non-zero = tumour; `None` for a
            normal slide.
        mpp: float or list of floats, microns per map pixel of each slide.
        protocol: `"camelyon16"` (the only lesion-level protocol; the lecture's
            patch-level one is `keras_medseg.evaluation.froc_score`).
        fp_rates: false positives per slide of the score, default 1/4 ... 8.
        prob_threshold, box_size: candidate detection (`nms_candidates`), in map pixels.
        grow_um, itc_um: lesion definition (`lesion_mask`).

    Returns:
        dict: `froc` (score), `sensitivity_at` (per rate), `avg_fp` and
        `sensitivity` (the curve, increasing FP), `thresholds`, `num_lesions`,
        `num_itc` (excluded), `num_slides`, `num_candidates`.

    Raises:
        ValueError: other protocol, mismatched lists or shapes, no lesion in the cohort.

    Example:

    >>> r = keras_medseg.evaluation.lesion_froc([heat_a, heat_b], [mask_a, None], mpp=64 * 0.243)
    >>> r["froc"], r["sensitivity_at"]

    Reference: Ehteshami Bejnordi et al., JAMA 2017 (CAMELYON16); MONAI's `LesionFROC` gives the same numbers.
    """
    if protocol != "camelyon16":
        raise ValueError(f"`protocol` must be 'camelyon16' for probability maps (the lecture's patch-level protocol "
                         f"is keras_medseg.evaluation.froc_score). Received: protocol={protocol!r}")
    prob_maps, tumor_masks = list(prob_maps), list(tumor_masks)
    if len(prob_maps) != len(tumor_masks) or not prob_maps:
        raise ValueError(f"`prob_maps` and `tumor_masks` must be non-empty lists of one entry per slide. Received: "
                         f"{len(prob_maps)} maps and {len(tumor_masks)} masks")
    mpps = list(mpp) if np.ndim(mpp) else [float(mpp)] * len(prob_maps)
    fp_all, tp_all, n_lesions, n_itc, n_cand = [], [], 0, 0, 0
    for i, (pmap, mask) in enumerate(zip(prob_maps, tumor_masks)):
        pmap = np.nan_to_num(np.asarray(pmap, np.float64), nan=0.0)
        probs, rows, cols = nms_candidates(pmap, prob_threshold, box_size)
        n_cand += probs.size
        if mask is None:
            fp_all.append(probs)
            continue
        if np.shape(mask) != pmap.shape:
            raise ValueError(f"Slide {i}: `tumor_masks[{i}]` has shape {np.shape(mask)}, its map {pmap.shape}.")
        labels, itc = lesion_mask(mask, mpps[i], grow_um, itc_um)
        hit = labels[rows, cols]
        fp_all.append(probs[hit == 0])
        for lab in range(1, int(labels.max()) + 1):
            if lab in itc:
                continue
            n_lesions += 1
            tp_all.append(probs[hit == lab].max() if (hit == lab).any() else 0.0)
        n_itc += len(itc)
    if n_lesions == 0:
        raise ValueError("No lesion (beyond isolated tumour cells) in `tumor_masks`: sensitivity is undefined.")
    fp, tp = np.concatenate(fp_all), np.asarray(tp_all, np.float64)
    thresholds = np.unique(np.concatenate([fp, tp]))[1:]  # ascending; the challenge code drops the lowest
    avg_fp = np.array([(fp >= t).sum() for t in thresholds] + [0])[::-1] / len(prob_maps)
    sens = np.array([(tp >= t).sum() for t in thresholds] + [0])[::-1] / n_lesions
    thresholds = np.concatenate([[np.inf], thresholds[::-1]])  # one per curve point, FP increasing
    at = np.interp(np.asarray(fp_rates, np.float64), avg_fp, sens)
    return {"froc": float(at.mean()), "sensitivity_at": dict(zip((float(r) for r in fp_rates), at.tolist())),
            "avg_fp": avg_fp, "sensitivity": sens, "thresholds": thresholds, "num_lesions": n_lesions,
            "num_itc": n_itc, "num_slides": len(prob_maps), "num_candidates": n_cand}
