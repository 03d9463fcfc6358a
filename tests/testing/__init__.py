"""Shared test harness for keras-medseg layers, ops and models.

Modelled on Keras' `run_layer_test` and keras-hub's `run_*_test`: one call
checks everything a layer must do, so every plugin layer is held to the same
standard.

* `run_layer_test`: config round trip, `.keras` save/load with
  `safe_mode=True` and identical outputs, symbolic vs eager output shapes,
  `compute_output_shape`, one `fit` step, mixed precision.
* `check_layer_gradients`: float64 central differences vs autodiff for the
  inputs and every trainable weight.
* `check_op_gradients`: the same for a pure function of arrays.

Gradients go through `keras_medseg.utils.gradients.value_and_grad` on
TensorFlow and JAX and through `torch.autograd.grad` on torch (`_value_and_grad`
below), so the same checks run on all three backends.
"""

import contextlib
import os
import tempfile

import keras
import numpy as np
from keras import ops

from keras_medseg.utils.gradients import value_and_grad as _library_value_and_grad

__all__ = [
    "run_layer_test",
    "check_layer_gradients",
    "check_op_gradients",
    "numerical_gradient",
    "random_inputs",
]


def _is_multi(shape):
    return isinstance(shape, (list, tuple)) and len(shape) > 0 and isinstance(shape[0], (list, tuple))


def random_inputs(input_shape, dtype="float32", seed=0):
    """Standard-normal arrays for one shape or a list of shapes."""
    rng = np.random.default_rng(seed)
    if _is_multi(input_shape):
        return [rng.standard_normal(tuple(s)).astype(dtype) for s in input_shape]
    return rng.standard_normal(tuple(input_shape)).astype(dtype)


def _to_numpy_tree(x):
    return keras.tree.map_structure(lambda t: np.asarray(ops.convert_to_numpy(t)), x)


def _shapes(tree):
    return [tuple(t.shape) for t in keras.tree.flatten(tree)]


def _symbolic_inputs(input_shape, dtype=None):
    if _is_multi(input_shape):
        return [keras.Input(shape=tuple(s)[1:], dtype=dtype) for s in input_shape]
    return keras.Input(shape=tuple(input_shape)[1:], dtype=dtype)


def _assert_shape_matches(symbolic, eager, where):
    assert len(symbolic) == len(eager), f"{where}: {len(symbolic)} symbolic vs {len(eager)} eager outputs"
    for s, e in zip(symbolic, eager):
        s = tuple(s)
        assert len(s) == len(e), f"{where}: rank differs, {s} vs {e}"
        for a, b in zip(s[1:], e[1:]):
            assert a is None or a == b, f"{where}: shape {s} does not match eager shape {e}"


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape=None,
    input_data=None,
    call_kwargs=None,
    run_training=True,
    run_mixed_precision=True,
    run_saving=True,
    atol=1e-6,
):
    """Run the standard battery of checks on a layer.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_shape: one shape tuple (with batch size) or a list of them for a
            multi-input layer (the layer is then called with a list).
        expected_output_shape: optional shape tuple (or list of tuples for
            several outputs) the eager output must have.
        input_data: optional array (or list of arrays); default standard normal.
        call_kwargs: optional extra keyword arguments for `call`.
        run_training: compile a functional wrapper with MSE on every output and
            fit one step; weights must stay finite.
        run_mixed_precision: build and call under `mixed_float16`; outputs must
            be finite.
        run_saving: `.keras` save -> `load_model(safe_mode=True)` -> same outputs.
        atol: tolerance of the save/load and config-round-trip comparisons.

    Returns:
        The eager outputs as NumPy arrays (same structure as the layer output).
    """
    call_kwargs = call_kwargs or {}
    if input_data is None:
        input_data = random_inputs(input_shape)

    # 1. config round trip: every constructor argument is in the config, and
    #    from_config(get_config()) rebuilds an identical config.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"get_config() of {layer_cls.__name__} is missing argument {key!r}"
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config, "config round trip changed the config"

    # 2. eager call: finite outputs of the documented shape.
    outputs = layer(input_data, **call_kwargs)
    eager = _to_numpy_tree(outputs)
    flat_eager = keras.tree.flatten(eager)
    for arr in flat_eager:
        assert np.all(np.isfinite(arr)), f"{layer_cls.__name__} produced non-finite values"
    eager_shapes = [a.shape for a in flat_eager]
    if expected_output_shape is not None:
        expected = expected_output_shape if _is_multi(expected_output_shape) else [expected_output_shape]
        assert [tuple(s) for s in expected] == eager_shapes, (
            f"output shapes {eager_shapes} differ from expected {expected}"
        )

    # 3. symbolic call (batch size unknown) gives the same shapes, and so does
    #    compute_output_shape where the layer defines it.
    sym_in = _symbolic_inputs(input_shape)
    sym_out = layer_cls(**init_kwargs)(sym_in, **call_kwargs)
    _assert_shape_matches(_shapes(sym_out), eager_shapes, "symbolic call")
    fresh = layer_cls(**init_kwargs)
    shape_arg = [tuple(s) for s in input_shape] if _is_multi(input_shape) else tuple(input_shape)
    try:
        computed = fresh.compute_output_shape(shape_arg)
    except NotImplementedError:
        computed = None
    if computed is not None:
        if isinstance(computed, tuple) and (not computed or not isinstance(computed[0], (tuple, list))):
            computed = [computed]
        _assert_shape_matches([tuple(c) for c in computed], eager_shapes, "compute_output_shape")

    # 4. the same weights in a clone built from config give the same outputs.
    clone = layer_cls.from_config(config)
    clone(input_data, **call_kwargs)
    clone.set_weights(layer.get_weights())
    for a, b in zip(keras.tree.flatten(_to_numpy_tree(clone(input_data, **call_kwargs))), flat_eager):
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)

    # 5. .keras save/load round trip with safe_mode=True.
    sym_in = _symbolic_inputs(input_shape)
    model_layer = layer_cls(**init_kwargs)
    model = keras.Model(sym_in, model_layer(sym_in, **call_kwargs))
    model_layer.set_weights(layer.get_weights())
    reference = keras.tree.flatten(_to_numpy_tree(model(input_data)))
    if run_saving:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "layer.keras")
            model.save(path)
            loaded = keras.saving.load_model(path, safe_mode=True)
        for a, b in zip(keras.tree.flatten(_to_numpy_tree(loaded(input_data))), reference):
            np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)

    # 6. one training step keeps the weights finite.
    if run_training and model.trainable_weights:
        targets = [np.zeros_like(r) for r in reference]
        n_out = len(targets)
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=["mse"] * n_out if n_out > 1 else "mse")
        model.fit(input_data, targets if n_out > 1 else targets[0], epochs=1, batch_size=len(reference[0]),
                  verbose=0)
        for w in model.weights:
            assert np.all(np.isfinite(ops.convert_to_numpy(w))), f"weight {w.path} is not finite after fit"

    # 7. mixed precision: build and call under mixed_float16.
    if run_mixed_precision:
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_float16")
        try:
            mp_layer = layer_cls(**init_kwargs)
            mp_out = mp_layer(input_data, **call_kwargs)
            for arr in keras.tree.flatten(_to_numpy_tree(mp_out)):
                assert np.all(np.isfinite(arr.astype("float32"))), "non-finite output under mixed_float16"
        finally:
            keras.config.set_dtype_policy(previous)
    return eager


def _torch_value_and_grad(fn, *args):
    """`value_and_grad` on torch: leaves made `requires_grad`, then `torch.autograd.grad`."""
    import torch

    def leaf(a):
        return ops.convert_to_tensor(a).detach().clone().requires_grad_(True)

    args = keras.tree.map_structure(leaf, tuple(args))
    value = fn(*args)
    leaves = keras.tree.flatten(args)
    if value.requires_grad:
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
    else:  # the value depends on no argument (everything behind stop_gradient): zero gradients
        grads = [None] * len(leaves)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
    return value.detach(), tuple(keras.tree.pack_sequence_as(args, grads))


def value_and_grad(fn, *args):
    """Scalar value and gradients w.r.t. every argument, on TensorFlow, JAX and torch."""
    if keras.backend.backend() == "torch":
        return _torch_value_and_grad(fn, *args)
    return _library_value_and_grad(fn, *args)


def numerical_gradient(f, x, eps=1e-6, indices=None):
    """Central-difference gradient of scalar `f` at float64 array `x`.

    Only the flat `indices` are perturbed (all when None); other entries of
    the returned array are NaN.
    """
    x = np.array(x, dtype="float64")
    flat = x.reshape(-1)
    grad = np.full(flat.shape, np.nan)
    for i in range(flat.size) if indices is None else indices:
        old = flat[i]
        flat[i] = old + eps
        fp = f(x)
        flat[i] = old - eps
        fm = f(x)
        flat[i] = old
        grad[i] = (fp - fm) / (2 * eps)
    return grad.reshape(x.shape)


def _check_close(analytic, numeric, indices, rtol, atol, name):
    a = np.asarray(analytic, dtype="float64").reshape(-1)[indices]
    n = np.asarray(numeric, dtype="float64").reshape(-1)[indices]
    scale = max(np.linalg.norm(a), np.linalg.norm(n), atol)
    err = np.linalg.norm(a - n) / scale
    assert err < rtol, (
        f"gradient check failed for {name}: relative error {err:.3e} >= {rtol:.1e}\n"
        f"autodiff: {a[:8]}\nnumeric:  {n[:8]}"
    )
    return err


def _sample(size, max_entries, rng):
    if size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_entries, replace=False))


def _weighted_sum(outputs, weights):
    total = 0.0
    for out, w in zip(keras.tree.flatten(outputs), weights):
        total = total + ops.sum(ops.cast(out, "float64") * ops.convert_to_tensor(w, dtype="float64"))
    return total


def check_op_gradients(fn, *arrays, rtol=1e-4, atol=1e-10, eps=1e-6, max_entries=48, seed=0,
                       wrt=None):
    """Compare autodiff and central-difference gradients of a pure op in float64.

    The op's outputs are reduced to a scalar with fixed random weights, so
    every output entry contributes. At most `max_entries` entries of each
    argument are perturbed (chosen at random).

    Args:
        fn: function of the arrays returning a tensor or a structure of tensors.
        *arrays: float64 NumPy arrays (arguments of `fn`).
        wrt: indices of the arguments to check (default: all).

    Returns:
        dict `{argument index: relative error}`.
    """
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a, dtype="float64") for a in arrays]
    wrt = range(len(arrays)) if wrt is None else wrt
    sample_out = fn(*[ops.convert_to_tensor(a) for a in arrays])
    weights = [rng.standard_normal(tuple(o.shape)) for o in keras.tree.flatten(sample_out)]

    def scalar(*args):
        return _weighted_sum(fn(*args), weights)

    _, grads = value_and_grad(scalar, *[ops.convert_to_tensor(a) for a in arrays])
    errors = {}
    for i in wrt:
        idx = _sample(arrays[i].size, max_entries, rng)

        def f(xi, i=i):
            args = list(arrays)
            args[i] = xi
            return float(ops.convert_to_numpy(scalar(*[ops.convert_to_tensor(a) for a in args])))

        numeric = numerical_gradient(f, arrays[i], eps=eps, indices=idx)
        errors[i] = _check_close(ops.convert_to_numpy(grads[i]), numeric, idx, rtol, atol, f"argument {i}")
    return errors


def check_layer_gradients(layer_cls, init_kwargs, input_shape, input_data=None, call_kwargs=None,
                          rtol=1e-4, atol=1e-10, eps=None, max_entries=48, seed=0, check_inputs=True,
                          dtype="float64"):
    """Float64 (or float32) finite-difference check of a layer's gradients.

    Builds the layer with `dtype` (default "float64"), reduces its outputs to a
    scalar with fixed random weights (in float64) and compares autodiff
    gradients (through `stateless_call`) with central differences, for every
    input and every trainable weight.

    `dtype="float32"` is for layers whose float64 path a backend computes in
    float32 (Keras 3.15.1's torch `matmul`, hence `Dense`): the step `eps`
    defaults to `2**-10`, so `x +- eps` is exact in float32 for `|x| < 2**13`,
    and a central difference then carries a relative error of order
    `eps_32 / eps + eps**2 ~ 1e-4` (`eps_32 = 1.2e-7`); pass `rtol` of about
    1e-3 (a wrong gradient is off by order 1).

    Returns:
        dict `{name: relative error}`.
    """
    if dtype not in ("float64", "float32"):
        raise ValueError(f"`dtype` must be 'float64' or 'float32'. Received: dtype={dtype!r}")
    if eps is None:
        eps = 1e-6 if dtype == "float64" else 2.0**-10
    call_kwargs = call_kwargs or {}
    rng = np.random.default_rng(seed)
    if input_data is None:
        input_data = random_inputs(input_shape, dtype="float64", seed=seed)
    multi = isinstance(input_data, (list, tuple))
    inputs = [np.asarray(a, dtype=dtype).astype("float64") for a in (input_data if multi else [input_data])]

    layer = layer_cls(**{**init_kwargs, "dtype": dtype})
    out = layer(inputs if multi else inputs[0], **call_kwargs)
    weights = [rng.standard_normal(tuple(o.shape)) for o in keras.tree.flatten(out)]
    trainable = [np.asarray(ops.convert_to_numpy(v), dtype="float64") for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    assert trainable or check_inputs, "nothing to check"

    def scalar(xs, tv):
        outputs, _ = layer.stateless_call(list(tv), non_trainable, xs if multi else xs[0], **call_kwargs)
        return _weighted_sum(outputs, weights)

    def as_tensors(arrs):
        return [ops.convert_to_tensor(np.asarray(a, dtype=dtype)) for a in arrs]

    _, (g_inputs, g_weights) = value_and_grad(scalar, as_tensors(inputs), as_tensors(trainable))
    errors = {}
    targets = []
    if check_inputs:
        targets += [("input", j, inputs, g_inputs) for j in range(len(inputs))]
    targets += [("weight", j, trainable, g_weights) for j in range(len(trainable))]
    for kind, j, group, grads in targets:
        idx = _sample(group[j].size, max_entries, rng)

        def f(value, kind=kind, j=j):
            xs, tv = list(inputs), list(trainable)
            (xs if kind == "input" else tv)[j] = value
            return float(ops.convert_to_numpy(scalar(as_tensors(xs), as_tensors(tv))))

        name = f"input {j}" if kind == "input" else layer.trainable_variables[j].path
        numeric = numerical_gradient(f, group[j], eps=eps, indices=idx)
        errors[name] = _check_close(ops.convert_to_numpy(grads[j]), numeric, idx, rtol, atol, name)
    return errors


@contextlib.contextmanager
def eager_tf_functions():
    """On TensorFlow, Keras' train, test and predict functions run eagerly inside the block (put back after it).

    For the few steps of a tiny model in a CLI or training test that is cheaper
    than tracing each function (the 3D volume `train` test: 29.5 -> 11.6 CPU s,
    the explain-after-train test 11.5 -> 3.3); the same computation on the same
    backend (tf.data pipelines stay traced: TensorFlow's warning about that is
    ignored in pyproject.toml). Does nothing on other backends.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)
