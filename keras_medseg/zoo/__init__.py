"""The model zoo: `keras_medseg.zoo.build(name, **kwargs)`, `list()`, `describe(name)`.

Each model family lives in its own module; importing this package registers
them all.
"""

from keras_medseg.zoo.registry import build, describe, get_spec, list, register_model

# Model families (one import per file; importing registers the builders).
# -- add new families below, one line each --

__all__ = ["build", "describe", "get_spec", "list", "register_model"]
