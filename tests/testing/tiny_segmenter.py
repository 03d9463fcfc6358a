"""The smallest compiled segmenter `keras_medseg.training.train` takes, for the kill / full-disk / resume tests.

Those tests are about the run folder (lock, backups, log rows, atomic writes), not about a model: a 3x3
convolution with a sigmoid head, Adam (so the backup carries optimizer slots and a step counter) and binary
cross-entropy, no metrics. Tracing its train, validation and predict steps costs ~1-2 CPU s per `train` call on
TensorFlow against 5-9 s for the smallest zoo UNet (`filters=2, depth=1`, instance norm, Dice+CE, IoU/Dice
metrics; measured on 2 AMD EPYC cores). Importable from the tests' subprocesses (`PYTHONPATH` = the checkout).
"""

import keras


def tiny_segmenter(size=16, seed=0):
    """A compiled `(N, size, size, 1) -> (N, size, size, 1)` sigmoid segmenter (10 weights), seeded."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 1))
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs)
    model = keras.Model(inputs, outputs, name="tiny_segmenter")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    return model
