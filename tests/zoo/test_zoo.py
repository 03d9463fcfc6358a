"""Zoo-wide tests, parametrised over `zoo.list()`: every registered model is covered.

For each model (2D, and 3D where `spatial_dims` includes 3) with its spec's
`tiny` arguments: the forward pass has no NaN and the documented shape, one
`fit` step keeps every weight finite (models trained with `fit`), and a
`.keras` save/load with `safe_mode=True` gives identical predictions.
Subclassed custom-training models (GANs) have no single documented forward
input: they get build, a fit step on their `example`
batch and a save/load with identical weights. Mixed precision: build and a
forward pass under `mixed_float16` (functional models).
"""

import keras
import numpy as np
import pytest

from keras_medseg import zoo

NAMES = list(zoo.list())
# every model is also built and trained one step on JAX and torch (marker `backend_agnostic`)


def _cases():
    for name in NAMES:
        spec = zoo.get_spec(name)
        for d in spec.spatial_dims:
            marks = [pytest.mark.slow] if d == 3 else []
            marks.append(pytest.mark.backend_agnostic)
            yield pytest.param(name, d, id=f"{name}-{d}d", marks=marks)


def _build(name, spatial_dims):
    spec = zoo.get_spec(name)
    kwargs = dict(spec.tiny)
    if "spatial_dims" in spec.defaults:
        kwargs["spatial_dims"] = spatial_dims
    return zoo.build(name, **kwargs)


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _is_functional(model):
    """Functional/Sequential models have symbolic inputs and a documented output shape."""
    return type(model).__name__ in ("Functional", "Sequential")


def _forward(model, x):
    # TensorFlow and torch: an eager call, much faster than tracing `predict` for tiny models; JAX: one compiled
    # forward (`predict_on_batch`), 3x less CPU than compiling op by op (Swin UNETR 2D: 7 s against 21 s)
    if keras.backend.backend() == "jax":
        return [np.asarray(keras.ops.convert_to_numpy(o)) for o in _as_list(model.predict_on_batch(x))]
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in _as_list(model(x, training=False))]


def _finite_weights(model):
    return all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in model.weights)


@pytest.mark.parametrize("name", NAMES)
def test_describe(name):
    info = zoo.describe(name)
    assert info["name"] == name
    assert isinstance(info["description"], str) and info["description"]
    assert "\n" not in zoo.list()[name]
    assert set(zoo.get_spec(name).tiny) <= set(info["arguments"])
    assert set(info["spatial_dims"]) <= {2, 3}


@pytest.mark.parametrize("name, spatial_dims", list(_cases()))
def test_build_forward_fit(name, spatial_dims):
    spec = zoo.get_spec(name)
    model = _build(name, spatial_dims)
    assert isinstance(model, keras.Model)
    x, y = zoo.example_batch(name, model, batch_size=2, seed=0)

    if _is_functional(model):
        outs = _forward(model, x)
        for out, sym in zip(outs, model.outputs):
            assert out.shape[0] == 2
            assert len(out.shape) == len(sym.shape)
            for got, want in zip(out.shape[1:], sym.shape[1:]):
                assert want is None or got == want, (out.shape, sym.shape)
        for out in outs:
            assert np.all(np.isfinite(out)), f"{name} forward pass gives NaN/inf"

    if spec.trainable_with_fit:
        # one step: on TensorFlow eager is faster than tracing; JAX compiles fast
        model.run_eagerly = keras.backend.backend() == "tensorflow"
        history = model.fit(x, y, epochs=1, batch_size=2, verbose=0)
        model.run_eagerly = False
        assert history.history, f"{name}: fit reported no loss"
        for key, values in history.history.items():
            assert np.all(np.isfinite(values)), f"{name}: {key} is not finite after one fit step"
        assert _finite_weights(model), f"{name}: a fit step made a weight non-finite"


# save/load is its own test (the model is built again) so that neither half of a large model's checks runs
# over a minute on JAX
@pytest.mark.parametrize("name, spatial_dims", list(_cases()))
def test_save_load_keeps_weights_and_predictions(name, spatial_dims, tmp_path):
    spec = zoo.get_spec(name)
    model = _build(name, spatial_dims)
    x, y = zoo.example_batch(name, model, batch_size=2, seed=0)
    functional = _is_functional(model)
    if not functional and spec.trainable_with_fit:  # subclassed models (GANs) are saved after a training step
        model.run_eagerly = keras.backend.backend() == "tensorflow"
        model.fit(x, y, epochs=1, batch_size=2, verbose=0)
        model.run_eagerly = False
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert len(model.weights) == len(loaded.weights)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    if functional:
        for a, b in zip(_forward(model, x), _forward(loaded, x)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision_forward(name):
    spec = zoo.get_spec(name)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _build(name, spec.spatial_dims[0])
        if not _is_functional(model):
            pytest.skip(f"{name} is a custom-training model without a plain forward pass")
        x, _ = zoo.example_batch(name, model, batch_size=1, seed=1)
        outs = _forward(model, x)
    finally:
        keras.config.set_dtype_policy("float32")
    for out in outs:
        assert np.all(np.isfinite(out.astype("float32")))
