"""TensorFlow's oneDNN kernels on the CPU: whether they are on, and a one-time warning where it matters.

TensorFlow 2.9+ turns its oneDNN (Intel MKL-DNN) kernels on by default only
on CPUs with AVX-512 VNNI/BF16 or AMX; elsewhere (AMD EPYC up to Zen 3, older
Intel) it falls back to generic Eigen kernels unless `TF_ENABLE_ONEDNN_OPTS=1`
is set before TensorFlow is imported. For most ops the difference is small,
but a strided Conv3D's gradient runs as thousands of tiny matrix products:
measured on a 2-core AMD EPYC (Zen 3), input and filter gradients of a
3x3x3 stride-2 convolution on 8 x 24^3 x 8 took 1.3 s and 2.6 s with the
default, 13 ms and 4 ms with oneDNN on, so one training step of a small 3D
FPN detector took 2.2 s instead of 0.2 s. The `keras-medseg` command line
sets the variable for itself (`utils.quiet_backend.import_backend`);
`keras_medseg.zoo.build` of a 3D model warns once when it is off.
"""

import os
import sys
import warnings

__all__ = ["tensorflow_onednn_enabled", "warn_if_slow_conv3d_gradients"]

_warned = False


def tensorflow_onednn_enabled():
    """True/False whether TensorFlow (already imported) runs its oneDNN kernels; None if TensorFlow is not loaded."""
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow build without the probe
        return None
    return bool(_pywrap_util_port.IsMklEnabled()) if _pywrap_util_port.IsX86Available() else None


def warn_if_slow_conv3d_gradients():
    """Warn once per process when Keras runs on TensorFlow with oneDNN off on an x86 CPU.

    Returns:
        True if the warning was issued by this call.
    """
    global _warned
    import keras

    if _warned or keras.backend.backend() != "tensorflow" or tensorflow_onednn_enabled() is not False:
        return False
    _warned = True
    warnings.warn(
        "TensorFlow's oneDNN kernels are off on this CPU (TF_ENABLE_ONEDNN_OPTS="
        f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}): training 3D models with strided convolutions runs "
        "about 10x slower here. Set TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow is imported (the keras-medseg "
        "command line does this itself).",
        RuntimeWarning,
        stacklevel=3,
    )
    return True
