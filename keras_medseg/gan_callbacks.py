"""Old import path of the GAN sample-grid callback; it lives in `keras_medseg.training.callbacks`."""

from keras_medseg.training.callbacks import GANSampleGrid, make_grid, sample_rows

__all__ = ["GANSampleGrid", "make_grid", "sample_rows"]
