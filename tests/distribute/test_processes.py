"""Two local processes on CPU per backend (JAX, TensorFlow, torch) train like one process, split the data,
leave the run folder to rank 0, stop when a rank dies and resume when rerun.

Each backend costs two launches of two processes (started from the TensorFlow phase with `backend=`, so
these tests are not marked backend_agnostic): the first trains 2 epochs, checks against a 1-process run
of the same global batch computed by rank 0, then goes on to a third epoch in which rank 1 kills itself;
the second reruns the same call and resumes.
"""

import json
import os
import time

import numpy as np
import pytest

from keras_medseg.training.distribute import DistributedError, launch
from tests.distribute import _process_job

ENGINES = {"jax": "jax.distributed", "tensorflow": "tf.distribute.MultiWorkerMirroredStrategy",
           "torch": "torch.distributed"}


def _report(reports, rank, epochs):
    with open(os.path.join(reports, f"rank{rank}-{epochs}.json")) as f:
        return json.load(f)


def _close(a, b, tol):
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_two_processes_train_like_one_split_the_data_and_resume_after_a_kill(backend, tmp_path):
    folder, reports = str(tmp_path / "run"), str(tmp_path / "reports")
    os.makedirs(reports)
    with pytest.raises(DistributedError, match=r"Process 1 of 2 was killed by SIGKILL .*the other process was "
                                               r"stopped\. Rerun the same command to resume") as error:
        launch(_process_job.first_run, folder, reports, processes=2, backend=backend)
    ended = time.time()
    assert "\n" not in str(error.value)
    with open(os.path.join(reports, "killed.json")) as f:
        assert ended - json.load(f)["time"] < 60  # the other rank was stopped, no hang on its collective
    zero, one = _report(reports, 0, 2), _report(reports, 1, 2)
    assert (zero["rank"], one["rank"], zero["size"], zero["engine"]) == (0, 1, 2, ENGINES[backend])
    # the same loss and weights as one process with the same global batch of 8 (float32 sums in another order)
    _close(zero["loss"], zero["reference_loss"][:2], 1e-5)
    _close(one["loss"], zero["loss"], 1e-6)
    # each epoch: the two ranks read disjoint rows, together all 32
    for epoch in ("0", "1"):
        assert not set(zero["read"][epoch]) & set(one["read"][epoch])
        assert sorted(zero["read"][epoch] + one["read"][epoch]) == list(range(32))
    # rank 0 alone wrote the run folder
    assert one["written"] == [] and {"best.keras", "log.csv"} <= set(zero["written"])
    assert any(p.startswith("backup") for p in zero["written"])
    # the rerun resumes both ranks at epoch 2 from rank 0's backup and ends where one process does
    result = launch(_process_job.job, folder, reports, 3, processes=2, backend=backend)
    assert result["initial_epoch"] == 2 and _report(reports, 1, 3)["initial_epoch"] == 2
    _close(result["loss"], zero["reference_loss"][2:], 1e-5)
    _close(result["weights"], zero["reference_weights"], 1e-5)
    _close(_report(reports, 1, 3)["weights"], result["weights"], 1e-6)
    with open(os.path.join(folder, "log.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + 3
