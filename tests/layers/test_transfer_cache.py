"""Inference cache of the implicit layers' transfer function (`TransferCache`)."""

import contextlib

import keras
import numpy as np
import pytest
from keras import ops

from keras_medseg.layers import IMEXBlock, ImplicitFFTConv
from keras_medseg.ops.implicit import depthwise_inverse_symbol, implicit_conv_solve
from keras_medseg.ops.implicit_cache import TransferCache
from tests.ops.test_implicit import dense_solve

pytestmark = pytest.mark.backend_agnostic


@pytest.fixture(autouse=True)
def no_grad():
    """Eager inference as `predict` runs it: on torch under `torch.no_grad()` (with grad mode on, a
    trainable kernel may be differentiated, and the cache stands aside)."""
    if keras.backend.backend() == "torch":
        import torch

        with torch.no_grad():
            yield
    else:
        yield


def _pair(layer_cls, shape, **kwargs):
    """A cached and an uncached layer with the same weights."""
    cached = layer_cls(cache_transfer=True, **kwargs)
    plain = layer_cls(cache_transfer=False, **kwargs)
    cached.build(shape)
    plain.build(shape)
    plain.set_weights(cached.get_weights())
    return cached, plain


def _grad_enabled():
    if keras.backend.backend() == "torch":
        import torch

        return torch.enable_grad()
    return contextlib.nullcontext()


def test_cached_equals_uncached_and_is_reused():
    x = np.random.default_rng(0).standard_normal((2, 12, 10, 3)).astype("float32")
    cached, plain = _pair(ImplicitFFTConv, x.shape, kernel_size=3, h=0.7)
    first = ops.convert_to_numpy(cached(x, training=False))
    np.testing.assert_allclose(first, ops.convert_to_numpy(plain(x, training=False)), rtol=1e-6, atol=1e-6)
    assert len(cached.transfer_cache) == 1 and len(plain.transfer_cache) == 0
    entry = cached.transfer_cache._entries[((12, 10), "float32")][2]
    # Second call: the same multiplier object is returned, and the same numbers come out.
    again = cached.transfer_cache.inverse_symbol(ops.convert_to_tensor(cached.kernel), cached.step_size, (12, 10),
                                                 "float32")
    assert again is entry
    np.testing.assert_array_equal(ops.convert_to_numpy(cached(x, training=False)), first)
    # The multiplier is the layer's: 1 / (1 + h |c^|^2).
    expected = depthwise_inverse_symbol(ops.convert_to_tensor(cached.kernel), (12, 10), cached.step_size)
    np.testing.assert_allclose(ops.convert_to_numpy(entry), ops.convert_to_numpy(expected), rtol=1e-6)


def test_weight_change_invalidates_the_cache():
    x = np.random.default_rng(1).standard_normal((1, 9, 8, 2))
    layer = ImplicitFFTConv(kernel_size=3, h=0.5, dtype="float64")
    layer.build(x.shape)
    layer(x, training=False)
    new_kernel = np.random.default_rng(2).standard_normal((3, 3, 2))
    layer.kernel.assign(new_kernel)
    y = ops.convert_to_numpy(layer(x, training=False))
    h = float(ops.convert_to_numpy(layer.step_size))  # 0.5 up to the float32 initializer's rounding
    np.testing.assert_allclose(y, dense_solve(x, new_kernel, h), rtol=1e-10, atol=1e-10)
    # A change of h alone invalidates it too.
    layer.log_h.assign(np.log(2.0))
    y = ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(y, dense_solve(x, new_kernel, 2.0), rtol=1e-9, atol=1e-9)
    # set_weights (as load_weights does) as well.
    weights = layer.get_weights()
    weights[0] = weights[0] * 0.5
    layer.set_weights(weights)
    y = ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(y, dense_solve(x, weights[0], 2.0), rtol=1e-9, atol=1e-9)
    assert len(layer.transfer_cache) == 1  # one image size, one entry, replaced each time


def test_one_entry_per_image_size_and_clear():
    layer = ImplicitFFTConv(kernel_size=3, h=0.5)
    layer(np.ones((1, 8, 8, 2), "float32"), training=False)
    layer(np.ones((1, 10, 8, 2), "float32"), training=False)
    assert len(layer.transfer_cache) == 2
    layer.transfer_cache.clear()
    assert len(layer.transfer_cache) == 0


def test_training_call_does_not_use_the_cache():
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 2)).astype("float32")
    layer = ImplicitFFTConv(kernel_size=3, h=0.5)
    layer(x, training=True)
    assert len(layer.transfer_cache) == 0


def test_fit_then_predict_sees_the_trained_kernel():
    """After training steps the cached and uncached models still agree (the cache follows the weights)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 8, 8, 4)).astype("float32")
    y = rng.standard_normal((4, 8, 8, 4)).astype("float32")
    cached, plain = _pair(IMEXBlock, x.shape, filters=4, h=0.5, normalization=None)
    models = []
    for block in (cached, plain):
        inputs = keras.Input((8, 8, 4))
        model = keras.Model(inputs, block(inputs))
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        models.append(model)
    for round_ in range(2):
        # Eager inference fills the cache; the training step changes the kernel.
        outs = [ops.convert_to_numpy(m(x, training=False)) for m in models]
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(models[0].predict(x, verbose=0), models[1].predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-5)
        before = ops.convert_to_numpy(cached.implicit_kernel).copy()
        for m in models:
            with _grad_enabled():
                m.train_on_batch(x, y)
        assert not np.array_equal(before, ops.convert_to_numpy(cached.implicit_kernel))
    assert len(plain.transfer_cache) == 0


def test_gradient_reaches_the_kernel_at_inference():
    """With a gradient being recorded the cache is bypassed, so the `L` kernel still gets its gradient."""
    backend = keras.backend.backend()
    x = np.random.default_rng(5).standard_normal((1, 8, 8, 2)).astype("float32")
    layer = ImplicitFFTConv(kernel_size=3, h=0.5)
    layer(x, training=False)  # fills the cache
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x, training=False)))
        grad = tape.gradient(loss, layer.kernel.value)
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
    elif backend == "torch":
        import torch

        with torch.enable_grad():
            loss = (layer(x, training=False) ** 2).sum()
        loss.backward()
        grad = layer.kernel.value.grad
        assert grad is not None and float(grad.abs().max()) > 0
    elif backend == "jax":
        import jax

        log_h = layer.log_h.value

        def loss(kernel):
            y, _ = layer.stateless_call([kernel, log_h], [], x, training=False)
            return (y ** 2).sum()

        grad = jax.grad(loss)(layer.kernel.value)
        assert float(abs(grad).max()) > 0
    else:
        pytest.skip(f"no gradient check for backend {backend}")


def test_cache_declines_traced_tensors():
    backend = keras.backend.backend()
    cache = TransferCache()
    if backend == "jax":
        import jax

        seen = []
        jax.jit(lambda k: seen.append(cache.inverse_symbol(k, 0.5, (8, 8), "float32")) or k)(np.ones((3, 3, 2)))
        assert seen == [None]
    elif backend == "tensorflow":
        import tensorflow as tf

        seen = []
        tf.function(lambda k: seen.append(cache.inverse_symbol(k, 0.5, (8, 8), "float32")) or k)(np.ones((3, 3, 2)))
        assert seen == [None]
    symbolic = keras.KerasTensor((3, 3, 2))
    assert cache.inverse_symbol(symbolic, 0.5, (8, 8), "float32") is None
    assert len(cache) == 0


def test_config_round_trip():
    for layer in (ImplicitFFTConv(cache_transfer=False), IMEXBlock(4, cache_transfer=False)):
        config = layer.get_config()
        assert config["cache_transfer"] is False
        assert type(layer).from_config(config).cache_transfer is False


class TestInverseSymbolArgument:
    def test_wrong_shape(self):
        with pytest.raises(ValueError, match="`inverse_symbol` must have shape"):
            implicit_conv_solve(np.ones((1, 8, 8, 2), "float32"), np.ones((3, 3, 2), "float32"), 0.5,
                                inverse_symbol=np.ones((2, 8, 8), "float32"))

    def test_grouped(self):
        with pytest.raises(ValueError, match="`inverse_symbol` is for the depthwise solve only"):
            implicit_conv_solve(np.ones((1, 8, 8, 2), "float32"), np.ones((3, 3, 2, 2), "float32"), 0.5,
                                group_size=2, inverse_symbol=np.ones((2, 8, 5), "float32"))
