"""Sliding-window inference for images and volumes larger than the training patch.

The volume is covered by overlapping windows; windows are predicted in
batches of `batch_size` and blended back with a Gaussian (or constant)
importance map, so peak memory is set by the batch of windows plus one
output-sized accumulator, never by running the model on the whole volume.

`sliding_window_slabs` streams the blended result: windows run in the order of
their first-axis start, and as soon as no later window reaches a band of rows
along the first axis, that band is normalised and handed out; the accumulators
hold one window's thickness of rows only (`keras_medseg.predict.scans` turns the
bands into label maps without a full-size float copy). The model runs through a
cached compiled function (`tf.function`, `jax.jit`, `torch.no_grad`), and
optional mirroring test-time augmentation averages the probabilities of the
flipped windows (flipped back), as in "nnU-Net: a self-configuring method for
deep learning-based biomedical image segmentation" (Isensee, Jaeger, Kohl,
Petersen, Maier-Hein, Nature Methods 2021).
"""

import itertools
import math
import weakref

import numpy as np

from keras_medseg.utils.validation import check_choice, check_positive_int

__all__ = ["sliding_window", "sliding_window_slabs", "window_starts", "importance_map"]

_COMPILED = weakref.WeakKeyDictionary()  # model -> compiled inference call


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


def _compiled_call(model):
    """`windows (np) -> np.ndarray`: the model in inference mode through one cached compiled function.

    Keras models run as `tf.function` (TensorFlow), `jax.jit` over `stateless_call` with the current
    variables passed in (JAX; weights changed later, e.g. in training, are used), or under
    `torch.no_grad()` (torch): no per-batch `predict_on_batch` set-up. Other callables keep
    `predict_on_batch` or `__call__`.
    """
    if not getattr(model, "inputs", None) or not hasattr(model, "stateless_call"):
        return getattr(model, "predict_on_batch", None) or model
    try:
        fn = _COMPILED.get(model)
    except TypeError:  # unhashable model: no cache
        fn = None
    if fn is not None:
        return fn
    import keras

    # the cached function reaches the model through a weak reference: a strong one from the value would keep
    # the model (its key in the WeakKeyDictionary) alive for ever
    ref = weakref.ref(model)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        traced = tf.function(lambda x: ref()(x, training=False), reduce_retracing=True)

        def fn(x):
            return keras.ops.convert_to_numpy(traced(tf.convert_to_tensor(x)))
    elif backend == "jax":
        import jax

        jitted = jax.jit(lambda tv, ntv, x: ref().stateless_call(tv, ntv, x, training=False)[0])

        def fn(x):
            live = ref()
            return np.asarray(jitted([v.value for v in live.trainable_variables],
                                     [v.value for v in live.non_trainable_variables], x))
    elif backend == "torch":
        import torch

        def fn(x):
            with torch.no_grad():
                return keras.ops.convert_to_numpy(ref()(keras.ops.convert_to_tensor(x), training=False))
    else:
        return model.predict_on_batch
    try:
        _COMPILED[model] = fn
    except TypeError:
        pass
    return fn


def _flip_sets(flips, d):
    """All mirrorings of the window for test-time augmentation: every subset of the `flips` axes ("all": of
    every spatial axis)."""
    if flips is None:
        return [()]
    if flips == "all":
        flips = tuple(range(d))
    if isinstance(flips, str):
        raise ValueError(f"`flips` must be spatial axes in [0, {d}), e.g. (0, 1, 2), or \"all\". "
                         f"Received: flips={flips!r}")
    axes = sorted({int(a) for a in (flips if isinstance(flips, (list, tuple)) else [flips])})
    if any(a < 0 or a >= d for a in axes) or not isinstance(flips, (list, tuple, int)):
        raise ValueError(f"`flips` must be spatial axes in [0, {d}), e.g. (0, 1, 2). Received: flips={flips!r}")
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _predict_windows(predict, windows, patch, flip_sets):
    """Model output on a batch of windows, averaged over the mirrored copies (each flipped back)."""
    total = None
    for axes in flip_sets:
        x = np.ascontiguousarray(np.flip(windows, [a + 1 for a in axes])) if axes else windows
        pred = np.asarray(predict(x), dtype="float32")
        if pred.shape[1:-1] != patch:
            raise ValueError(
                f"`model` must return windows the size of its input windows for sliding-window inference. "
                f"Received output shape {pred.shape} for input windows {windows.shape}."
            )
        if len(flip_sets) == 1:
            return pred
        pred = np.flip(pred, [a + 1 for a in axes]) if axes else pred
        total = pred.copy() if total is None else np.add(total, pred, out=total)
    total /= np.float32(len(flip_sets))
    return total


def _check_args(patch, overlap, batch_size, blend, volume):
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
    return patch, volume, batched


def sliding_window_slabs(model, volume, patch, overlap=0.5, blend="gaussian", batch_size=4, sigma_scale=0.125,
                         pad_value=0.0, progress=False, flips=None):
    """Stream the blended sliding-window prediction in bands of rows along the first spatial axis.

    The same windows, weights and sums as `sliding_window` (bit-identical
    results), but the weighted sums live in two accumulators one window thick
    along the first spatial axis (`(patch[0], *S[1:], C_out)` and
    `(patch[0], *S[1:])`, float32): a band is normalised and yielded as soon as
    no later window reaches it, so no full-size float copy is ever made.

    Args:
        model: Keras model or callable, as in `sliding_window`.
        volume: array `(*S, C_in)` or `(N, *S, C_in)`.
        patch: window size per spatial axis.
        overlap: fraction in `[0, 1)` (default 0.5).
        blend: `"gaussian"` (default) or `"constant"`.
        batch_size: windows per forward pass (default 4).
        sigma_scale: Gaussian sigma as a fraction of the patch size.
        pad_value: value used to pad axes shorter than the patch.
        progress: show a Keras progress bar over the windows.
        flips: None (default), spatial axes, e.g. `(0, 1, 2)`, or "all": mirroring
            test-time augmentation; every window is also predicted mirrored
            along every subset of these axes (2^len(flips) passes), each output
            flipped back, and the probabilities averaged.

    Yields:
        `(n, start, stop, probs)`: sample index `n` (0 for an unbatched
        volume), rows `[start, stop)` of the first spatial axis, and the
        float32 blended output of those rows `(stop - start, *S[1:], C_out)`
        (cropped to the unpadded volume). Bands come in order and cover
        every row once.

    Raises:
        ValueError: as `sliding_window`, and `flips` naming an axis outside
            `[0, len(patch))`.
    """
    patch, volume, _ = _check_args(patch, overlap, batch_size, blend, volume)
    flip_sets = _flip_sets(flips, len(patch))
    spatial = volume.shape[1:-1]
    # Pad axes shorter than the window so every window is full-sized.
    pads = [(0, max(0, p - s)) for s, p in zip(spatial, patch)]
    if any(after for _, after in pads):
        volume = np.pad(volume, [(0, 0)] + pads + [(0, 0)], constant_values=pad_value)
    padded = volume.shape[1:-1]
    starts = [window_starts(s, p, overlap) for s, p in zip(padded, patch)]
    corners = list(itertools.product(range(volume.shape[0]), *starts))  # sorted by sample, then first-axis start
    weight = importance_map(patch, blend, sigma_scale)
    if getattr(model, "inputs", None):  # a Keras model: check the window against its input layout first
        from keras_medseg.utils.input_layout import check_model_input

        check_model_input(volume[(slice(0, 1),) + tuple(slice(0, p) for p in patch)].astype("float32"), model,
                          f"a sliding-window patch of size {tuple(patch)}")
    predict = _compiled_call(model)
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(len(corners), unit_name="window")
    p0, rest = patch[0], tuple(slice(0, s) for s in spatial[1:])
    acc, norm = None, np.zeros((p0,) + padded[1:], dtype="float32")
    state = {"n": 0, "lo": 0}  # sample and first row the accumulators hold

    def emit(stop):  # normalise rows [lo, stop) of the sample, hand them out, shift the accumulators
        n, lo = state["n"], state["lo"]
        k = stop - lo
        if k <= 0:
            return None
        band = acc[:k] / norm[:k, ..., None]
        acc[:p0 - k], norm[:p0 - k] = acc[k:], norm[k:]
        acc[p0 - k:], norm[p0 - k:] = 0.0, 0.0
        state["lo"] = stop
        keep = min(stop, spatial[0]) - lo
        return (n, lo, lo + keep, band[(slice(0, keep),) + rest]) if keep > 0 else None

    for b0 in range(0, len(corners), batch_size):
        chunk = corners[b0:b0 + batch_size]
        windows = np.stack([
            volume[(n,) + tuple(slice(c, c + p) for c, p in zip(corner, patch))] for n, *corner in chunk
        ])
        pred = _predict_windows(predict, windows, patch, flip_sets)
        if acc is None:
            acc = np.zeros((p0,) + padded[1:] + (pred.shape[-1],), dtype="float32")
        for (n, *corner), p in zip(chunk, pred):
            if n != state["n"]:  # the previous sample is complete
                done = emit(padded[0])
                if done is not None:
                    yield done
                state["n"], state["lo"] = n, 0
            if corner[0] > state["lo"]:  # no later window reaches the rows before this start
                done = emit(corner[0])
                if done is not None:
                    yield done
            region = (slice(corner[0] - state["lo"], corner[0] - state["lo"] + p0),) + tuple(
                slice(c, c + s) for c, s in zip(corner[1:], patch[1:]))
            acc[region] += p * weight[..., None]
            norm[region] += weight
        if bar is not None:
            bar.add(len(chunk))
    done = emit(padded[0])
    if done is not None:
        yield done


def sliding_window(model, volume, patch, overlap=0.5, blend="gaussian", batch_size=4,
                   sigma_scale=0.125, pad_value=0.0, progress=False, flips=None):
    """Predict a large image or volume window by window.

    Args:
        model: a Keras model (or any callable with `predict_on_batch`/`__call__`)
            mapping `(B, *patch, C_in)` to `(B, *patch, C_out)`. Keras models
            run through a cached compiled call in inference mode.
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
        flips: None (default) or spatial axes for mirroring test-time
            augmentation (see `sliding_window_slabs`).

    Returns:
        float32 array with the input's leading shape and the model's output
        channels: `(*S, C_out)` or `(N, *S, C_out)`: at every voxel
        `sum_w weight_w * pred_w / sum_w weight_w` over the windows `w` that
        cover it (checked against a NumPy loop over the windows in the tests).

    Raises:
        ValueError: bad `patch`, `overlap`, `batch_size`, `blend`, `flips`, a volume
            whose rank does not match the patch or that holds NaN/inf, or a model whose output
            windows are not the size of its input windows.

    Example:
    >>> model = keras_medseg.zoo.build("unet", spatial_dims=3, input_shape=(64, 64, 64, 1))
    >>> probs = keras_medseg.inference.sliding_window(model, ct_volume, patch=(64, 64, 64))
    """
    _, batched_volume, batched = _check_args(patch, overlap, batch_size, blend, volume)
    out = None
    for n, start, stop, band in sliding_window_slabs(model, batched_volume, patch, overlap=overlap, blend=blend,
                                                     batch_size=batch_size, sigma_scale=sigma_scale,
                                                     pad_value=pad_value, progress=progress, flips=flips):
        if out is None:
            out = np.empty(batched_volume.shape[:-1] + band.shape[-1:], dtype="float32")
        out[n, start:stop] = band
    return out if batched else out[0]
