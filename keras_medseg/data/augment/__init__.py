"""2D/3D augmentation layers for segmentation, written with `keras.ops` (TensorFlow, JAX, torch).

Each transform is a Keras layer with a `probability` and a `seed`; a call on
`{"image": x, "labels": y}` or `(x, y)` applies one random draw per sample to
both (linear interpolation for the image, nearest for the labels). Chain them
with `Compose`; use them in `keras_medseg.data.VolumeDataset` or inside a model.

Example:

>>> from keras_medseg.data import augment
>>> pipeline = augment.Compose([
...     augment.RandomAffine(rotation=0.2, scaling=0.1, probability=0.5, seed=1),
...     augment.RandomElastic(magnitude=2.0, spacing=16, probability=0.3, seed=2),
...     augment.RandomGamma((0.8, 1.25), probability=0.3, seed=3),
... ])
>>> batch = pipeline({"image": x, "labels": y})
"""

from keras_medseg.data.augment.base import Compose, RandomTransform
from keras_medseg.data.augment.intensity import (
                                                 RandomGamma,
                                                 RandomGaussianBlur,
                                                 RandomGaussianNoise,
                                                 RandomIntensityScaleShift,
                                                 RandomLowResolution,
                                                 gaussian_blur,
)
from keras_medseg.data.augment.spatial import (
                                                 RandomAffine,
                                                 RandomElastic,
                                                 RandomFlip,
                                                 RandomRotate90,
)

__all__ = [
                                                 "Compose",
                                                 "RandomAffine",
                                                 "RandomElastic",
                                                 "RandomFlip",
                                                 "RandomGamma",
                                                 "RandomGaussianBlur",
                                                 "RandomGaussianNoise",
                                                 "RandomIntensityScaleShift",
                                                 "RandomLowResolution",
                                                 "RandomRotate90",
                                                 "RandomTransform",
                                                 "gaussian_blur",
]
