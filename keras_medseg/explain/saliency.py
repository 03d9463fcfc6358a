"""Gradient saliency maps and SmoothGrad."""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np

from keras_medseg.explain._scores import check_explain_input, input_gradients, make_score_fn, one_line_errors
from keras_medseg.utils.validation import check_positive, check_positive_int


def saliency(model: keras.Model, x: np.ndarray, class_index: int | Callable, batch_size: int = 32) -> np.ndarray:
    """Gradient saliency map `max_c |d y_i / d x_c|` (Simonyan et al., 2014).

    The first-order Taylor expansion of the score around `x` is a local linear
    model; its weights, in absolute value and maximised over channels, rank the
    input pixels / voxels by their influence on the score. The gradient of
    each batch is one call of a compiled function (`tf.function` watching only
    the input on TensorFlow, `jax.jit` on JAX, eager on torch) cached per
    model, target and batch shape, so repeated calls do not trace again.
    Checked against tf-keras-vis `Saliency` (tests/explain/test_compiled.py).

    Args:
        model: a Keras model taking `(N, *S, C)` inputs.
        x: input batch, 2D `(N, H, W, C)` or 3D `(N, D, H, W, C)`.
        class_index: int class index, or a score function `fn(y) -> (N,)`
            such as `keras_medseg.explain.region_score(...)` for segmentation.
        batch_size: int, samples per gradient evaluation. Defaults to 32.

    Returns:
        NumPy float32 array `(N, H, W)` or `(N, D, H, W)`.

    Raises:
        ValueError: `x` is not a 2D/3D channels-last batch the model takes
            (channels-first, a volume for a 2D model, a size it cannot take),
            holds NaN/Inf, or `class_index` is not an output of the model; all
            in one line naming the argument. TypeError: `class_index` neither
            int nor callable.

    Example:

    >>> maps = keras_medseg.explain.saliency(model, x, class_index=0)

    Reference:
        The lecture "Convolutional networks - theory" (gradient saliency
        maps); Simonyan, Vedaldi,
        Zisserman, "Deep inside convolutional networks", 2014.
    """
    x = check_explain_input(model, x, class_index)
    score_fn = make_score_fn(class_index)
    with one_line_errors(model, x):
        g = input_gradients(model, x, score_fn, batch_size=batch_size)
    return np.max(np.abs(g), axis=-1)


def smoothgrad(model: keras.Model, x: np.ndarray, class_index: int | Callable, samples: int = 16, noise: float = 0.15,
               batch_size: int = 32, seed: int = 0) -> np.ndarray:
    """SmoothGrad: saliency maps averaged over noisy copies of the input.

    For every sample, `samples` copies `x + eps`, `eps ~ N(0, sigma^2)` with
    `sigma = noise * (max(x) - min(x))` (per sample), are stacked into one
    batch and differentiated together (no Python loop per noisy copy); the
    saliency maps `max_c |dy/dx_c|` of the copies are averaged. All copies
    go through the same compiled gradient function as `saliency`,
    `batch_size` copies per call.

    Args:
        model: a Keras model taking `(N, *S, C)` inputs.
        x: input batch `(N, H, W, C)` or `(N, D, H, W, C)`.
        class_index: int class index or score function `fn(y) -> (N,)`.
        samples: int, noisy copies per input. Defaults to 16.
        noise: float >= 0, noise standard deviation as a fraction of the
            sample's intensity range. Defaults to 0.15.
        batch_size: int, copies per gradient evaluation. Defaults to 32.
        seed: int, seed of the noise. Defaults to 0.

    Returns:
        NumPy float32 array `(N, *S)`.

    Raises:
        ValueError: bad `x` (as `saliency`), `samples < 1` or `noise < 0`.

    Example:

    >>> maps = keras_medseg.explain.smoothgrad(model, x, 0, samples=8, noise=0.1)

    Reference:
        The lecture "Convolutional networks - theory" (SmoothGrad); Smilkov et al., "SmoothGrad: removing
        noise by adding noise", 2017.
    """
    x = check_explain_input(model, x, class_index)
    samples = check_positive_int(samples, "samples")
    noise = check_positive(noise, "noise", allow_zero=True)
    score_fn = make_score_fn(class_index)
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    axes = tuple(range(1, x.ndim))
    sigma = noise * (x.max(axis=axes) - x.min(axis=axes))  # (N,)
    sigma = sigma.reshape((n,) + (1,) * (x.ndim - 1))
    # (N, samples, *S, C) -> (N * samples, *S, C): every copy in one stack.
    noisy = x[:, None] + rng.standard_normal((n, samples) + x.shape[1:]).astype("float32") * sigma[:, None]
    noisy = noisy.reshape((n * samples,) + x.shape[1:])
    with one_line_errors(model, x):
        g = input_gradients(model, noisy, score_fn, batch_size=batch_size)
    maps = np.max(np.abs(g), axis=-1).reshape((n, samples) + x.shape[1:-1])
    return maps.mean(axis=1).astype("float32")
