"""The model zoo: `keras_medseg.zoo.build(name, **kwargs)`, `list()`, `describe(name)`.

Each model family lives in its own module; importing this package registers
them all.
"""

# Model families (one name per file, sorted; importing registers the builders).
from keras_medseg.zoo import (
    attention_classifier,  # noqa: F401
    dynunet,  # noqa: F401
    fpn_detector,  # noqa: F401
    gan,  # noqa: F401
    imexnet,  # noqa: F401
    level_set,  # noqa: F401
    segresnet,  # noqa: F401
    swin_unetr,  # noqa: F401
    unet,  # noqa: F401
    unetr,  # noqa: F401
    vgg16_classifier,  # noqa: F401
)
from keras_medseg.zoo.registry import build, describe, example_batch, get_spec, list, register_model

__all__ = ["build", "describe", "example_batch", "get_spec", "list", "register_model"]
