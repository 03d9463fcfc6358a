"""The same zoo model with the same weights gives the same numbers on TensorFlow, JAX and torch.

One subprocess per installed backend (the backend is fixed at Keras' first
import). The first backend builds each model and writes its weights to a
`.weights.h5` file; every backend loads those weights, runs a fixed batch and
takes the gradients of the model's compiled loss for one training step
(`stateless_call`, `training=True`). Outputs must agree to 1e-4 and each
weight's gradient to 1e-3 (relative norm).
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("unet", "imexnet", "lsn", "fpn_detector")

_SCRIPT = r"""
import os, sys
import numpy as np
import keras
from keras import ops
from keras_medseg import zoo
from tests.testing import value_and_grad

out_dir = sys.argv[1]
backend = keras.backend.backend()
result = {}
for name in sys.argv[2:]:
    spec = zoo.get_spec(name)
    keras.utils.set_random_seed(0)
    model = zoo.build(name, **spec.tiny)
    x, y = zoo.example_batch(name, model, batch_size=2, seed=0)
    model(x, training=False)
    path = os.path.join(out_dir, name + ".weights.h5")
    if not os.path.exists(path):
        model.save_weights(path)
    model.load_weights(path)
    pred = model(x, training=False)
    loss_fn = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(tv):
        out, _ = model.stateless_call(list(tv), non_trainable, x, training=True)
        return ops.mean(loss_fn(y, out))

    if backend == "jax":  # one compiled program: op-by-op tracing of the backward pass took minutes
        import jax
        value, grads = jax.jit(jax.value_and_grad(loss))(trainable)
    else:
        value, (grads,) = value_and_grad(loss, trainable)
    result[name] = {
        "output": [np.asarray(ops.convert_to_numpy(o), "float64") for o in keras.tree.flatten(pred)],
        "loss": float(ops.convert_to_numpy(value)),
        "grads": [np.asarray(ops.convert_to_numpy(g), "float64") for g in grads],
    }
arrays = {}
for name, r in result.items():
    for i, o in enumerate(r["output"]):
        arrays[f"{name}/output/{i}"] = o
    for i, g in enumerate(r["grads"]):
        arrays[f"{name}/grad/{i}"] = g
    arrays[f"{name}/loss"] = np.array(r["loss"])
np.savez(os.path.join(out_dir, backend + ".npz"), **arrays)
"""


def _installed(backend):
    return importlib.util.find_spec(backend) is not None


def _run(backend, out_dir, name):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT, KERAS_MEDSEG_FAST="1",
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(out_dir), name], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{backend}: {proc.stderr[-3000:]}"
    return dict(np.load(os.path.join(out_dir, backend + ".npz")))


@pytest.mark.parametrize("name", MODELS)  # one model per test: each stays under a minute on 2 cores
def test_outputs_and_gradients_agree_across_backends(tmp_path, name):
    backends = [b for b in ("tensorflow", "jax", "torch") if _installed(b)]
    if len(backends) < 2:
        pytest.skip(f"needs two Keras backends installed. Received: {backends}")
    results = {b: _run(b, tmp_path, name) for b in backends}
    ref_name = backends[0]
    ref = results[ref_name]
    for b in backends[1:]:
        got = results[b]
        assert set(got) == set(ref)
        for key in sorted(ref):
            a, g = ref[key], got[key]
            if "/output/" in key or key.endswith("/loss"):
                np.testing.assert_allclose(g, a, rtol=1e-4, atol=1e-4, err_msg=f"{key}: {b} vs {ref_name}")
            else:
                err = np.linalg.norm(g - a) / max(np.linalg.norm(a), 1e-8)
                assert err < 1e-3, f"{key}: {b} vs {ref_name} gradient relative error {err:.2e}"
