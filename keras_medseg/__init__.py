"""keras-medseg: a Keras 3 model zoo for medical image analysis.

`from keras_medseg import ops, layers, zoo` - PDE-inspired plugin layers
(upwind and curvature convolutions, edge indicators, implicit FFT steps,
attention pooling) and the models built from them.
"""

import os

# Quiet TensorFlow's C++ start-up logging unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_medseg.version import __version__  # noqa: E402
from keras_medseg import ops  # noqa: E402
from keras_medseg import layers  # noqa: E402
from keras_medseg import losses  # noqa: E402
from keras_medseg import metrics  # noqa: E402  (registers MeanDice & co. for keras.saving.load_model)
from keras_medseg import zoo  # noqa: E402

__all__ = ["__version__", "ops", "layers", "losses", "metrics", "zoo"]
