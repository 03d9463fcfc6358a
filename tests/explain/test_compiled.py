"""The explainers run through cached compiled functions, and agree with tf-keras-vis."""

import gc

import keras
import numpy as np
import pytest

from keras_medseg import explain
from keras_medseg.utils import gradients

EAGER = keras.backend.backend() == "torch"  # torch runs the cached functions eagerly


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="tanh", name="first_conv")(inp)
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="last_conv")(h)
    out = keras.layers.Dense(3, name="fc")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, out)


def _traces(model, kind):
    return {k: v for k, v in gradients.compiled_cache_info(model).items() if k[0][0] == kind}


@pytest.mark.backend_agnostic
def test_a_second_call_reuses_the_compiled_function(rng):
    model = _cnn()
    x = rng.standard_normal((3, 8, 8, 2)).astype("float32")
    first = explain.saliency(model, x, 1)
    second = explain.saliency(model, x, 1)
    np.testing.assert_array_equal(first, second)
    (traces,) = _traces(model, "input_gradients").values()
    assert traces == (2 if EAGER else 1)
    explain.gradcam(model, x, 1)
    explain.gradcam(model, x, 1)
    (traces,) = _traces(model, "gradcam").values()
    assert traces == (2 if EAGER else 1)
    # occlusion: every chunk has the same shape (3 samples x 4 tiles + the input = 5 = batch_size)
    explain.occlusion(model, x, 1, patch=4, batch_size=5)
    explain.occlusion(model, x, 1, patch=4, batch_size=5)
    (traces,) = _traces(model, "scores").values()
    assert traces == (6 if EAGER else 1)
    res = explain.activation_maximization(model, 1, steps=4)
    (traces,) = _traces(model, "activation_maximization").values()
    assert traces == (5 if EAGER else 1)
    assert res.history.shape == (5,)
    # another class is another target: one more function, traced once
    explain.saliency(model, x, 2)
    assert len(_traces(model, "input_gradients")) == 2


@pytest.mark.backend_agnostic
def test_compiled_functions_read_the_current_weights(rng):
    """New weights need no retrace: the linear model's saliency follows set_weights."""
    inp = keras.Input((4, 5, 1))
    model = keras.Model(inp, keras.layers.Dense(2, name="fc")(keras.layers.Flatten()(inp)))
    x = rng.standard_normal((2, 4, 5, 1)).astype("float32")
    for seed in (1, 2):
        w = np.random.default_rng(seed).standard_normal((20, 2)).astype("float32")
        model.get_layer("fc").set_weights([w, np.zeros(2, "float32")])
        maps = explain.saliency(model, x, 0)
        np.testing.assert_allclose(maps, np.broadcast_to(np.abs(w[:, 0]).reshape(4, 5), maps.shape), rtol=1e-6)
        scores = explain.occlusion(model, x[:1], 0, patch=(4, 5), batch_size=2)
        np.testing.assert_allclose(scores[0], np.full((4, 5), (x[0, ..., 0].ravel() * w[:, 0]).sum()), rtol=1e-5)
    (traces,) = _traces(model, "input_gradients").values()
    assert traces == (2 if EAGER else 1)


@pytest.mark.backend_agnostic
def test_the_cache_does_not_keep_a_model_alive(rng):
    gc.collect()  # models of earlier tests in this worker leave the cache when they are collected
    model = _cnn()
    explain.saliency(model, rng.standard_normal((1, 8, 8, 2)).astype("float32"), 0)
    assert gradients.compiled_cache_info(model)
    before = len(gradients._CACHE)
    del model
    keras.backend.clear_session()
    gc.collect()
    assert len(gradients._CACHE) == before - 1


@pytest.mark.backend_agnostic
def test_gradcam_on_a_nested_model_and_clear_cache(rng):
    """A layer inside a nested model is tapped inside the compiled function too."""
    inner = _cnn()
    inp = keras.Input((8, 8, 2))
    model = keras.Model(inp, inner(inp))
    x = rng.standard_normal((2, 8, 8, 2)).astype("float32")
    ref = explain.gradcam(inner, x, 0, layer="last_conv", resize=False)
    got = explain.gradcam(model, x, 0, layer="last_conv", resize=False)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    gradients.clear_compiled_cache(model)
    assert gradients.compiled_cache_info(model) == {}


def _tkv():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf-keras-vis runs on the TensorFlow backend only")
    return pytest.importorskip("tf_keras_vis")


def test_saliency_and_gradcam_agree_with_tf_keras_vis(rng):
    _tkv()
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    model = _cnn(seed=3)
    x = rng.standard_normal((4, 8, 8, 2)).astype("float32")
    for c in (0, 2):
        theirs = Saliency(model, clone=False)(CategoricalScore([c] * 4), x, normalize_map=False)
        np.testing.assert_allclose(explain.saliency(model, x, c), np.asarray(theirs), rtol=1e-5, atol=1e-7)
        theirs = Gradcam(model, clone=False)(CategoricalScore([c] * 4), x, penultimate_layer="last_conv",
                                             expand_cam=False, normalize_cam=False)
        ours = explain.gradcam(model, x, c, layer="last_conv", resize=False)
        np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-4, atol=1e-6)


class _BackwardSpy(keras.layers.Layer):
    """Identity whose backward pass counts its calls (a custom gradient per backend)."""

    calls = 0

    def call(self, x):
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            @tf.custom_gradient
            def ident(t):
                def grad(dy):
                    _BackwardSpy.calls += 1
                    return dy

                return tf.identity(t), grad

            return ident(x)
        if backend == "jax":
            import jax

            @jax.custom_vjp
            def ident(t):
                return t

            def bwd(_, g):
                _BackwardSpy.calls += 1
                return (g,)

            ident.defvjp(lambda t: (t, None), bwd)
            return ident(x)
        import torch

        class Ident(torch.autograd.Function):
            @staticmethod
            def forward(ctx, t):
                return t.clone()

            @staticmethod
            def backward(ctx, g):
                _BackwardSpy.calls += 1
                return g

        return Ident.apply(x)


@pytest.mark.backend_agnostic
def test_gradcam_does_not_differentiate_the_layers_below_its_feature_map(rng):
    inp = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(inp)
    h = _BackwardSpy()(h)
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="last_conv")(h)
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    x = rng.standard_normal((2, 8, 8, 2)).astype("float32")
    _BackwardSpy.calls = 0
    explain.gradcam(model, x, 0, layer="last_conv")
    assert _BackwardSpy.calls == 0
    explain.saliency(model, x, 0)  # the input gradient does pass through it
    assert _BackwardSpy.calls >= 1
