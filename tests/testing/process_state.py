"""Process-wide flags a test could leave switched on for every later test in its pytest worker.

pytest-xdist runs many tests in one process, so a test that turns on
TensorFlow op determinism, changes Keras' dtype policy or float type, sets
`TF_DETERMINISTIC_OPS`, switches torch to deterministic algorithms or JAX to
another matmul precision changes the speed (or the numbers) of every test that
runs after it in that worker. `snapshot()` reads those flags (only from the
libraries already imported: reading never imports a backend), `diff(before,
after)` names what changed and `restore(state)` puts it back.
`tests/conftest.py` wraps every test in them and fails a test that leaks.
"""

import os
import sys

import keras

__all__ = ["ENV_FLAGS", "diff", "restore", "snapshot"]

# Environment variables that change how a backend computes (determinism, hashing, threads, oneDNN).
ENV_FLAGS = (
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_NUM_INTEROP_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "PYTHONHASHSEED",
    "OMP_NUM_THREADS",
    "XLA_FLAGS",
    "KERAS_BACKEND",
    "CUBLAS_WORKSPACE_CONFIG",
)


def _tf_state():
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return {}
    from tensorflow.python.framework import config as tf_config

    return {
        "tensorflow op determinism": bool(tf_config.is_op_determinism_enabled()),
        "tensorflow run_functions_eagerly": bool(tf.config.functions_run_eagerly()),
        "tensorflow jit (tf.config.optimizer.get_jit)": str(tf.config.optimizer.get_jit()),
    }


def _torch_state():
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "are_deterministic_algorithms_enabled"):
        return {}
    return {
        "torch deterministic algorithms": bool(torch.are_deterministic_algorithms_enabled()),
        "torch default dtype": str(torch.get_default_dtype()),
        "torch threads": int(torch.get_num_threads()),
    }


def _jax_state():
    jax = sys.modules.get("jax")
    if jax is None or not hasattr(jax, "config"):
        return {}
    return {
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
    }


def snapshot():
    """The current value of every guarded process-wide flag, as a flat dict of plain values."""
    state = {
        "keras dtype policy": keras.config.dtype_policy().name,
        "keras floatx": keras.config.floatx(),
        "keras epsilon": keras.config.epsilon(),
        "keras image_data_format": keras.config.image_data_format(),
        "keras distribution": repr(keras.distribution.distribution()),
    }
    state.update({f"env {name}": os.environ.get(name) for name in ENV_FLAGS})
    state.update(_tf_state())
    state.update(_torch_state())
    state.update(_jax_state())
    return state


def diff(before, after):
    """`[(flag, before, after)]` for every flag read in both snapshots whose value changed.

    A flag of a library first imported during the test is only in `after`, so a first import never counts.
    """
    return [(k, before[k], after[k]) for k in before if k in after and before[k] != after[k]]


def restore(state):
    """Put every flag of `state` back (best effort; returns the flags that could not be restored)."""
    failed = []
    for key, value in state.items():
        try:
            _restore_one(key, value)
        except Exception:  # noqa: BLE001 - report, do not mask the test's own outcome
            failed.append(key)
    return failed


def _restore_one(key, value):
    if key.startswith("env "):
        name = key[4:]
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    elif key == "keras dtype policy":
        keras.config.set_dtype_policy(value)
    elif key == "keras floatx":
        keras.config.set_floatx(value)
    elif key == "keras epsilon":
        keras.config.set_epsilon(value)
    elif key == "keras image_data_format":
        keras.config.set_image_data_format(value)
    elif key == "keras distribution":
        if value == "None":
            keras.distribution.set_distribution(None)
    elif key == "tensorflow op determinism":
        from tensorflow.python.framework import config as tf_config

        (tf_config.enable_op_determinism if value else tf_config.disable_op_determinism)()
    elif key == "tensorflow run_functions_eagerly":
        sys.modules["tensorflow"].config.run_functions_eagerly(value)
    elif key == "tensorflow jit (tf.config.optimizer.get_jit)":
        sys.modules["tensorflow"].config.optimizer.set_jit(value if value in ("autoclustering",) else False)
    elif key == "torch deterministic algorithms":
        sys.modules["torch"].use_deterministic_algorithms(value)
    elif key == "torch default dtype":
        torch = sys.modules["torch"]
        torch.set_default_dtype(getattr(torch, value.replace("torch.", "")))
    elif key == "torch threads":
        sys.modules["torch"].set_num_threads(value)
    elif key == "jax_enable_x64":
        sys.modules["jax"].config.update("jax_enable_x64", value)
    elif key == "jax_default_matmul_precision":
        sys.modules["jax"].config.update("jax_default_matmul_precision", None if value == "None" else value)
