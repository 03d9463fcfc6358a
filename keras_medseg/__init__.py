"""keras-medseg: a Keras 3 model zoo for medical image analysis.

`from keras_medseg import ops, layers, zoo` - PDE-inspired plugin layers
(upwind and curvature convolutions, edge indicators, implicit FFT steps,
attention pooling) and the models built from them. Importing the package
changes no environment variable (the `keras-medseg` command quiets
TensorFlow's logging for itself).
"""

from keras_medseg.version import __version__
from keras_medseg import ops
from keras_medseg import layers
from keras_medseg import losses
from keras_medseg import metrics  # registers MeanDice & co. for keras.saving.load_model
from keras_medseg import zoo

__all__ = ["__version__", "ops", "layers", "losses", "metrics", "zoo"]
