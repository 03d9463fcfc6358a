"""Multi-device training on 2 logical CPU devices equals single-device training."""

import json
import os
import subprocess
import sys

import keras
import pytest

from keras_medseg.training.distribute import distribution_scope

SCRIPT = os.path.join(os.path.dirname(__file__), "_run_distributed.py")


def _run(backend, strategy):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if backend == "jax":
        # two CPU devices; the suite's compile flags (tests/conftest.py) come with the environment
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    proc = subprocess.run([sys.executable, SCRIPT, backend, strategy], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend,strategy", [("tensorflow", "mirrored"), ("jax", "jax-data-parallel")])
def test_two_devices_match_single_device(backend, strategy):
    result = _run(backend, strategy)
    assert result["replicas"] == 2
    assert result["multi"] == pytest.approx(result["single"], rel=1e-4, abs=1e-5)
    assert result["single"][-1] < result["single"][0]


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="distribute"):
        with distribution_scope("horovod"):
            pass


def test_strategy_of_the_other_backend_is_refused():
    other = "jax-data-parallel" if keras.backend.backend() == "tensorflow" else "mirrored"
    with pytest.raises(ValueError, match="backend"):
        with distribution_scope(other):
            pass
