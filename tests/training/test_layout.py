"""The training package after the layout moves: data loaded from one source decision; the zoo never imports
training."""

import numpy as np
import pytest

from keras_medseg.data import EvaluationData, SegmentationData, load_data, load_evaluation_data
from keras_medseg.data.sources import PatchStoreSource, SyntheticSource, resolve_source
from tests.test_architecture import import_facts


def test_load_data_for_training_and_evaluation():
    d = load_data("qtips", n_train=4, n_val=2, size=16)
    assert isinstance(d, SegmentationData) and d.x_train.shape == (4, 16, 16, 1) and d.x_val.shape[0] == 2
    np.testing.assert_array_equal(d.x_train, load_data(SyntheticSource("qtips"), n_train=4, n_val=2, size=16).x_train)
    e = load_evaluation_data("qtips", n=3, size=16, seed=1)
    assert isinstance(e, EvaluationData) and e.x.shape == (3, 16, 16, 1) and e.num_classes == 4
    x, y = np.zeros((2, 8, 8, 1)), np.zeros((2, 8, 8), "int32")
    assert load_evaluation_data((x, y)).num_classes is None
    assert resolve_source("slides.H5") == PatchStoreSource("slides.H5")
    with pytest.raises(ValueError, match="training"):
        load_data((x, y))
    with pytest.raises(ValueError, match="patch store"):
        load_data("slides.h5")


@pytest.mark.slow  # a fresh interpreter imports keras (shared with tests/test_architecture.py within a worker)
def test_zoo_import_does_not_import_training():
    facts = import_facts()  # a fresh interpreter: import keras_medseg, then keras_medseg.zoo.vgg16_classifier
    assert not facts["training_imported"], facts["training_modules"]
