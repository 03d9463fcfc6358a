"""The same zoo model with the same weights gives the same numbers on TensorFlow, JAX and torch.

One subprocess per installed backend other than the one this process runs
on (the backend is fixed at Keras' first import; `tests.testing.cross_backend`
does the work in both cases). The first backend builds each model and writes its weights to a
`.weights.h5` file; every backend loads those weights, runs a fixed batch and
takes the gradients of the model's compiled loss for one training step
(`stateless_call`, `training=True`). Outputs must agree to 1e-4 and each
weight's gradient to 1e-3 (relative norm).
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.testing import cross_backend

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("unet", "imexnet", "lsn", "fpn_detector")


def _installed(backend):
    return importlib.util.find_spec(backend) is not None


def _run(backend, out_dir, name):
    if backend == keras.backend.backend():  # the backend this process runs on: no second import
        return dict(np.load(cross_backend.compute(str(out_dir), name)))
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT, KERAS_MEDSEG_FAST="1",
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "tests.testing.cross_backend", str(out_dir), name], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
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
