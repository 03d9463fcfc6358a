"""LIME on superpixels: a weighted sparse linear surrogate of the model."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Callable

import keras
import numpy as np

from keras_medseg.explain._scores import batched_scores, check_explain_input, make_score_fn, one_line_errors
from keras_medseg.utils.validation import check_choice, check_positive, check_positive_int


@dataclasses.dataclass
class LimeExplanation:
    """Result of `keras_medseg.explain.lime` for a batch.

    Attributes:
        maps: float32 `(N, *S)`, every position holds its superpixel's weight.
        segments: int `(N, *S)`, superpixel labels `0..L_n-1`.
        weights: list of N float arrays `(L_n,)`, surrogate weight per superpixel.
        intercepts: float array `(N,)`.
        top_masks: bool `(N, *S)`, the `top_k` superpixels with the largest
            positive weights.
        scores: float array `(N,)`, the model's score of the unperturbed input.
    """

    maps: np.ndarray
    segments: np.ndarray
    weights: list
    intercepts: np.ndarray
    top_masks: np.ndarray
    scores: np.ndarray


def superpixels(image: np.ndarray, n_segments: int = 50, compactness: float | None = None) -> np.ndarray:
    """SLIC superpixels of one image `(*S, C)` (2D or 3D, gray or multi-channel).

    The intensities are rescaled to [0, 1] first (medical images come in any
    range); a single channel is segmented with `channel_axis=None`.

    Returns:
        int array `(*S,)` with labels `0..L-1`.
    """
    from skimage.segmentation import slic

    img = np.asarray(image, dtype="float64")
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    if img.shape[-1] == 1:
        img, channel_axis = img[..., 0], None
        compactness = 0.1 if compactness is None else compactness
    else:
        channel_axis = -1
        compactness = 10.0 if compactness is None else compactness
    seg = slic(img, n_segments=n_segments, compactness=compactness, channel_axis=channel_axis,
               start_label=0, enforce_connectivity=True)
    _, seg = np.unique(seg, return_inverse=True)
    return seg.reshape(np.shape(image)[:-1]).astype("int64")


def lime(model: keras.Model, x: np.ndarray, class_index: int | Callable, segments: np.ndarray | None = None,
         samples: int = 256, n_segments: int = 50, top_k: int = 5, regressor: str = "ridge", alpha: float = 1.0,
         kernel_width: float = 0.25, baseline: float = 0.0, batch_size: int = 64, seed: int = 0,
         progress: bool = False) -> LimeExplanation:
    """LIME: explain a score by a weighted linear model on superpixels switched on/off.

    For each sample: superpixels `P_1..P_L` (SLIC, or given `segments`);
    `samples` random binary vectors `z in {0,1}^L` (the first is all ones);
    copies `I[z]` with the switched-off superpixels set to `baseline`,
    scored in batches; a linear model `score ~ w0 + sum_k w_k z_k` fitted by
    scikit-learn with sample weights `sqrt(exp(-d(z, 1)^2 / kernel_width^2))`,
    `d` the cosine distance to the unperturbed image.

    Args:
        model: a Keras model taking `(N, *S, C)` inputs.
        x: input batch `(N, H, W, C)` or `(N, D, H, W, C)`.
        class_index: int class index or score function `fn(y) -> (N,)`.
        segments: optional int array `(*S)` or `(N, *S)` of superpixel
            labels; default None runs SLIC (`n_segments`).
        samples: int >= 2, perturbed copies per input. Defaults to 256.
        n_segments: int, approximate number of SLIC superpixels. Defaults to 50.
        top_k: int, superpixels in the `top_masks`. Defaults to 5.
        regressor: "ridge" (default, `sklearn.linear_model.Ridge`) or
            "lasso" (`sklearn.linear_model.Lasso`, sparse weights).
        alpha: float > 0, regularisation strength of the regressor. Defaults to 1.
        kernel_width: float > 0, width of the similarity kernel. Defaults to 0.25.
        baseline: float or "mean" (each superpixel's mean), the value of
            switched-off superpixels. Defaults to 0.
        batch_size: int, copies per forward pass. Defaults to 64.
        seed: int, seed of the random masks. Defaults to 0.
        progress: bool, show a tqdm progress bar over the perturbed copies.
            Defaults to False.

    Returns:
        A `LimeExplanation` (`maps` is `(N, *S)`).

    Raises:
        ValueError: bad `x`, `segments` of the wrong shape, `samples < 2`,
            unknown `regressor` or `baseline`.

    Example:

    >>> exp = keras_medseg.explain.lime(model, x, 0, samples=200)
    >>> exp.maps.shape, exp.top_masks.shape

    Reference:
        The lecture "Convolutional networks - theory" (LIME); Ribeiro, Singh, Guestrin, "Why should I trust
        you?", 2016.
    """
    from sklearn.linear_model import Lasso, Ridge

    x = check_explain_input(model, x, class_index)
    samples = check_positive_int(samples, "samples", minimum=2)
    top_k = check_positive_int(top_k, "top_k")
    n_segments = check_positive_int(n_segments, "n_segments")
    check_choice(regressor, "regressor", ("ridge", "lasso"))
    alpha = check_positive(alpha, "alpha")
    kernel_width = check_positive(kernel_width, "kernel_width")
    if not (baseline == "mean" or (isinstance(baseline, numbers.Real) and not isinstance(baseline, bool))):
        raise ValueError(f"`baseline` must be a number or 'mean'. Received: baseline={baseline!r}")
    score_fn = make_score_fn(class_index)
    n, spatial = x.shape[0], x.shape[1:-1]
    if segments is not None:
        segments = np.asarray(segments)
        if segments.shape == spatial:
            segments = np.broadcast_to(segments, (n,) + spatial)
        if segments.shape != (n,) + spatial or not np.issubdtype(segments.dtype, np.integer):
            raise ValueError(
                f"`segments` must be an int array of shape {spatial} or {(n,) + spatial}. "
                f"Received: segments.shape={segments.shape}, dtype={segments.dtype}"
            )
    rng = np.random.default_rng(seed)
    maps = np.zeros((n,) + spatial, "float32")
    top_masks = np.zeros((n,) + spatial, bool)
    all_segments = np.zeros((n,) + spatial, "int64")
    weights, intercepts = [], np.zeros(n)
    base_scores = np.zeros(n, "float32")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * samples, desc="lime", unit="copy")
    for i in range(n):
        if segments is None:
            seg = superpixels(x[i], n_segments=n_segments)
        else:
            _, seg = np.unique(segments[i], return_inverse=True)
            seg = seg.reshape(spatial)
        all_segments[i] = seg
        n_sp = int(seg.max()) + 1
        z = rng.integers(0, 2, size=(samples, n_sp)).astype("float32")
        z[0] = 1.0
        if baseline == "mean":
            sums = np.zeros((n_sp, x.shape[-1]))
            np.add.at(sums, seg.ravel(), x[i].reshape(-1, x.shape[-1]))
            fill = (sums / np.bincount(seg.ravel(), minlength=n_sp)[:, None])[seg].astype("float32")
        else:
            fill = np.float32(baseline)
        scores = []
        for start in range(0, samples, batch_size):
            on = z[start:start + batch_size][:, seg][..., None]  # (b, *S, 1)
            copies = x[i][None] * on + fill * (1.0 - on)
            with one_line_errors(model, x):
                scores.append(batched_scores(model, copies, score_fn, batch_size, bar))
        scores = np.concatenate(scores)
        base_scores[i] = scores[0]  # z[0] is all ones: the unperturbed input, no extra forward pass
        # cosine distance between z and the all-ones vector
        cos = z.sum(axis=1) / (np.sqrt(n_sp) * np.sqrt(np.maximum(z.sum(axis=1), 1e-12)))
        dist = 1.0 - cos
        w = np.sqrt(np.exp(-(dist ** 2) / kernel_width ** 2))
        reg = Ridge(alpha=alpha) if regressor == "ridge" else Lasso(alpha=alpha, max_iter=10000)
        reg.fit(z, scores, sample_weight=w)
        coef = np.asarray(reg.coef_, dtype="float64")
        weights.append(coef)
        intercepts[i] = float(reg.intercept_)
        maps[i] = coef[seg]
        order = np.argsort(-coef)[:top_k]
        order = order[coef[order] > 0]
        top_masks[i] = np.isin(seg, order)
    if bar is not None:
        bar.close()
    return LimeExplanation(maps=maps, segments=all_segments, weights=weights, intercepts=intercepts,
                           top_masks=top_masks, scores=base_scores)
