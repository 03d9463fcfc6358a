"""Several devices of one process: the scopes of the engines that already exist.

keras-medseg does not ship a distribution engine of its own. `distribution_scope`
opens the scope of the engine that fits the backend:

* `"mirrored"`: `tf.distribute.MirroredStrategy` (TensorFlow; several GPUs or
  logical CPU devices on one host);
* `"jax-data-parallel"`: `keras.distribution.DataParallel` (JAX; every local
  device, or the ones given).

Several processes (one per GPU, or several hosts) on any backend: the
`processes=` argument of the training functions
(`keras_medseg.training.distribute.process_group`).

Build and compile the model inside the scope; `fit` then splits each global
batch across the replicas and averages gradients, so the loss after N steps
matches single-device training with the same global batch.

Example:
>>> with keras_medseg.training.distribute.distribution_scope("mirrored"):
...     model = keras_medseg.zoo.build("unet", batch_norm=False)
>>> model.fit(x, y, batch_size=16)  # 8 per replica on 2 devices
"""

import contextlib

import keras

STRATEGIES = ("none", "mirrored", "jax-data-parallel")

__all__ = ["STRATEGIES", "distribution_scope", "num_replicas"]


def _require_backend(name, backend):
    if keras.backend.backend() != backend:
        raise ValueError(
            f"`distribute={name!r}` needs the {backend!r} backend. "
            f"Received: KERAS_BACKEND={keras.backend.backend()!r}. "
            f"Use {'mirrored' if backend == 'jax' else 'jax-data-parallel'} instead, "
            f"or set KERAS_BACKEND={backend}."
        )


@contextlib.contextmanager
def distribution_scope(distribute=None, devices=None):
    """Context manager that builds models for multi-device training.

    Args:
        distribute: one of `None`/"none", "mirrored", "jax-data-parallel".
        devices: optional device list (TensorFlow device names such as
            `"/cpu:0"`, or JAX devices) for "mirrored" and "jax-data-parallel".

    Yields:
        The strategy / distribution object (`None` for "none").

    Raises:
        ValueError: unknown `distribute` value, or one that needs the other backend.
    """
    name = "none" if distribute is None else distribute
    if name == "multiworker":
        raise ValueError("`distribute='multiworker'` is now `processes=N` (with `coordinator`/`process_id` on "
                         "several hosts): one process per GPU or host, on any backend. Received: distribute="
                         "'multiworker'")
    if name not in STRATEGIES:
        raise ValueError(f"`distribute` must be one of {list(STRATEGIES)}. Received: distribute={distribute!r}")
    if name == "none":
        yield None
        return
    if name == "mirrored":
        _require_backend(name, "tensorflow")
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(devices=devices)
        with strategy.scope():
            yield strategy
        return
    _require_backend(name, "jax")
    if devices is None:
        devices = keras.distribution.list_devices()
    distribution = keras.distribution.DataParallel(devices=devices)
    with distribution.scope():
        yield distribution


def num_replicas(scope_object):
    """Number of replicas of the object yielded by `distribution_scope` (1 for none)."""
    if scope_object is None:
        return 1
    if hasattr(scope_object, "num_replicas_in_sync"):
        return int(scope_object.num_replicas_in_sync)
    mesh = getattr(scope_object, "device_mesh", None)
    return int(mesh.devices.size) if mesh is not None else 1
