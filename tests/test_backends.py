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
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"after_import": False, "after_fit": False, "kept": 1}, result
