"""keras-medseg on a backend without TensorFlow.

`import keras_medseg`, building a zoo model and fitting it one step under
`KERAS_BACKEND=torch` (and `jax`) must not import TensorFlow, so a JAX or
torch user can run without it. Each run is a fresh subprocess, because the
backend is fixed when Keras is first imported.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import json, sys
import numpy as np
import keras_medseg
from keras_medseg import zoo, boxes

before = "tensorflow" in sys.modules
spec = zoo.get_spec("unet")
model = zoo.build("unet", **spec.tiny)
x, y = zoo.example_batch("unet", model, batch_size=2, seed=0)
model.fit(x, y, epochs=1, batch_size=2, verbose=0)
kept, _ = boxes.non_max_suppression([[0, 0, 2, 2], [0, 0, 2, 2.1]], [0.9, 0.8], box_format="corners")
print(json.dumps({"after_import": before, "after_fit": "tensorflow" in sys.modules,
                  "kept": len(kept)}))
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_no_tensorflow_import_off_the_tensorflow_backend(backend):
    pytest.importorskip(backend)
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT, KERAS_MEDSEG_FAST="1")
    if backend == "jax":  # XLA's lowest optimisation level, as in the suite's JAX phase: compiling the fit costs
        # about 2 CPU s less (tests/conftest.py); the same ops run
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_backend_optimization_level")]
        env["XLA_FLAGS"] = " ".join(flags + ["--xla_backend_optimization_level=0"])
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"after_import": False, "after_fit": False, "kept": 1}, result


# a process where the named backend module cannot be found, as in a venv without that extra
_HIDE = """
import importlib.abc, sys
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, _Hide())
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] == {hidden!r} else _find(name, *a)
"""


def _without(hidden, code, tmp_path, **env):
    run_env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    run_env.update(KERAS_HOME=str(tmp_path), PYTHONPATH=ROOT, **env)  # no keras.json: Keras' default backend
    return subprocess.run([sys.executable, "-c", _HIDE.format(hidden=hidden) + code], env=run_env,
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path))


def test_missing_backend_gives_one_line_naming_the_extra(tmp_path):
    # the base install has no backend: Keras' default (TensorFlow) missing -> which extra, or KERAS_BACKEND
    proc = _without("tensorflow", "import keras_medseg", tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("keras_medseg.utils.errors.BackendNotInstalledError: Keras would run on tensorflow "
                           "(Keras' default"), last
    assert "pip install 'keras-medseg[tensorflow]'" in last and "KERAS_BACKEND=jax (installed)" in last
    # the command line: one line, exit 2, no traceback
    proc = _without("torch", "import sys; from keras_medseg.cli import main; sys.exit(main(['demo']))", tmp_path,
                    KERAS_BACKEND="torch", KERAS_MEDSEG_LAZY_IMPORT="1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == ("keras-medseg demo: error: Keras would run on torch (KERAS_BACKEND) but torch is "
                                   "not installed: set KERAS_BACKEND=tensorflow (installed), or install it with "
                                   "pip install 'keras-medseg[torch]'.")
