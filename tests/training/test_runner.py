"""The one fit runner (`keras_medseg.training.runner`): seeded order of array batches, seeding without
TensorFlow."""

import random

import keras
import numpy as np
import pytest

from keras_medseg.data.batches import ArrayBatches
from keras_medseg.training import runner


def _data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 6, 6, 1)).astype("float32")
    return x, (x > 0.2).astype("float32")


def _model():
    inputs = keras.Input((6, 6, 1))
    hidden = keras.layers.Conv2D(3, 3, padding="same", activation="tanh",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=0))(inputs)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid",
                                  kernel_initializer=keras.initializers.GlorotUniform(seed=1))(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.5), "binary_crossentropy")
    return model


def _draws():
    return (np.asarray(keras.random.uniform((4,))), np.random.rand(3), random.random())


def test_seed_without_tensorflow_seeds_python_numpy_and_keras_as_keras_does():
    keras.utils.set_random_seed(11)
    expected = _draws()
    keras.utils.set_random_seed(12)
    runner._seed_without_tensorflow(11)
    got = _draws()
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)
    runner.set_random_seed(11)  # whichever branch this backend takes
    for a, b in zip(expected, _draws(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="seed"):
        runner._seed_without_tensorflow("11")


def test_a_seeded_fit_reads_arrays_in_the_order_of_its_seed_and_resumes_in_it(tmp_path):
    """`seed=` draws each epoch's batches from `(seed, epoch)` (`ArrayBatches`, as over several processes):
    the losses are those of the seeded batches, and a run resumed after epoch 1 ends with the weights of an
    uninterrupted one."""
    x, y = _data()
    model = _model()
    run = runner.fit(model, x, y, out_dir=str(tmp_path / "whole"), epochs=2, batch_size=4, seed=3, verbose=0,
                     validation_data=(x[:4], y[:4]))
    reference = _model()
    batches = ArrayBatches(x, y, batch_size=4, seed=3)
    history = reference.fit(batches, epochs=2, verbose=0, shuffle=False, callbacks=[runner.SetEpoch(batches)])
    np.testing.assert_allclose(run.history["loss"], history.history["loss"], rtol=1e-6)

    part = str(tmp_path / "part")
    runner.fit(_model(), x, y, out_dir=part, epochs=1, batch_size=4, seed=3, verbose=0,
               validation_data=(x[:4], y[:4]))
    resumed = _model()
    again = runner.fit(resumed, x, y, out_dir=part, epochs=2, batch_size=4, seed=3, verbose=0,
                       validation_data=(x[:4], y[:4]))
    assert again.initial_epoch == 1 and len(again.rows) == 2
    for a, b in zip(resumed.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
