"""The same zoo model with the same weights gives the same numbers on TensorFlow, JAX and torch.

The backend is fixed at Keras' first import, so every installed backend other
than the one this process runs on gets ONE subprocess per test run that
computes every selected model (`tests.testing.cross_backend`; its import and
first compilations are paid once, not once per model). This process computes
them on its own backend first and writes each model's weights to a
`.weights.h5` file; every backend loads those weights, runs a fixed batch and
takes the gradients of the model's compiled loss for one training step
(`stateless_call`, `training=True`). Outputs must agree to 1e-4 and each
weight's gradient to 1e-3 (relative norm).

Under pytest-xdist the workers share that work: the first worker to set up
the module's fixture computes the in-process results and starts the
subprocesses, in a folder all workers of the run see; each test waits for its
own model's files (one test per model: each stays under a minute on 2 cores).
"""

import importlib.util
import os
import subprocess
import sys
import time
import traceback

import keras
import numpy as np
import pytest

from tests.testing import cross_backend

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("unet", "imexnet", "lsn", "fpn_detector")
WAIT_S = 600


def _installed(backend):
    return importlib.util.find_spec(backend) is not None


def _env(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT, KERAS_MEDSEG_FAST="1", TF_CPP_MIN_LOG_LEVEL="2")
    if backend == "jax":
        # XLA's backend optimisation level 0, as tests/conftest.py sets for the JAX phase: this subprocess is
        # compile-bound (all four models 36 -> 24 CPU s against level 1); results agree to the same tolerances
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_backend_optimization_level")]
        env["XLA_FLAGS"] = " ".join(flags + ["--xla_backend_optimization_level=0"])
    return env


def _selected_models(session):
    here = os.path.abspath(__file__)
    names = {item.callspec.params["name"] for item in session.items
             if str(item.path) == here and hasattr(item, "callspec")}
    return [name for name in MODELS if name in names]


_PROCS = {}  # backend -> subprocess, in the worker that started them


def _start(folder, backends, names):
    """Start one subprocess per other backend, then compute `names` here (writing the weights they wait for)."""
    here = keras.backend.backend()
    for b in backends:  # started first: they import their backend while this process builds the models
        if b != here:
            with open(os.path.join(folder, b + ".log"), "w") as log:
                _PROCS[b] = subprocess.Popen(
                    [sys.executable, "-m", "tests.testing.cross_backend", folder, *names, "--wait-for-weights"],
                    env=_env(b), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        for name in names:  # writes each model's weights, then its results
            cross_backend.compute(folder, name)
            keras.backend.clear_session(free_memory=False)
    except Exception:
        with open(cross_backend.error_path(folder, here), "w") as f:
            f.write(traceback.format_exc())
        raise


@pytest.fixture(scope="module")
def shared(request, tmp_path_factory):
    """`(folder, backends)`: the folder where every backend's results appear, shared by the run's xdist workers."""
    backends = [b for b in ("tensorflow", "jax", "torch") if _installed(b)]
    if len(backends) < 2:
        pytest.skip(f"needs two Keras backends installed. Received: {backends}")
    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:  # the workers' base folders share a parent, unique to this run
        base = base.parent / f"cross_backend-{os.environ.get('PYTEST_XDIST_TESTRUNUID', 'run')}"
    else:
        base = base / "cross_backend"
    base.mkdir(parents=True, exist_ok=True)
    folder = str(base)
    try:  # exactly one worker (the first to get here) starts the work
        os.close(os.open(os.path.join(folder, "started"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        starter = True
    except FileExistsError:
        starter = False
    try:
        if starter:
            _start(folder, backends, _selected_models(request.session))
        yield folder, backends
    finally:
        while _PROCS:  # reaped here, so their CPU time counts in this module's tests
            proc = _PROCS.popitem()[1]
            try:
                proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _load(folder, name, backend):
    """`backend`'s results for model `name`, once its process has written them."""
    path = cross_backend.result_path(folder, name, backend)
    start = time.monotonic()
    while not os.path.exists(path):
        proc = _PROCS.get(backend)
        if (os.path.exists(cross_backend.error_path(folder, backend)) or time.monotonic() - start > WAIT_S
                or (proc is not None and proc.poll() is not None)):
            time.sleep(0.5)  # a result written just before the process exited
            if os.path.exists(path):
                break
            log = os.path.join(folder, backend + ".log")
            error = cross_backend.error_path(folder, backend)
            text = "".join(open(p).read()[-3000:] for p in (log, error) if os.path.exists(p)) or "(no log)"
            pytest.fail(f"{backend}: no results for {name} after {time.monotonic() - start:.0f} s:\n{text}",
                        pytrace=False)
        time.sleep(0.05)
    return dict(np.load(path))


@pytest.mark.parametrize("name", MODELS)
def test_outputs_and_gradients_agree_across_backends(shared, name):
    folder, backends = shared
    results = {b: _load(folder, name, b) for b in backends}
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
