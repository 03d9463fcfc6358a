"""Import Keras and its backend without the C++ start-up noise (CUDA probing, absl, oneDNN lines).

TensorFlow writes lines such as "Could not find cuda drivers on your machine"
and "WARNING: All log messages before absl::InitializeLog() is called are
written to STDERR" from C++ straight to file descriptor 2 while it is being
imported, before `TF_CPP_MIN_LOG_LEVEL` is read by its logger, so neither that
variable nor Python's `warnings` hides them. `import_backend(verbose=False)`
sets `TF_CPP_MIN_LOG_LEVEL=3` (hides the later "failed call to cuInit" error),
points fd 2 at a temporary file for the duration of the import, and then
writes back every captured line that is not one of those known start-up
notices, so a real error message is never swallowed. It also sets
`TF_ENABLE_ONEDNN_OPTS=1` unless the caller chose a value: TensorFlow's
oneDNN kernels, off by default on CPUs without AVX-512 VNNI, make 3D training
about 10x faster there (`keras_medseg.utils.cpu_speed`), and
`JAX_THREEFRY_PARTITIONABLE=0` unless the caller chose a value: JAX 0.10's
default random-number kernel compiles for every new weight shape in 1.5-6 s
on the CPU (0.3 s for the classic one), which made building a small 3D UNet
3.5x slower (weights are replicated, so the sharded kernel buys nothing here).
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

__all__ = ["check_backend_installed", "configured_backend", "import_backend", "is_startup_noise"]

_NOISE = re.compile(
    r"(All log messages before absl::InitializeLog|cudart_stub\.cc|cuda_dnn\.cc|cuda_fft\.cc|cuda_blas\.cc|"
    r"cuda_platform\.cc|cuda_executor\.cc|cuInit|oneDNN custom operations|cpu_feature_guard\.cc|"
    r"To enable the following instructions|rebuild TensorFlow with the appropriate compiler flags|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
    r"TF-TRT Warning|port\.cc:\d+\] oneDNN)"
)


def is_startup_noise(line):
    """Whether `line` is one of TensorFlow/absl's known start-up notices (CUDA probing, oneDNN, CPU flags)."""
    return bool(_NOISE.search(line))


@contextlib.contextmanager
def _captured_stderr_fd():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters)
        yield None
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield tmp
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines() if not is_startup_noise(ln)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


_BACKENDS = ("tensorflow", "jax", "torch")  # each installed by the extra of its name


def configured_backend():
    """The backend Keras will use (KERAS_BACKEND, else `$KERAS_HOME/keras.json` or `~/.keras/keras.json`, else
    tensorflow, Keras' default), found without importing Keras."""
    import json

    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def check_backend_installed():
    """Raise one clear `BackendNotInstalledError` (an `ImportError`) when Keras' backend is not installed.

    Called before Keras would fail deep inside its import; the line says which backend, why it was chosen and
    which extra or variable fixes it. The base install of keras-medseg has no backend (extras `[tensorflow]`,
    `[jax]`, `[torch]`); without `KERAS_BACKEND`, Keras picks TensorFlow.
    """
    import importlib.util

    from keras_medseg.utils.errors import BackendNotInstalledError

    backend = configured_backend()
    if backend not in _BACKENDS or importlib.util.find_spec(backend) is not None:
        return backend
    installed = [b for b in _BACKENDS if importlib.util.find_spec(b) is not None]
    why = "KERAS_BACKEND" if os.environ.get("KERAS_BACKEND") else "Keras' default, as KERAS_BACKEND is not set"
    fix = (f"set KERAS_BACKEND={installed[0]} (installed)" if installed
           else "no backend is installed")
    raise BackendNotInstalledError(f"Keras would run on {backend} ({why}) but {backend} is not installed: {fix}, "
                                   f"or install it with pip install 'keras-medseg[{backend}]'.")


def import_backend(verbose=False):
    """Import Keras (and so its backend) quietly; with `verbose=True`, as is.

    Args:
        verbose: bool, default False. True leaves TensorFlow's logging alone.

    Returns:
        the `keras` module.
    """
    if "keras" not in sys.modules:
        check_backend_installed()
    if verbose or "keras" in sys.modules:
        import keras

        return keras
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("KERAS_MEDSEG_TF_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # see keras_medseg.utils.cpu_speed
    os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")  # weight initialisation compiles 5-20x faster
    with _captured_stderr_fd():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf  # already imported by keras; probe the devices inside the capture

            try:
                tf.config.list_physical_devices("GPU")  # CUDA probing happens here, inside the capture
            except Exception as exc:  # noqa: BLE001 - device probing must never stop the command
                logging.getLogger(__name__).debug("GPU probing failed: %s", exc)
    return keras
