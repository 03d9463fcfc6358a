"""Reproducible training on CPU: one call sets every seed and the determinism flags."""

import os

import keras

__all__ = ["set_deterministic"]


def set_deterministic(seed=0):
    """Seed Python, NumPy and the backend, and ask the backend for deterministic ops.

    `keras.utils.set_random_seed(seed)` plus, on TensorFlow,
    `tf.config.experimental.enable_op_determinism()` (which makes TensorFlow
    refuse ops that have no deterministic kernel instead of silently varying)
    and `TF_DETERMINISTIC_OPS=1`. JAX is deterministic on CPU once seeded.
    With these, two trainings of any zoo model on CPU give identical weights
    (tested in `tests/reliability/test_zoo_reliability.py`).

    Args:
        seed: integer seed (default 0).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int. Received: seed={seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        os.environ["TF_DETERMINISTIC_OPS"] = "1"
        tf.config.experimental.enable_op_determinism()
