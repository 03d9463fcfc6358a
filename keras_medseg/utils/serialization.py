"""One decorator that registers every keras-medseg object for `.keras` saving."""

import keras

PACKAGE = "keras_medseg"


def register(obj=None, *, name=None):
    """Register a layer, loss, metric, initializer or model as serialisable.

    Wraps `keras.saving.register_keras_serializable(package="keras_medseg")` so
    that objects saved in a `.keras` file load again with `safe_mode=True`.
    Use as `@register` or `@register(name="Custom")`.
    """

    def decorator(o):
        return keras.saving.register_keras_serializable(package=PACKAGE, name=name)(o)

    if obj is None:
        return decorator
    return decorator(obj)
