"""LevelSetEvolution: compiled loop = repeated NumPy steps; traced graph independent of `steps`; gradients;
convergence stop; reinitialisation; truncated BPTT; 3D 128^3; bad input."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_medseg import zoo
from keras_medseg.layers import LevelSetEvolution
from keras_medseg.zoo.level_set import signed_distance_to_sphere, synthetic_disks
from tests.layers.test_level_set_step import _upwind_sum_min, np_level_set_step
from tests.testing import check_layer_gradients, run_layer_test

pytestmark = pytest.mark.backend_agnostic

FROZEN = {"trainable_kernels": False, "trainable_coefficients": False}


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


@pytest.mark.parametrize("spatial", [(13, 11), (7, 6, 9)])
def test_loop_equals_repeated_numpy_steps(spatial):
    rng = np.random.default_rng(0)
    u0 = rng.standard_normal((2,) + spatial + (1,))
    g = rng.uniform(0.1, 1.0, (2,) + spatial + (1,))
    layer = LevelSetEvolution(steps=6, alpha=-0.7, beta=0.3, gamma=1.5, dt=0.1, dtype="float64", **FROZEN)
    out = _np(layer([u0, g]))
    ref = u0[..., 0]
    for _ in range(6):
        ref = np_level_set_step(ref, g[..., 0], -0.7, 0.3, 1.5, 0.1)
    np.testing.assert_allclose(out[..., 0], ref, rtol=1e-9, atol=1e-9)


def _traced_size(steps, size=32):
    """Number of traced nodes of one `lse` forward pass (TensorFlow graph incl. loop body / JAX jaxpr)."""
    model = zoo.build("lse", steps=steps, input_size=size)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((1, size, size, 1), tf.float32)
        graph = tf.function(lambda x, u: model([x, u])).get_concrete_function(spec, spec).graph
        graph_def = graph.as_graph_def()
        return len(graph_def.node) + sum(len(f.node_def) for f in graph_def.library.function)
    if backend == "jax":
        import jax

        x = np.zeros((1, size, size, 1), "float32")
        return len(str(jax.make_jaxpr(lambda a, b: model([a, b]))(x, x)).splitlines())
    pytest.skip("PyTorch runs the loop eagerly (nothing is traced)")


def test_traced_graph_does_not_grow_with_steps():
    # issue 15: the first call with steps=400 must cost less than twice steps=50 (the loop is not unrolled)
    small, large = _traced_size(50), _traced_size(400)
    assert large < 2 * small
    assert large == small


def test_layer_harness():
    shapes = [(2, 9, 8, 1)] * 2
    rng = np.random.default_rng(1)
    data = [rng.standard_normal(shapes[0]).astype("float32"), rng.uniform(0.1, 1, shapes[1]).astype("float32")]
    run_layer_test(LevelSetEvolution, {"steps": 3, "reinit_every": 2}, shapes, expected_output_shape=shapes[0],
                   input_data=data)


def _kink_free_inputs(shape, alpha, beta, eps):
    for seed in range(300):
        rng = np.random.default_rng(seed)
        data = [rng.standard_normal(shape), rng.uniform(0.1, 1, shape)]
        if _upwind_sum_min(data[0][..., 0], data[1][..., 0], alpha, beta, eps) > 1e-2:
            return data
    raise AssertionError("no kink-free input found")


@pytest.mark.slow
def test_gradients_through_the_loop():
    # a short compiled lsn loop: both inputs, every kernel and coefficient against central differences (float64)
    kwargs = {"steps": 2, "eps": 1e-2, "alpha": 0.1, "beta": 1.0, "gamma": 0.7, "dt": 0.02}
    data = _kink_free_inputs((1, 5, 4, 1), 0.1, 1.0, 1e-2)
    errors = check_layer_gradients(LevelSetEvolution, kwargs, [(1, 5, 4, 1)] * 2, input_data=data,
                                   call_kwargs={"training": True}, max_entries=4)
    assert len(errors) == 12
    assert max(errors.values()) < 1e-4


def test_truncated_backprop_stops_the_gradient_of_early_steps():
    layer = LevelSetEvolution(steps=3, backprop_steps=1, dtype="float64", **FROZEN)
    from keras_medseg.utils.gradients import value_and_grad

    u0 = signed_distance_to_sphere((9, 9), (4, 4), 2.0)[None, ..., None]
    g = np.ones_like(u0)
    _, (grad,) = value_and_grad(lambda u: ops.sum(layer([u, g], training=True)), ops.convert_to_tensor(u0))
    assert float(np.abs(_np(grad)).max()) == 0.0
    _, (grad,) = value_and_grad(lambda u: ops.sum(layer([u, g], training=False)), ops.convert_to_tensor(u0))
    assert float(np.abs(_np(grad)).max()) > 0.0


def test_convergence_stop_freezes_each_image():
    images, _, init = synthetic_disks(2, size=24, seed=0, noise=0.0)
    scale = 10.0
    from keras_medseg.ops import edge_indicator

    g = _np(edge_indicator(images, scale=scale))
    # 100 steps: both fronts stop after 70 (measured), 30 steps before the full run ends (200 steps: the same)
    full = LevelSetEvolution(steps=100, alpha=-0.5, dt=0.2, **FROZEN)
    early = LevelSetEvolution(steps=100, alpha=-0.5, dt=0.2, tolerance=1e-3, check_every=10, **FROZEN)
    u_full = _np(full([init, g]))
    u_early, taken = early.evolve(ops.convert_to_tensor(init), ops.convert_to_tensor(g), return_steps=True)
    taken = _np(taken)
    assert taken.shape == (2,) and np.all(taken % 10 == 0) and np.all(taken < 100) and np.all(taken > 0)
    # stopped fronts sit where the full run ends: same inside region to within a pixel ring
    inside_full, inside_early = u_full[..., 0] < 0, _np(u_early)[..., 0] < 0
    assert np.count_nonzero(inside_full != inside_early) <= 0.05 * inside_full.sum()
    # training ignores the stop (a fixed number of steps, differentiable on every backend)
    np.testing.assert_allclose(_np(early([init, g], training=True)), u_full, atol=1e-5)


@pytest.mark.slow
def test_3d_volume_128():
    size = 128
    u0 = signed_distance_to_sphere((size,) * 3, (64, 60, 66), 20.0).astype("float32")[None, ..., None]
    g = np.random.default_rng(0).uniform(0.2, 1.0, u0.shape).astype("float32")
    out = _np(LevelSetEvolution(steps=2, alpha=-1.0, beta=0.2, gamma=1.0, dt=0.2, **FROZEN)([u0, g]))
    assert out.shape == (1, size, size, size, 1)
    ref = u0[..., 0].astype("float64")
    for _ in range(2):
        ref = np_level_set_step(ref, g[..., 0].astype("float64"), -1.0, 0.2, 1.0, 0.2)
    np.testing.assert_allclose(out[..., 0], ref, atol=2e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="steps"):
        LevelSetEvolution(steps=0)
    with pytest.raises(ValueError, match="dt"):
        LevelSetEvolution(dt=0.0)
    with pytest.raises(ValueError, match="tolerance"):
        LevelSetEvolution(tolerance=-1.0)
    with pytest.raises(ValueError, match="tolerance"):
        LevelSetEvolution(tolerance=float("nan"))
    with pytest.raises(ValueError, match="check_every"):
        LevelSetEvolution(check_every=0)
    with pytest.raises(ValueError, match="reinit_every"):
        LevelSetEvolution(reinit_every=0)
    with pytest.raises(ValueError, match="reinit_iterations"):
        LevelSetEvolution(reinit_iterations=0)
    with pytest.raises(ValueError, match="backprop_steps"):
        LevelSetEvolution(steps=5, backprop_steps=6)
    u = np.zeros((1, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match="initial_level_set.shape"):
        LevelSetEvolution(steps=2)([np.zeros((1, 7, 8, 1), "float32"), u])
    with pytest.raises(ValueError, match="two inputs"):
        LevelSetEvolution(steps=2)(u)


def test_model_refuses_nan_image_and_wrong_initial_level_set():
    model = zoo.build("lse", steps=3)
    image = np.random.default_rng(0).random((1, 16, 16, 1)).astype("float32")
    u0 = signed_distance_to_sphere((16, 16), (8, 8), 3.0).astype("float32")[None, ..., None]
    bad = image.copy()
    bad[0, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match="image"):
        model([bad, u0])
    with pytest.raises(ValueError, match="initial_level_set"):
        model([image, u0[:, :12]])
    nan_u0 = u0.copy()
    nan_u0[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="initial_level_set"):
        model([image, nan_u0])


@pytest.mark.parametrize("spatial", [(12, 10), (6, 7, 5)])
def test_frozen_stencil_path_equals_convolution_path(spatial):
    # frozen kernels run as slices of one padded tensor; learned kernels (initialised to the same stencils) as
    # convolutions: one step and a short loop give the same numbers
    rng = np.random.default_rng(3)
    u0 = rng.standard_normal((2,) + spatial + (1,))
    g = rng.uniform(0.1, 1.0, (2,) + spatial + (1,))
    kwargs = {"steps": 4, "alpha": -0.6, "beta": 0.3, "gamma": 1.2, "dt": 0.1, "dtype": "float64"}
    frozen = LevelSetEvolution(trainable_kernels=False, **kwargs)
    learned = LevelSetEvolution(trainable_kernels=True, **kwargs)
    np.testing.assert_allclose(_np(frozen([u0, g])), _np(learned([u0, g])), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(_np(frozen.step([u0, g])), _np(learned.step([u0, g])), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tolerance", [None, 1e-3])
def test_compiled_loop_equals_keras_ops_loop(tolerance):
    # XLA on TensorFlow (jit_compile=True) against the keras.ops loop as written; batch of 3 (one image at a time
    # in inference) against the batched training loop
    images, _, init = synthetic_disks(3, size=20, seed=4, noise=0.0)
    from keras_medseg.ops import edge_indicator

    g = _np(edge_indicator(images, scale=10.0))
    # 20 steps (4 convergence checks; with 1e-3 no image stops within 20 or 40 steps, measured)
    kwargs = {"steps": 20, "alpha": -0.5, "dt": 0.2, "tolerance": tolerance, "check_every": 5, **FROZEN}
    fast = LevelSetEvolution(jit_compile=True, **kwargs)
    plain = LevelSetEvolution(jit_compile=False, **kwargs)
    u_fast, steps_fast = fast.evolve(ops.convert_to_tensor(init), ops.convert_to_tensor(g), return_steps=True)
    u_plain, steps_plain = plain.evolve(ops.convert_to_tensor(init), ops.convert_to_tensor(g), return_steps=True)
    np.testing.assert_allclose(_np(u_fast), _np(u_plain), atol=1e-4)
    np.testing.assert_array_equal(_np(steps_fast), _np(steps_plain))
    if tolerance is None:
        np.testing.assert_allclose(_np(u_fast), _np(plain([init, g], training=True)), atol=1e-4)
    # inside a compiled Keras model too
    g_in, u_in = keras.Input((20, 20, 1)), keras.Input((20, 20, 1))
    model = keras.Model([g_in, u_in], fast([u_in, g_in]))
    np.testing.assert_allclose(model.predict([g, init], verbose=0), _np(u_plain), atol=1e-4)


@pytest.mark.parametrize("spatial", [(9, 7), (5, 6, 7)])
def test_frozen_velocity_from_slices_equals_convolution_and_numpy(spatial):
    # frozen kernels: gamma grad g from slices (`central_gradient`), bit for bit the convolution of `LevelSetStep`
    from tests.ops.test_level_set import np_differences

    g = np.random.default_rng(3).uniform(0.0, 1.0, (2,) + spatial + (2,)).astype("float32")
    layer = LevelSetEvolution(steps=1, gamma=1.3, **FROZEN)
    layer.build([g.shape[:-1] + (1,), g.shape])
    from keras_medseg.ops.finite_differences import conv_edge

    fast = _np(layer.step.velocity(ops.convert_to_tensor(g)))
    conv = 1.3 * _np(conv_edge(ops.convert_to_tensor(g[..., :1]), layer.step.edge_gradient_kernel))
    np.testing.assert_array_equal(fast, conv)
    reference = np.stack([1.3 * c for c in np_differences(g[..., 0].astype("float64"))[2]], axis=-1)
    np.testing.assert_allclose(fast, reference, rtol=1e-5, atol=1e-6)
