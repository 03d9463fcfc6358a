"""Every zoo model: mixed precision (float16 and bfloat16) and deterministic training.

Parametrised over `zoo.list()`, so a newly registered model is covered at once.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_medseg import zoo
from keras_medseg.utils.reproducibility import set_deterministic
from tests.testing import process_state

MODELS = list(zoo.list())


def _batch(spec, model, seed=0):
    return zoo.example_batch(spec.name, model, batch_size=2, seed=seed)


def _fit(model, data, epochs=1):
    # eager on TensorFlow: tracing and compiling a tiny model's train step cost 6-37 CPU s, the eager steps
    # 0.5-8 s; the claims (finite weights under mixed precision, identical seeded trainings) are the same
    model.run_eagerly = keras.backend.backend() == "tensorflow"
    x, y = data
    if y is None:
        return model.fit(x, epochs=epochs, batch_size=2, shuffle=False, verbose=0)
    return model.fit(x, y, epochs=epochs, batch_size=2, shuffle=False, verbose=0)


def _finite(tree):
    return all(np.all(np.isfinite(np.asarray(ops.convert_to_numpy(t), dtype="float32")))
               for t in keras.tree.flatten(tree))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", MODELS)
def test_mixed_precision_build_train_predict(name, policy):
    spec = zoo.get_spec(name)
    keras.config.set_dtype_policy(policy)
    try:
        model = zoo.build(name, **spec.tiny)
        data = _batch(spec, model)
        _fit(model, data)
        assert _finite(model.weights), f"{name}: non-finite weights after a {policy} training step"
        x = data[0]
        if spec.trainable_with_fit and not hasattr(model, "generator"):
            # an eager call: `predict_on_batch` traces a predict function first (Swin UNETR 3D: 1.7 CPU s)
            assert _finite(model(x, training=False)), f"{name}: non-finite prediction under {policy}"
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_two_seeded_trainings_give_identical_weights(name):
    spec = zoo.get_spec(name)
    runs = []
    flags = process_state.snapshot()  # set_deterministic switches op determinism on for the whole process
    try:
        for _ in range(2):
            keras.backend.clear_session()
            set_deterministic(123)
            model = zoo.build(name, **spec.tiny)
            _fit(model, _batch(spec, model, seed=1), epochs=2)
            runs.append([np.asarray(ops.convert_to_numpy(w)) for w in model.weights])
    finally:
        process_state.restore(flags)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_set_deterministic_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        set_deterministic(-1)
