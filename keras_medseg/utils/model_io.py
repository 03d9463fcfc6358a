"""Loading model files safely: the one place where keras-medseg opens a `.keras` file.

Everything the project writes loads with `safe_mode=True`; a file that needs
arbitrary code to load (a `Lambda` layer, a pickled function) is refused with
a message that says so, and a missing, truncated or non-Keras file gives an
error that names it.
"""

import os
import zipfile

import keras

__all__ = ["load_model"]


def load_model(path, compile=True):
    """Load a `.keras` model file with `safe_mode=True`.

    Args:
        path: path to a `.keras` file.
        compile: whether to restore the training configuration too.

    Returns:
        The `keras.Model`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: not a `.keras` file, corrupt/truncated, or refused by safe
            mode (e.g. it contains a `Lambda` layer).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model file not found: {path}")
    if not path.endswith(".keras"):
        raise ValueError(f"Expected a '.keras' model file. Received: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"Model file {path} is corrupt or truncated (not a readable .keras archive).")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except ValueError as exc:
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise ValueError(
                f"Refusing to load {path}: it contains code that only loads with safe_mode=False "
                f"(e.g. a Lambda layer). keras-medseg loads models with safe_mode=True only; rebuild the "
                f"model from registered layers, or load it yourself if you trust its source."
            ) from exc
        raise ValueError(f"Could not load model file {path}: {text}") from exc
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise ValueError(f"Model file {path} is corrupt or truncated: {exc}") from exc
