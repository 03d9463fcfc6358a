"""Activation maximisation: the input that maximises a class score."""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras
import numpy as np
from keras import ops

from keras_medseg.explain._scores import (
    check_explain_input,
    ensure_built,
    make_score_fn,
    model_input_dtype,
    one_line_errors,
    score_key,
)
from keras_medseg.utils.gradients import compiled_call
from keras_medseg.utils.validation import check_positive, check_positive_int, spatial_rank


@dataclasses.dataclass
class ActivationMaximization:
    """Result of `keras_medseg.explain.activation_maximization`.

    Attributes:
        x: float32 `(1, *S, C)`, the optimised input.
        history: float array `(steps + 1,)`, the class score `y_i(x)` before
            each step and after the last one.
        objective: float array `(steps + 1,)`, `y_i(x) - l2 * |x|^2`.
    """

    x: np.ndarray
    history: np.ndarray
    objective: np.ndarray


def activation_maximization(model: keras.Model, class_index: int | Callable, steps: int = 100, l2: float = 1e-3,
                            learning_rate: float = 0.05, input_shape: tuple | None = None,
                            x0: np.ndarray | None = None, seed: int = 0,
                            init_scale: float = 0.01) -> ActivationMaximization:
    """Gradient ascent on `y_i(x) - l2 * |x|^2` starting from small noise.

    Each step is an Adam ascent step on the objective (`learning_rate` is
    then about the change of each pixel per step, independent of the
    score's scale; momentum keeps the ascent stable).

    Args:
        model: a Keras model with one `(N, *S, C)` input.
        class_index: int class index or score function `fn(y) -> (N,)`.
        steps: int >= 1, ascent steps. Defaults to 100.
        l2: float >= 0, weight `lambda` of the `|x|^2` penalty. Defaults to 1e-3.
        learning_rate: float > 0, Adam step length. Defaults to 0.05.
        input_shape: `(*S, C)`; default None takes the model's input shape
            (needed when that has unknown sizes).
        x0: optional start `(1, *S, C)` (default: `init_scale` Gaussian noise).
        seed: int, seed of the start noise. Defaults to 0.
        init_scale: float, standard deviation of the start noise. Defaults to 0.01.

    Returns:
        `ActivationMaximization` with `x` `(1, *S, C)` and the score history.

    Raises:
        ValueError: unknown input sizes without `input_shape`, or bad
            `steps` / `l2` / `learning_rate`.

    Example:

    >>> am = keras_medseg.explain.activation_maximization(model, 1, steps=50)
    >>> am.history[-1] > am.history[0]

    Reference:
        The lecture "Convolutional networks - theory" (activation
        maximisation); Erhan et al.,
        "Visualizing higher-layer features of a deep network", 2009.
    """
    steps = check_positive_int(steps, "steps")
    l2 = check_positive(l2, "l2", allow_zero=True)
    learning_rate = check_positive(learning_rate, "learning_rate")
    score_fn = make_score_fn(class_index)
    if x0 is not None:
        x = np.asarray(x0, dtype="float32")
        spatial_rank(x, "x0")
        if x.shape[0] != 1:
            raise ValueError(f"`x0` must hold one sample (1, *S, C). Received: x0.shape={x.shape}")
        x = check_explain_input(model, x, class_index, name="x0")
    else:
        if input_shape is None:
            try:
                input_shape = tuple(model.inputs[0].shape[1:])
            except (AttributeError, IndexError, TypeError) as exc:
                raise ValueError("Pass `input_shape=(*S, C)`: the model has no known input shape.") from exc
        input_shape = tuple(input_shape)
        if any(s is None for s in input_shape) or len(input_shape) not in (3, 4):
            raise ValueError(
                f"`input_shape` must be a fully known (*S, C) with 2 or 3 spatial axes. "
                f"Received: input_shape={input_shape}"
            )
        rng = np.random.default_rng(seed)
        x = (init_scale * rng.standard_normal((1,) + input_shape)).astype("float32")
        x = check_explain_input(model, x, class_index, name="input_shape")
    dtype = model_input_dtype(model)

    key = ("activation_maximization", score_key(score_fn), float(l2), str(dtype))

    def objective(call, inp):
        s = ops.sum(ops.cast(score_fn(call(ops.cast(inp, dtype))), "float32"))
        return s - l2 * ops.sum(inp * inp), s

    with one_line_errors(model, x, "x0" if x0 is not None else "input_shape"):
        ensure_built(model, x)
        return _ascend(model, key, objective, x, steps, learning_rate)


def _ascend(model, key, objective, x, steps, learning_rate):
    history, objectives = [], []
    beta1, beta2, t = 0.9, 0.999, 0
    m1, m2 = np.zeros_like(x), np.zeros_like(x)
    for _ in range(steps + 1):
        # one compiled forward + backward per step (cached per model, target and l2)
        value, g, s = compiled_call(model, key, objective, x, grad=True)
        objectives.append(float(ops.convert_to_numpy(value)))
        history.append(float(ops.convert_to_numpy(s)))  # y_i(x) without the penalty
        if len(history) > steps:
            break
        g = ops.convert_to_numpy(g).astype("float32")
        # Adam ascent step (bias-corrected moments): per-pixel step sizes and
        # momentum keep the ascent stable where a plain step oscillates.
        t += 1
        m1 = beta1 * m1 + (1 - beta1) * g
        m2 = beta2 * m2 + (1 - beta2) * g * g
        x = x + learning_rate * (m1 / (1 - beta1 ** t)) / (np.sqrt(m2 / (1 - beta2 ** t)) + 1e-8)
    return ActivationMaximization(x=x.astype("float32"), history=np.array(history), objective=np.array(objectives))
