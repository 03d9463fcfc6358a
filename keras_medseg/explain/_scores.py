"""Score functions, input checks and batched model evaluation shared by the explainers.

Every explainer reduces the model output to one scalar score per sample:
`class_index` (an int) picks `y[:, class_index]` from a classifier output
`(N, K)`; for a dense (segmentation) output `(N, *S, K)` it sums the class
channel over all positions. `region_score(class_index, mask)` restricts that
sum to a region, and any callable `fn(y) -> (N,)` can be passed instead.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Callable

import numpy as np
from keras import ops

from keras_medseg.utils.gradients import compiled_call
from keras_medseg.utils.validation import check_positive_int, spatial_rank


def _first_output(y):
    if isinstance(y, dict):
        y = next(iter(y.values()))
    if isinstance(y, (list, tuple)):
        y = y[0]
    return y


def region_score(class_index: int, mask: np.ndarray | None = None) -> Callable:
    """Score function: sum of one class channel over a region of a dense output.

    Use it to explain segmentation models: the score of a sample is
    `sum_{p in mask} y[n, p, class_index]`.

    Args:
        class_index: int, the output channel (class) to score.
        mask: optional array broadcastable to the output's spatial grid
            `S` (shape `S` or `(N, *S)`), 1 inside the region. `None`
            (default) sums over the whole grid.

    Returns:
        A callable `fn(y) -> (N,)` tensor, usable as `class_index` of every
        explainer in `keras_medseg.explain`.

    Raises:
        ValueError: negative `class_index`, or a mask whose shape does not
            match the output grid (raised at call time).

    Example:

    >>> score = keras_medseg.explain.region_score(1, mask=np.ones((32, 32)))
    >>> maps = keras_medseg.explain.saliency(unet, x, score)
    """
    class_index = _check_class_index(class_index)
    mask_np = None if mask is None else np.asarray(mask, dtype="float32")

    def score(y):
        y = _first_output(y)
        if len(y.shape) < 3:
            raise ValueError(
                "`region_score` needs a dense output (N, *S, classes). "
                f"Received an output of shape {tuple(y.shape)}."
            )
        if class_index >= y.shape[-1]:
            raise ValueError(
                f"`class_index` must be < the number of output channels ({y.shape[-1]}). "
                f"Received: class_index={class_index}"
            )
        ch = y[..., class_index]
        if mask_np is not None:
            grid = tuple(y.shape[1:-1])
            if mask_np.shape != grid and mask_np.shape[1:] != grid:
                raise ValueError(
                    f"`mask` must have the output grid shape {grid} (or (N, *{grid})). "
                    f"Received: mask.shape={mask_np.shape}"
                )
            ch = ch * ops.cast(mask_np, ch.dtype)
        return ops.sum(ops.reshape(ch, (ops.shape(ch)[0], -1)), axis=1)

    score.class_index = class_index
    return score


def _check_class_index(class_index):
    if isinstance(class_index, bool) or not isinstance(class_index, numbers.Integral):
        raise TypeError(
            "`class_index` must be an int or a callable score function `fn(y) -> (N,)`. "
            f"Received: class_index={class_index!r}"
        )
    if class_index < 0:
        raise ValueError(f"`class_index` must be >= 0. Received: class_index={class_index}")
    return int(class_index)


def make_score_fn(class_index: int | Callable) -> Callable:
    """Turn an int class index or a callable into `fn(y) -> (N,)`."""
    if callable(class_index):
        user_fn = class_index

        def score(y):
            s = user_fn(y)
            if len(s.shape) != 1:
                raise ValueError(
                    "A score function must return one value per sample, shape (N,). "
                    f"Received a score of shape {tuple(s.shape)}."
                )
            return s

        # The key of the compiled functions: the user's callable itself (kept
        # alive by the cached function that closes over it, so its id is stable).
        score.key = ("fn", id(user_fn))
        return score
    class_index = _check_class_index(class_index)

    def score(y):
        y = _first_output(y)
        if class_index >= y.shape[-1]:
            raise ValueError(
                f"`class_index` must be < the number of model outputs ({y.shape[-1]}). "
                f"Received: class_index={class_index}"
            )
        s = y[..., class_index]
        if len(s.shape) > 1:  # dense output: sum over the grid
            s = ops.sum(ops.reshape(s, (ops.shape(s)[0], -1)), axis=1)
        return s

    score.key = ("class", class_index)
    return score


def score_key(score_fn):
    """The cache key of a score function made by `make_score_fn`."""
    return getattr(score_fn, "key", ("fn", id(score_fn)))


def ensure_built(model, x):
    """Build a model that has not been called yet (compiled functions need its variables)."""
    if not getattr(model, "built", True):
        model(ops.convert_to_tensor(x[:1]), training=False)


def check_batch(x, name="x"):
    """A float32 NumPy batch `(N, *S, C)` with 2 or 3 spatial axes."""
    if not hasattr(x, "shape"):
        raise TypeError(f"`{name}` must be an array of shape (N, *S, C). Received: {type(x).__name__}")
    x = np.asarray(x)
    spatial_rank(x, name)
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"`{name}` must be numeric. Received: {name}.dtype={x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one sample. Received: {name}.shape={x.shape}")
    return x.astype("float32")


def _num_outputs(model):
    try:
        return int(model.outputs[0].shape[-1])
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def check_explain_input(model, x, class_index, name="x"):
    """The checks every explainer makes before any computation: one line naming the argument on failure.

    `x` must be a finite `(N, *S, C)` batch laid out as the model takes it (the rank, the channel axis and
    fixed sizes are compared with `model.inputs[0]` by `keras_medseg.utils.input_layout.check_model_input`,
    without running the model), and an int `class_index` must be one of the model's outputs.

    Returns:
        `x` as float32.

    Raises:
        TypeError / ValueError: not an array, wrong rank or channels (channels-first, a volume for a 2D model),
            NaN/Inf values, a class the model does not output.
    """
    from keras_medseg.utils.finite import check_finite
    from keras_medseg.utils.input_layout import check_model_input

    x = check_batch(x, name)
    check_finite(x, f"`{name}`")
    check_model_input(x, model, f"`{name}`", probe=False)
    if not callable(class_index):
        class_index = _check_class_index(class_index)
        outputs = _num_outputs(model)
        if outputs is not None and class_index >= outputs:
            raise ValueError(f"`class_index` must be < the number of model outputs ({outputs}). "
                             f"Received: class_index={class_index}")
    return x


@contextlib.contextmanager
def one_line_errors(model, x, name="x"):
    """Turn a failure inside the model (a traced, many-line backend error) into one line about `x`.

    A one-line `ValueError`/`TypeError` passes unchanged. Anything else first asks
    `check_model_input` (which runs the model once on a zero sample of `x`'s size) whether `x` is the
    problem (e.g. a 66 x 66 image for a UNet that halves twice: it names the nearest size that works); if
    not, the last line of the backend's message is raised as one `ValueError`, the original chained (shown
    with `--debug`).
    """
    from keras_medseg.utils.input_layout import check_model_input

    try:
        yield
    except Exception as exc:  # noqa: BLE001 - backend errors come in many types
        text = str(exc).strip()
        if isinstance(exc, (ValueError, TypeError)) and "\n" not in text:
            raise
        check_model_input(x, model, f"`{name}`", probe=True)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        last = lines[-1] if lines else type(exc).__name__
        raise ValueError(f"The model failed on `{name}` of shape {tuple(np.shape(x))}: {last}") from exc


def model_input_dtype(model):
    try:
        return model.inputs[0].dtype
    except (AttributeError, IndexError, TypeError):
        return "float32"


def batched_scores(model, x, score_fn, batch_size=32, progress=None):
    """Scores `(M,)` of a large stack of inputs, `batch_size` at a time, through one compiled forward.

    The forward pass and the score are one compiled function per (model,
    score, batch shape), cached on the model (`compiled_call`), so
    occlusion and LIME pay the dispatch cost of one call per batch, not of
    every operation.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    ensure_built(model, x)
    key = ("scores", score_key(score_fn))

    def forward(call, xb):
        return ops.cast(score_fn(call(xb)), "float32")

    out = []
    for start in range(0, len(x), batch_size):
        s = compiled_call(model, key, forward, x[start:start + batch_size])
        out.append(ops.convert_to_numpy(s))
        if progress is not None:
            progress.update(min(batch_size, len(x) - start))
    return np.concatenate(out, axis=0) if out else np.zeros((0,), "float32")


def input_gradients(model, x, score_fn, batch_size=32):
    """`d score_n / d x_n` for every sample (scores of different samples are independent).

    One compiled forward + backward per batch (`compiled_call` with
    `grad=True`): on TensorFlow only the input is watched, on JAX the jitted
    gradient takes the model's variables as arguments.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    ensure_built(model, x)
    key = ("input_gradients", score_key(score_fn))

    def total(call, inp):
        return ops.sum(score_fn(call(inp))), ()

    grads = []
    for start in range(0, len(x), batch_size):
        _, g, _ = compiled_call(model, key, total, x[start:start + batch_size], grad=True)
        grads.append(ops.convert_to_numpy(ops.cast(g, "float32")))
    return np.concatenate(grads, axis=0)
