"""Losses that Keras does not ship (attention-mask supervision, box loss, ...)."""

import keras
from keras import ops

from keras_medseg.utils.serialization import register
