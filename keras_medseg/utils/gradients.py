"""Backend-specific automatic differentiation in one place.

Keras 3 has no `ops.grad`, so everything in keras-medseg that needs a gradient
outside `fit()` (gradient checks, saliency maps, activation maximisation) goes
through `value_and_grad`, which uses `tf.GradientTape` on TensorFlow and
`jax.value_and_grad` on JAX and `torch.autograd.grad` on torch.

`compiled_call` runs a model function (a forward pass, or a forward pass and
its gradient with respect to one argument) through one compiled function per
model, key and input signature: `tf.function` on TensorFlow, `jax.jit` on
JAX, eager on torch. The explainers in `keras_medseg.explain` use it.
"""

import weakref

import keras
from keras import ops


def value_and_grad(fn, *args):
    """Evaluate a scalar function and its gradient with respect to every argument.

    Args:
        fn: callable taking `*args` (each a tensor or a nested list/tuple/dict
            of tensors) and returning a scalar tensor.
        *args: the arguments; gradients are taken with respect to all of them.

    Returns:
        `(value, grads)` where `grads` is a tuple with the same structure as
        `args`. Arguments that do not influence the value get zero gradients.

    Raises:
        NotImplementedError: on a backend other than TensorFlow, JAX and torch.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value, grads = jax.value_and_grad(lambda a: fn(*a))(tuple(args))
        return value, tuple(grads)
    if backend == "tensorflow":
        import tensorflow as tf

        args = keras.tree.map_structure(ops.convert_to_tensor, tuple(args))
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for leaf in keras.tree.flatten(args):
                tape.watch(leaf)
            value = fn(*args)
        grads = tape.gradient(value, args, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return value, tuple(grads)
    if backend == "torch":
        import torch

        def leaf(x):
            return ops.convert_to_tensor(x).detach().requires_grad_(True)

        args = keras.tree.map_structure(leaf, tuple(args))
        leaves = keras.tree.flatten(args)
        with torch.enable_grad():
            value = fn(*args)
            if value.requires_grad:
                grads = torch.autograd.grad(value, leaves, allow_unused=True)
            else:  # no argument reaches the value (e.g. all behind stop_gradient): zero gradients
                grads = [None] * len(leaves)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
        return value.detach(), tuple(keras.tree.pack_sequence_as(args, grads))
    raise NotImplementedError(
        f"keras-medseg computes gradients on the 'tensorflow', 'jax' and 'torch' backends only. "
        f"Received: KERAS_BACKEND={backend!r}"
    )


def grad(fn, *args):
    """Gradient of a scalar function with respect to every argument (see `value_and_grad`)."""
    return value_and_grad(fn, *args)[1]


# ---------------------------------------------------------------------------
# Compiled model functions, cached per (model, key, input signature)
# ---------------------------------------------------------------------------

_CACHE = weakref.WeakKeyDictionary()  # model -> {key: _Compiled}


class _Compiled:
    """One compiled function and the number of times its Python body was traced."""

    def __init__(self):
        self.fn = None
        self.traces = 0


def _signature(args):
    return tuple((tuple(int(s) for s in a.shape), keras.backend.standardize_dtype(a.dtype)) for a in args)


def compiled_cache_info(model) -> dict:
    """`{key: traces}` of the compiled functions cached for `model` (for tests and benchmarks).

    On TensorFlow and JAX a function is traced once per key (model, target and
    input signature); on torch the functions run eagerly and the count is the
    number of calls.
    """
    return {key: entry.traces for key, entry in _CACHE.get(model, {}).items()}


def clear_compiled_cache(model=None):
    """Drop the compiled functions of `model` (default: of every model)."""
    if model is None:
        _CACHE.clear()
    else:
        _CACHE.pop(model, None)


def _build(model, fn, grad, entry):
    """A compiled `run(*args)` for the current backend; `model` is held through a weak reference."""
    ref = weakref.ref(model)
    backend = keras.backend.backend()

    def body(call, *args):
        entry.traces += 1
        return fn(call, *args)

    if backend == "tensorflow":
        import tensorflow as tf

        def call(x):
            return ref()(x, training=False)

        if not grad:
            return tf.function(lambda *args: body(call, *args), reduce_retracing=True)

        def value_grad(wrt, *rest):
            # Only `wrt` is watched: no variable gradient is recorded, and the tape
            # holds only the operations downstream of `wrt`.
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(wrt)
                value, aux = body(call, wrt, *rest)
            g = tape.gradient(value, wrt, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return value, g, aux

        return tf.function(value_grad, reduce_retracing=True)
    if backend == "jax":
        import jax

        def pure(trainable, non_trainable, *args):
            def call(x):
                y, _ = ref().stateless_call(trainable, non_trainable, x, training=False)
                return y

            if not grad:
                return body(call, *args)
            wrt, rest = args[0], args[1:]
            (value, aux), g = jax.value_and_grad(lambda w: body(call, w, *rest), has_aux=True)(wrt)
            return value, g, aux

        jitted = jax.jit(pure)

        def run(*args):
            m = ref()
            return jitted([v.value for v in m.trainable_variables], [v.value for v in m.non_trainable_variables],
                          *args)

        return run
    if backend == "torch":
        import torch

        def call(x):
            return ref()(x, training=False)

        if not grad:
            def forward(*args):
                with torch.no_grad():
                    return body(call, *args)

            return forward

        def eager_value_grad(wrt, *rest):
            wrt = ops.convert_to_tensor(wrt).detach().requires_grad_(True)
            with torch.enable_grad():
                value, aux = body(call, wrt, *rest)
                (g,) = torch.autograd.grad(value, (wrt,), allow_unused=True)
            g = torch.zeros_like(wrt) if g is None else g
            aux = keras.tree.map_structure(lambda t: t.detach() if hasattr(t, "detach") else t, aux)
            return value.detach(), g, aux

        return eager_value_grad
    raise NotImplementedError(
        f"keras-medseg compiles model functions on the 'tensorflow', 'jax' and 'torch' backends only. "
        f"Received: KERAS_BACKEND={backend!r}"
    )


def compiled_call(model, key, fn, *args, grad: bool = False):
    """Run `fn(call, *args)` through one compiled function per (model, key, input signature).

    `call(x)` is the model's inference forward pass (`training=False`); on JAX
    it is `model.stateless_call` with the model's variables passed as
    arguments of the jitted function, so new weights need no retracing. The
    compiled function (a `tf.function` with `reduce_retracing=True`, a
    `jax.jit`; torch stays eager) is cached in a weak-keyed dictionary on the
    model: a second call with the same `key` and argument shapes/dtypes reuses
    it without tracing. `fn` must depend only on `key`: it is traced once.

    Args:
        model: a built `keras.Model`.
        key: hashable, what `fn` computes (for example the explainer and its
            target class).
        fn: `fn(call, *args)`; with `grad=False` it returns any nest of
            tensors, with `grad=True` a pair `(value, aux)` where `value` is a
            scalar.
        *args: tensors or NumPy arrays (the signature is their shapes and
            dtypes).
        grad: bool, also differentiate `value` with respect to `args[0]`
            (and nothing else: no variable is watched). Defaults to False.

    Returns:
        `fn`'s outputs (backend tensors), or `(value, d value / d args[0], aux)`
        with `grad=True`.

    Raises:
        NotImplementedError: on a backend other than TensorFlow, JAX and torch.

    Example:

    >>> def fn(call, x):
    ...     return keras.ops.sum(call(x)[:, 0]), ()
    >>> value, g, _ = compiled_call(model, ("class", 0), fn, x, grad=True)
    """
    per_model = _CACHE.get(model)
    if per_model is None:
        per_model = _CACHE[model] = {}
    args = tuple(ops.convert_to_tensor(a) for a in args)
    full_key = (key, bool(grad), _signature(args))
    entry = per_model.get(full_key)
    if entry is None:
        entry = _Compiled()
        entry.fn = _build(model, fn, grad, entry)
        per_model[full_key] = entry
    return entry.fn(*args)
