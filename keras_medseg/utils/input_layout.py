"""`check_model_input`: compare an array with the layout a model takes, before calling the model.

A channels-first array, a missing batch axis, a 3D volume given to a 2D model
or a spatial size the model cannot take (a UNet on 66 x 66 pixels) otherwise
ends deep in the backend ("ConcatV2 ... 33 and 32", "expected axis -1 of input
shape to have value 1"). This helper turns each into one sentence about the
user's array and what the model accepts, with the nearest size that works.
"""

import numpy as np

__all__ = ["check_model_input", "nearest_valid_size"]


def _expected(model):
    shape = tuple(model.inputs[0].shape)
    return shape[1:-1], shape[-1]


def _runs(model, spatial, channels, dtype):
    try:
        model(np.zeros((1, *spatial, channels or 1), dtype), training=False)
        return True
    except Exception:  # noqa: BLE001 - any backend failure means "this size does not work"
        return False


def nearest_valid_size(model, spatial, max_delta=64):
    """The spatial size closest to `spatial` (same offset on every axis) that `model` runs on, or None.

    Probes the model with one zero sample per candidate (only on the error path).
    """
    _, channels = _expected(model)
    dtype = getattr(model.inputs[0], "dtype", "float32") or "float32"
    for delta in range(1, max_delta + 1):
        for sign in (1, -1):
            cand = tuple(int(s) + sign * delta for s in spatial)
            if min(cand) >= 1 and _runs(model, cand, channels, dtype):
                return cand
    return None


def check_model_input(x, model, name="x", probe=True):
    """Raise one `ValueError` about `x` when it does not fit `model.inputs[0]`; return `x` otherwise.

    Args:
        x: the batch the caller is about to feed, `(batch, *spatial, channels)`.
        model: a built `keras.Model` with one image input.
        name: str, how the message names the array (e.g. "IMAGE file 'a.png'").
        probe: bool, default True: when the model has free spatial sizes,
            run it on one zero sample of `x`'s size and, if that fails, name
            the nearest size that works.

    Returns:
        `x`, unchanged.

    Raises:
        ValueError: missing batch axis, wrong rank (e.g. a volume for a 2D
            model), channels-first layout, wrong channel count, or a spatial
            size the model cannot take (with the nearest valid one).

    Example:

    >>> check_model_input(np.zeros((1, 64, 64, 1)), model)  # doctest: +SKIP
    """
    shape = tuple(np.shape(x))
    spatial, channels = _expected(model)
    want = f"(batch, {', '.join('any' if s is None else str(s) for s in spatial)}, {channels or 'any'})"
    rank = len(spatial) + 2
    if len(shape) == rank - 1 and (channels is None or shape[-1] == channels):
        raise ValueError(f"{name} has shape {shape} without a batch axis; the model takes {want}. "
                         f"Add one, e.g. x[None].")
    if len(shape) != rank:
        kind = {1: "1D", 2: "2D", 3: "3D"}.get(len(spatial), f"{len(spatial)}D")
        raise ValueError(f"{name} has shape {shape} ({len(shape)} axes); this {kind} model takes {rank} axes "
                         f"{want}.")
    if channels is not None and shape[-1] != channels:
        if shape[1] == channels:
            raise ValueError(f"{name} has shape {shape}, which looks channels-first; the model takes "
                             f"channels-last {want}. Move the axis, e.g. np.moveaxis(x, 1, -1).")
        raise ValueError(f"{name} has {shape[-1]} channels (shape {shape}); the model takes {channels}: {want}.")
    got = shape[1:-1]
    fixed_bad = [i for i, s in enumerate(spatial) if s is not None and got[i] != s]
    if fixed_bad:
        raise ValueError(f"{name} has spatial size {got}; the model takes {tuple(spatial)} {want}. "
                         "Resize or crop the input to that size.")
    if probe and any(s is None for s in spatial):
        dtype = getattr(model.inputs[0], "dtype", "float32") or "float32"
        if not _runs(model, got, channels, dtype):
            near = nearest_valid_size(model, got)
            hint = f" The nearest size it takes is {near}: pad or crop to it." if near else ""
            raise ValueError(f"{name} has spatial size {got}, which the model cannot take "
                             f"(its down/up-sampling needs other sizes).{hint}")
    return x
