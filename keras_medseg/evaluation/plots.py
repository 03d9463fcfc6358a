"""Plots for slide-level evaluation: FROC curves and patch-probability heat maps.

Matplotlib is imported lazily so that importing the package stays cheap.
"""

import numpy as np

from keras_medseg.evaluation.froc import DEFAULT_FP_RATES, sensitivity_at
from keras_medseg.utils.validation import check_choice, check_positive_int


def probability_map(scores, coords, patch_size, shape=None, inner_size=None, reduce="max"):
    """Paint patch scores onto a slide-sized array (the probability heat map).

    Args:
        scores: `(N,)` patch probabilities.
        coords: `(N, 2)` integer `(row, col)` of each patch's top-left corner.
        patch_size: patch side in pixels.
        shape: `(H, W)` of the output; default just covers every patch.
        inner_size: if given, paint only the centred inner square of this
            side (the part of the patch the label refers to, see
            `keras_medseg.data.slides.extract_patches`); default the whole patch.
        reduce: `"max"` (default) or `"mean"` where patches overlap.

    Returns:
        `(H, W)` float32 array, NaN where no patch lies.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    coords = np.asarray(coords)
    if coords.shape != (scores.size, 2):
        raise ValueError(
            f"`coords` must have shape (N, 2) with N = len(scores) = {scores.size}. "
            f"Received: coords.shape={coords.shape}"
        )
    patch_size = check_positive_int(patch_size, "patch_size")
    check_choice(reduce, "reduce", ("max", "mean"))
    side = patch_size if inner_size is None else check_positive_int(inner_size, "inner_size")
    off = (patch_size - side) // 2
    if shape is None:
        shape = tuple(int(v) for v in (coords.max(0) + patch_size)) if scores.size else (0, 0)
    total = np.zeros(shape, np.float64)
    count = np.zeros(shape, np.float64)
    best = np.full(shape, -np.inf)
    for s, (r, c) in zip(scores, coords.astype(int)):
        sl = (slice(r + off, r + off + side), slice(c + off, c + off + side))
        total[sl] += s
        count[sl] += 1
        np.maximum(best[sl], s, out=best[sl])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = best if reduce == "max" else total / count
    out = np.where(count > 0, out, np.nan)
    return out.astype(np.float32)


def plot_froc(avg_fp, sensitivity, fp_rates=DEFAULT_FP_RATES, ax=None, label=None, interpolation="step"):
    """Plot a FROC curve (sensitivity vs. average false positives per normal slide).

    Args:
        avg_fp, sensitivity: from `keras_medseg.evaluation.froc_curve`.
        fp_rates: rates marked on the curve (the FROC score's rates); `None`
            marks nothing.
        ax: a matplotlib axis; default a new figure.
        label: legend label.
        interpolation: how the marked points are read off (see `froc_score`).

    Returns:
        The matplotlib axis.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    ax.step(avg_fp, sensitivity, where="post", label=label)
    if fp_rates is not None:
        sens = sensitivity_at(avg_fp, sensitivity, fp_rates, interpolation)
        ax.plot(fp_rates, sens, "o", color=ax.lines[-1].get_color())
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set_xlabel("average false positives per normal slide")
    ax.set_ylabel("sensitivity (tumours detected)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    if label is not None:
        ax.legend()
    return ax


def plot_heatmap(scores, coords, patch_size, image=None, shape=None, inner_size=None, ax=None,
                 alpha=0.5, cmap="jet"):
    """Show the patch-probability heat map of one slide, optionally over the slide image.

    Args:
        scores, coords, patch_size, shape, inner_size: see `probability_map`.
        image: optional `(H, W[, C])` slide (thumbnail at level 0) drawn below.
        ax: a matplotlib axis; default a new figure.
        alpha: heat map opacity over the image.
        cmap: matplotlib colour map.

    Returns:
        The matplotlib axis.
    """
    import matplotlib.pyplot as plt

    if shape is None and image is not None:
        shape = np.asarray(image).shape[:2]
    heat = probability_map(scores, coords, patch_size, shape=shape, inner_size=inner_size)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    if image is not None:
        ax.imshow(image)
    im = ax.imshow(np.ma.masked_invalid(heat), cmap=cmap, vmin=0.0, vmax=1.0,
                   alpha=alpha if image is not None else 1.0)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, label="P(cancer)")
    ax.set_axis_off()
    return ax
