"""keras-medseg: a Keras 3 model zoo for medical image analysis.

`from keras_medseg import ops, layers, zoo` - PDE-inspired plugin layers
(upwind and curvature convolutions, edge indicators, implicit FFT steps,
attention pooling) and the models built from them.

Importing the package imports Keras and registers every layer, loss, metric
and model. The one exception is the `keras-medseg` command line
(`keras-medseg ...` or `python -m keras_medseg ...`): there the sub-modules
are imported on first use, so `--help`, `--version`, `list` and `info` start
without a backend, and `keras_medseg.cli` imports them all before a command
that needs Keras runs. Importing the package changes no environment
variable (the command line quiets TensorFlow's logging for itself).
"""

import importlib
import os
import sys

from keras_medseg.version import __version__

_SUBMODULES = ("ops", "layers", "losses", "metrics", "zoo")


def _started_as_cli():
    """True when this process is the `keras-medseg` console script or `python -m keras_medseg`."""
    if os.environ.get("KERAS_MEDSEG_LAZY_IMPORT") == "1":
        return True
    if sys.argv and os.path.basename(sys.argv[0]).split(".")[0] in ("keras-medseg", "keras-medseg-script"):
        return True
    orig = list(getattr(sys, "orig_argv", []))
    for i, arg in enumerate(orig[:-1]):
        if arg == "-m":
            return orig[i + 1] in ("keras_medseg", "keras_medseg.cli")
    return False


def _import_all():
    """Import (and so register) every sub-module; what a plain `import keras_medseg` does.

    First, if Keras' backend is not installed (the base install has none), one `ImportError` line says which
    extra or `KERAS_BACKEND` value fixes it.
    """
    if "keras" not in sys.modules:
        from keras_medseg.utils.quiet_backend import check_backend_installed

        check_backend_installed()
    for name in _SUBMODULES:
        globals()[name] = importlib.import_module(f"keras_medseg.{name}")


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f"keras_medseg.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'keras_medseg' has no attribute {name!r}")


if not _started_as_cli():
    _import_all()  # registers MeanDice & co. for keras.saving.load_model

__all__ = ["__version__", "layers", "losses", "metrics", "ops", "zoo"]
