"""Old import path of the training callbacks; they live in `keras_medseg.training.callbacks`."""

from keras_medseg.training.callbacks import ROCAUCEarlyStopping, lr_halving_on_plateau

__all__ = ["ROCAUCEarlyStopping", "lr_halving_on_plateau"]
