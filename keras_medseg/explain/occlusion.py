"""Occlusion maps: the drop of the score when a patch of the input is covered."""

from __future__ import annotations

import itertools
import numbers
from typing import Callable

import keras
import numpy as np

from keras_medseg.explain._scores import batched_scores, check_explain_input, make_score_fn, one_line_errors
from keras_medseg.utils.validation import check_positive_int


def _as_tuple(value, d, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value),) * d
    value = tuple(value)
    if len(value) != d or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1
                              for v in value):
        raise ValueError(
            f"`{name}` must be a positive int or a tuple of {d} positive ints. Received: {name}={value!r}"
        )
    return tuple(int(v) for v in value)


def _starts(size, patch, stride):
    if patch > size:
        raise ValueError(f"`patch` must not exceed the input size {size}. Received: patch={patch}")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:  # cover the far border too
        starts.append(size - patch)
    return starts


def occlusion_patches(spatial_shape, patch, stride):
    """Corner indices of every occluding patch (a list of tuples)."""
    return list(itertools.product(*[_starts(s, p, st) for s, p, st in zip(spatial_shape, patch, stride)]))


def occlusion(model: keras.Model, x: np.ndarray, class_index: int | Callable, patch: int | tuple = 8,
              stride: int | tuple | None = None, baseline: float = 0.0, batch_size: int = 64,
              progress: bool = False) -> np.ndarray:
    """Occlusion map: mean drop of the score over the patches covering each position.

    Every patch position gives one copy of the input with that patch set to
    `baseline`; all copies of all samples are evaluated in large batches of
    `batch_size` (not one forward pass per patch). The map at a position is
    `score(x) - score(x_occluded)` averaged over the patches that cover it,
    so regions the model does not look at get exactly 0.

    Args:
        model: a Keras model taking `(N, *S, C)` inputs.
        x: input batch `(N, H, W, C)` or `(N, D, H, W, C)`.
        class_index: int class index or score function `fn(y) -> (N,)`.
        patch: int or tuple, patch size per spatial axis. Defaults to 8.
        stride: int or tuple; defaults to `patch` (non-overlapping tiles; the
            last tile along an axis is moved back to cover the border).
        baseline: float, or `"mean"` (each sample's per-channel mean), the
            value written into the covered patch. Defaults to 0.
        batch_size: int >= 2, inputs per forward pass (the unoccluded input
            and `batch_size - 1` occluded copies). Defaults to 64.
        progress: bool, show a tqdm progress bar. Defaults to False.

    Returns:
        NumPy float32 `(N, *S)`; positive where covering the input lowers
        the score.

    Raises:
        ValueError: bad `x`, `patch`/`stride` not positive or larger than the
            input, or an unknown `baseline`.

    Example:

    >>> maps = keras_medseg.explain.occlusion(model, x, 0, patch=16, stride=8)

    Reference:
        The lectures "Convolutional networks - theory" and J. Wolterink,
        "Deep Learning II: Interpretability & Adversarial Methods" (occlusion
        maps); Zeiler and Fergus,
        "Visualizing and understanding convolutional networks", 2014.
    """
    x = check_explain_input(model, x, class_index)
    d = x.ndim - 2
    spatial = x.shape[1:-1]
    patch = _as_tuple(patch, d, "patch")
    stride = patch if stride is None else _as_tuple(stride, d, "stride")
    batch_size = check_positive_int(batch_size, "batch_size", minimum=2) - 1
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"`baseline` must be a number or 'mean'. Received: baseline={baseline!r}")
    elif isinstance(baseline, bool) or not isinstance(baseline, numbers.Real):
        raise ValueError(f"`baseline` must be a number or 'mean'. Received: baseline={baseline!r}")
    for s, p in zip(spatial, patch):
        if p > s:
            raise ValueError(f"`patch` must fit in the input grid {spatial}. Received: patch={patch}")
    corners = occlusion_patches(spatial, patch, stride)
    score_fn = make_score_fn(class_index)

    # masks (P, *S): 1 inside patch p
    masks = np.zeros((len(corners),) + spatial, dtype="float32")
    for i, c in enumerate(corners):
        masks[(i,) + tuple(slice(a, a + p) for a, p in zip(c, patch))] = 1.0
    count = masks.sum(axis=0)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(x) * (len(corners) + -(-len(corners) // batch_size)), desc="occlusion", unit="copy")
    maps = np.zeros((len(x),) + spatial, dtype="float32")
    m = masks[..., None]
    # Copies are generated chunk by chunk so memory stays at batch_size inputs.
    for n in range(len(x)):
        fill = x[n].mean(axis=tuple(range(d)), keepdims=True) if baseline == "mean" else np.float32(baseline)
        drops = []
        for start in range(0, len(corners), batch_size):
            mm = m[start:start + batch_size]
            copies = x[n][None] * (1.0 - mm) + fill * mm
            # The unoccluded input rides along in every batch: its score comes
            # from the same kernels as the copies', so untouched regions give
            # exactly 0 (batch-size dependent rounding cancels).
            with one_line_errors(model, x):
                s = batched_scores(model, np.concatenate([x[n][None], copies]), score_fn, len(copies) + 1, bar)
            drops.append(s[0] - s[1:])
        drops = np.concatenate(drops)
        maps[n] = np.tensordot(drops, masks, axes=(0, 0)) / np.maximum(count, 1.0)
    if bar is not None:
        bar.close()
    return maps


def occlusion_loop(model, x, class_index, patch=8, stride=None, baseline=0.0):
    """Reference occlusion with one forward pass per patch (for tests and benchmarks only)."""
    x = check_explain_input(model, x, class_index)
    d = x.ndim - 2
    spatial = x.shape[1:-1]
    patch = _as_tuple(patch, d, "patch")
    stride = patch if stride is None else _as_tuple(stride, d, "stride")
    score_fn = make_score_fn(class_index)
    maps = np.zeros((len(x),) + spatial, dtype="float32")
    count = np.zeros(spatial, dtype="float32")
    for c in occlusion_patches(spatial, patch, stride):
        idx = tuple(slice(a, a + p) for a, p in zip(c, patch))
        count[idx] += 1
    for n in range(len(x)):
        base = batched_scores(model, x[n:n + 1], score_fn)[0]
        for c in occlusion_patches(spatial, patch, stride):
            idx = tuple(slice(a, a + p) for a, p in zip(c, patch))
            copy = x[n:n + 1].copy()
            copy[(0,) + idx] = baseline
            maps[(n,) + idx] += base - batched_scores(model, copy, score_fn)[0]
    return maps / np.maximum(count, 1.0)
