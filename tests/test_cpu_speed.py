"""TensorFlow's oneDNN switch: the suite runs with it on, and the 3D warning fires only where it is off."""

import os
import subprocess
import sys

import keras
import pytest

from keras_medseg.utils import cpu_speed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROBE = ("import warnings, keras; warnings.simplefilter('always');"
          "from keras_medseg import zoo; from keras_medseg.utils.cpu_speed import tensorflow_onednn_enabled;"
          "zoo.build('unet', spatial_dims=3, **zoo.get_spec('unet').tiny);"
          "print('onednn', tensorflow_onednn_enabled())")


def test_onednn_reported_as_none_without_tensorflow_loaded():
    if "tensorflow" in sys.modules:
        assert cpu_speed.tensorflow_onednn_enabled() in (True, False, None)
    else:
        assert cpu_speed.tensorflow_onednn_enabled() is None


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow switch")
def test_zoo_build_3d_warns_once_with_onednn_off():
    """A fresh process with TF_ENABLE_ONEDNN_OPTS=0: two 3D builds, one warning naming the variable."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", _PROBE + ";" + _PROBE], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "onednn False" in out.stdout, out.stdout
    assert out.stderr.count("TensorFlow's oneDNN kernels are off") == 1, out.stderr
    assert "TF_ENABLE_ONEDNN_OPTS=0" in out.stderr


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow switch")
def test_the_suite_runs_with_onednn_on_and_does_not_warn(monkeypatch):
    """tests/conftest.py sets TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow is imported; on x86 it takes effect."""
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"
    assert cpu_speed.tensorflow_onednn_enabled() in (True, None)
    monkeypatch.setattr(cpu_speed, "_warned", False)
    assert cpu_speed.warn_if_slow_conv3d_gradients() is False
