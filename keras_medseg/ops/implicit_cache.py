"""Inference cache of the implicit solve's transfer function (used by the implicit layers)."""

import keras
import numpy as np
from keras import ops

from keras_medseg.ops.implicit import _fft_dtype, depthwise_inverse_symbol


def _is_concrete(x):
    """True when `x` holds values now (eager), False inside a trace/compile or for a symbolic tensor."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly() and not isinstance(x, keras.KerasTensor)
    if backend == "jax":
        import jax

        return not isinstance(x, (jax.core.Tracer, keras.KerasTensor))
    if backend == "torch":
        import torch

        return (isinstance(x, torch.Tensor) and x.device.type != "meta"
                and not torch.compiler.is_compiling())
    return not isinstance(x, keras.KerasTensor)


def _gradient_possible(kernel):
    """Whether a gradient with respect to `kernel` may be being recorded right now (eager)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        try:
            from tensorflow.python.eager import record
        except ImportError:  # private module moved: assume a tape could be recording
            return True
        return bool(record.could_possibly_record())
    if backend == "torch":
        import torch

        return torch.is_grad_enabled() and bool(getattr(kernel, "requires_grad", False))
    return False  # JAX differentiates through tracers, which are never concrete


__all__ = ["TransferCache"]


class TransferCache:
    """Inference cache of `depthwise_inverse_symbol` for one implicit layer.

    `inverse_symbol(kernel, h, spatial, dtype)` returns the cached multiplier
    `1 / (1 + h |c^|^2)` when `kernel` and `h` hold the same values as when it
    was formed for this image size and dtype, and forms (and stores) it
    otherwise. Values are compared, not object identities, so any change of
    the weights (optimizer step, `assign`, `set_weights`, `load_weights`)
    invalidates the entry; the comparison costs one copy of the few kernel
    taps to the host.

    The cache is used only where it is safe: concrete (eager) tensors and no
    gradient possibly recorded (no active `tf.GradientTape`, torch grad mode
    off or a kernel without `requires_grad`). Inside `tf.function`,
    `jax.jit` or `torch.compile` (compiled `predict` on TensorFlow and JAX),
    and whenever a gradient may be needed, it returns None and the solve forms
    the transfer function itself, as without a cache: no Python side effect
    reaches a trace.
    """

    def __init__(self):
        self._entries = {}

    def clear(self):
        """Drop every cached transfer function."""
        self._entries.clear()

    def __len__(self):
        return len(self._entries)

    def inverse_symbol(self, kernel, h, spatial, dtype):
        """The cached (or newly formed) multiplier, or None where caching is not safe.

        Args:
            kernel: depthwise kernel `(*kernel_size, C)` (tensor).
            h: step size (Python number or scalar tensor).
            spatial: tuple of the image sizes.
            dtype: dtype of the right-hand side.

        Returns:
            `(C, S_0, ..., S_{d-1} // 2 + 1)` tensor, or None.
        """
        if not _is_concrete(kernel) or (hasattr(h, "dtype") and not _is_concrete(h)):
            return None
        if _gradient_possible(kernel) or (hasattr(h, "dtype") and _gradient_possible(h)):
            return None
        fft_dtype = _fft_dtype(dtype)
        kernel_value = np.asarray(ops.convert_to_numpy(kernel))
        h_value = np.asarray(ops.convert_to_numpy(h) if hasattr(h, "dtype") else h, dtype="float64")
        key = (tuple(int(s) for s in spatial), fft_dtype)
        entry = self._entries.get(key)
        if entry is not None and np.array_equal(entry[0], kernel_value) and np.array_equal(entry[1], h_value):
            return entry[2]
        k = ops.cast(kernel, fft_dtype)
        h_t = ops.cast(h, fft_dtype) if hasattr(h, "dtype") else ops.convert_to_tensor(h, dtype=fft_dtype)
        inverse = depthwise_inverse_symbol(k, key[0], h_t)
        self._entries[key] = (kernel_value.copy(), h_value, inverse)
        return inverse
