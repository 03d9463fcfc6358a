"""Sliding-window inference for images and volumes larger than the training patch.

The volume is covered by overlapping windows; windows are predicted in
batches of `batch_size` and blended back with a Gaussian (or constant)
importance map, so peak memory is set by the batch of windows plus one
output-sized accumulator, never by running the model on the whole volume.
"""

import itertools
import math

import numpy as np

from keras_medseg.utils.validation import check_choice, check_positive_int

__all__ = ["sliding_window", "window_starts", "importance_map"]


def window_starts(size, patch, overlap):
    """Start indices of windows of length `patch` covering `[0, size)`.

    Consecutive windows overlap by at least `overlap * patch`; the last window
    ends exactly at `size` (when `size >= patch`).
    """
    if size <= patch:
        return [0]
    stride = max(1, int(math.floor(patch * (1.0 - overlap))))
    n = int(math.ceil((size - patch) / stride)) + 1
    starts = [min(i * stride, size - patch) for i in range(n)]
    return sorted(set(starts))


def importance_map(patch, blend="gaussian", sigma_scale=0.125):
    """Per-voxel blending weight of one window, shape `patch`, maximum 1.

    `"gaussian"` weights the centre of each window more than its border
    (sigma = `sigma_scale` * patch size per axis), which removes the seams
    that constant averaging leaves where window borders see less context.
    """
    check_choice(blend, "blend", ("gaussian", "constant"))
    if blend == "constant":
        return np.ones(patch, dtype="float32")
    grids = []
    for p in patch:
        centre = (p - 1) / 2.0
        sigma = max(sigma_scale * p, 1e-3)
        grids.append(np.exp(-0.5 * ((np.arange(p) - centre) / sigma) ** 2))
    w = grids[0]
    for g in grids[1:]:
        w = np.multiply.outer(w, g)
    w = w / w.max()
    # Keep border voxels from getting a vanishing weight (they may be covered only once).
    return np.maximum(w, 1e-3).astype("float32")


def sliding_window(model, volume, patch, overlap=0.5, blend="gaussian", batch_size=4,
                   sigma_scale=0.125, pad_value=0.0, progress=False):
    """Predict a large image or volume window by window.

    Args:
        model: a Keras model (or any callable with `predict_on_batch`/`__call__`)
            mapping `(B, *patch, C_in)` to `(B, *patch, C_out)`.
        volume: array `(*S, C_in)` or a batch `(N, *S, C_in)`; `len(S)` must
            equal `len(patch)` (2 for images, 3 for volumes).
        patch: window size per spatial axis, e.g. `(64, 64, 64)`.
        overlap: fraction in `[0, 1)` by which neighbouring windows overlap.
            Default 0.5.
        blend: `"gaussian"` (default) or `"constant"` weighting of overlaps.
        batch_size: number of windows per forward pass; sets peak memory.
        sigma_scale: Gaussian sigma as a fraction of the patch size.
        pad_value: value used to pad axes shorter than the patch.
        progress: show a Keras progress bar over the window batches.

    Returns:
        float32 array with the input's leading shape and the model's output
        channels: `(*S, C_out)` or `(N, *S, C_out)`.

    Raises:
        ValueError: bad `patch`, `overlap`, `batch_size`, `blend`, a volume
            whose rank does not match the patch or that holds NaN/inf, or a model whose output
            windows are not the size of its input windows.

    Example:
    >>> model = keras_medseg.zoo.build("unet", spatial_dims=3, input_shape=(64, 64, 64, 1))
    >>> probs = keras_medseg.inference.sliding_window(model, ct_volume, patch=(64, 64, 64))
    """
    patch = tuple(int(p) for p in patch) if isinstance(patch, (tuple, list)) else None
    if not patch or len(patch) not in (2, 3) or any(p < 1 for p in patch):
        raise ValueError(f"`patch` must be a tuple of 2 or 3 positive ints. Received: patch={patch!r}")
    if not (isinstance(overlap, (int, float)) and 0.0 <= overlap < 1.0):
        raise ValueError(f"`overlap` must be in [0, 1). Received: overlap={overlap!r}")
    check_positive_int(batch_size, "batch_size")
    check_choice(blend, "blend", ("gaussian", "constant"))
    volume = np.asarray(volume)
    d = len(patch)
    if volume.ndim == d + 1:
        batched, volume = False, volume[None]
    elif volume.ndim == d + 2:
        batched = True
    else:
        raise ValueError(
            f"`volume` must have shape (*S, C) or (N, *S, C) with {d} spatial axes to match `patch`. "
            f"Received: volume.shape={volume.shape}, patch={patch}"
        )
    if volume.size == 0:
        raise ValueError(f"`volume` is empty. Received: volume.shape={volume.shape}")
    if np.issubdtype(volume.dtype, np.floating) and not np.all(np.isfinite(volume)):
        # A model can hide a NaN voxel (max pooling drops it) and return a clean-looking
        # mask; refuse instead.
        bad = int(np.size(volume) - np.count_nonzero(np.isfinite(volume)))
        raise ValueError(f"`volume` contains {bad} NaN/inf values; clean or mask them before inference.")

    spatial = volume.shape[1:-1]
    # Pad axes shorter than the window so every window is full-sized.
    pads = [(0, max(0, p - s)) for s, p in zip(spatial, patch)]
    if any(after for _, after in pads):
        volume = np.pad(volume, [(0, 0)] + pads + [(0, 0)], constant_values=pad_value)
    padded = volume.shape[1:-1]
    starts = [window_starts(s, p, overlap) for s, p in zip(padded, patch)]
    corners = list(itertools.product(range(volume.shape[0]), *starts))
    weight = importance_map(patch, blend, sigma_scale)

    if getattr(model, "inputs", None):  # a Keras model: check the window against its input layout first
        from keras_medseg.utils.input_layout import check_model_input

        check_model_input(volume[(slice(0, 1),) + tuple(slice(0, p) for p in patch)].astype("float32"), model,
                          f"a sliding-window patch of size {tuple(patch)}")
    predict = getattr(model, "predict_on_batch", None) or model
    out = None
    norm = np.zeros(padded, dtype="float32")
    for n, *corner in corners:
        if n == 0:
            region = tuple(slice(c, c + p) for c, p in zip(corner, patch))
            norm[region] += weight
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(len(corners), unit_name="window")
    for b0 in range(0, len(corners), batch_size):
        chunk = corners[b0:b0 + batch_size]
        windows = np.stack([
            volume[(n,) + tuple(slice(c, c + p) for c, p in zip(corner, patch))] for n, *corner in chunk
        ])
        pred = np.asarray(predict(windows), dtype="float32")
        if pred.shape[1:-1] != patch:
            raise ValueError(
                f"`model` must return windows the size of its input windows for sliding-window inference. "
                f"Received output shape {pred.shape} for input windows {windows.shape}."
            )
        if out is None:
            out = np.zeros((volume.shape[0],) + padded + (pred.shape[-1],), dtype="float32")
        for (n, *corner), p in zip(chunk, pred):
            region = (n,) + tuple(slice(c, c + s) for c, s in zip(corner, patch))
            out[region] += p * weight[..., None]
        if bar is not None:
            bar.add(len(chunk))
    out /= norm[None, ..., None]
    out = out[(slice(None),) + tuple(slice(0, s) for s in spatial)]
    return out if batched else out[0]
