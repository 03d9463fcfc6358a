"""The model zoo: `keras_medseg.zoo.build(name, **kwargs)`, `list()`, `describe(name)`.

Each model family lives in its own module; importing this package registers
them all.
"""

from keras_medseg.zoo.registry import build, describe, example_batch, get_spec, list, register_model

# Model families (one import per file; importing registers the builders).
# -- add new families below, one line each --
from keras_medseg.zoo import fpn_detector  # noqa: F401
from keras_medseg.zoo import vgg16_classifier  # noqa: F401
from keras_medseg.zoo import attention_classifier  # noqa: F401
from keras_medseg.zoo import level_set  # noqa: F401
from keras_medseg.zoo import gan  # noqa: F401
from keras_medseg.zoo import unet  # noqa: F401
from keras_medseg.zoo import imexnet  # noqa: F401
from keras_medseg.zoo import segresnet  # noqa: F401
from keras_medseg.zoo import dynunet  # noqa: F401
from keras_medseg.zoo import unetr  # noqa: F401
from keras_medseg.zoo import swin_unetr  # noqa: F401

__all__ = ["build", "describe", "example_batch", "get_spec", "list", "register_model"]
