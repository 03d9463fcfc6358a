"""Batches for the GAN epoch loops: arrays, `keras.utils.PyDataset`, `tf.data.Dataset` or iterables."""

import keras
import numpy as np
from keras import ops


def _as_tensor(v):
    return None if v is None else ops.convert_to_tensor(v)


def _num_batches(x, batch_size):
    """Batches per epoch of arrays, a `PyDataset` or a sized `tf.data.Dataset`; `None` if unknown."""
    if isinstance(x, keras.utils.PyDataset):
        return len(x)
    if hasattr(x, "shape"):
        return -(-int(x.shape[0]) // batch_size)
    if hasattr(x, "cardinality"):  # tf.data.Dataset
        n = int(x.cardinality())
        return n if n > 0 else None
    return len(x) if hasattr(x, "__len__") else None


def _batches(x, y, batch_size, shuffle=False, steps=None):
    """Yield `(x, y)` NumPy batches from arrays, a `PyDataset`, a `tf.data.Dataset` or an iterable.

    Arrays are cut into `batch_size` batches (shuffled when `shuffle`); the
    others give their own batches (`(x,)`, `(x, y)` or `(x, y, w)` tuples, or a
    bare `x`). At most `steps` batches when `steps` is given.
    """
    if hasattr(x, "shape"):
        x = np.asarray(x)
        n = int(x.shape[0])
        if y is not None:
            y = np.asarray(y)
            if int(y.shape[0]) != n:
                raise ValueError("`x` and `y` must hold the same number of samples. "
                                 f"Received: x.shape={x.shape}, y.shape={y.shape}")
        order = np.random.default_rng().permutation(n) if shuffle else np.arange(n)
        source = ((x[idx], None if y is None else y[idx])
                  for idx in (order[i:i + batch_size] for i in range(0, n, batch_size)))
    else:
        if y is not None:
            raise ValueError("`y` must be None when `x` is a dataset (the dataset yields the targets). "
                             f"Received: y of type {type(y).__name__}")
        if isinstance(x, keras.utils.PyDataset):
            items = (x[i] for i in range(len(x)))
        elif hasattr(x, "as_numpy_iterator"):  # tf.data.Dataset
            items = x.as_numpy_iterator()
        elif hasattr(x, "__iter__"):
            items = iter(x)
        else:
            raise ValueError("`x` must be an array, a keras.utils.PyDataset, a tf.data.Dataset or an "
                             f"iterable of batches. Received: x of type {type(x).__name__}")

        def unpack(item):
            item = tuple(item) if isinstance(item, (tuple, list)) else (item,)
            bx, by, _ = keras.utils.unpack_x_y_sample_weight(item)
            return np.asarray(bx), None if by is None else np.asarray(by)

        source = (unpack(item) for item in items)
    for i, batch in enumerate(source):
        if steps is not None and i >= steps:
            break
        yield batch
