"""`VolumeDataset(workers=2, use_multiprocessing=True)` with real worker processes (started once by a forkserver,
one compute thread each): through Keras' own enqueuer, two epochs give the batches one worker makes, on every
backend, within a timeout (a forked TensorFlow or JAX worker hung here before). Run on TensorFlow in the suite
(the processes' start, one backend import and two runtime starts, is most of its 6-10 s); passed on JAX and
torch when it was written (`KERAS_BACKEND=jax pytest tests/data/test_volume_worker_processes.py`)."""

import os
import threading

import keras
import numpy as np
import pytest
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

from keras_medseg.data import VolumeDataset
from keras_medseg.data.augment import Compose, RandomFlip, RandomGamma
from keras_medseg.data.scans.workers import worker_start_method
from tests.data.test_volume_dataset import write_cases


def compute_threads():
    """What limits a worker process's compute threads (run in the worker)."""
    out = {"pid": os.getpid(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    if keras.backend.backend() == "torch":
        import torch

        out["torch"] = (torch.get_num_threads(), torch.get_num_interop_threads())
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        out["tensorflow"] = (tf.config.threading.get_intra_op_parallelism_threads(),
                             tf.config.threading.get_inter_op_parallelism_threads())
    return out


@pytest.mark.slow  # still run in CI
def test_worker_processes_make_the_batches_of_one_worker(tmp_path):
    root = write_cases(str(tmp_path / "data"))
    augment = Compose([RandomFlip(probability=0.5), RandomGamma(probability=0.5)])
    kwargs = {"patch_size": 12, "batch_size": 2, "steps_per_epoch": 3, "seed": 5, "augment": augment,
              "cache_dir": str(tmp_path / "cache")}
    many = VolumeDataset(root, workers=2, use_multiprocessing=True, **kwargs)
    assert many.worker_processes and many.use_multiprocessing is False  # Keras' enqueuer: threads, no fork
    adapter = PyDatasetAdapter(many)  # what `fit` iterates
    got, errors = [], []

    def two_epochs():
        try:
            for _ in range(2):
                adapter.on_epoch_begin()
                got.append([tuple(b) for b in adapter.get_numpy_iterator()])
                adapter.on_epoch_end()
        except Exception as exc:  # reported below
            errors.append(exc)

    try:
        runner = threading.Thread(target=two_epochs, daemon=True)
        runner.start()
        one = VolumeDataset(root, **kwargs)  # the reference, drawn here while the workers start
        expected = []
        for _ in range(2):
            expected.append([one[i] for i in range(len(one))])
            one.on_epoch_end()
        runner.join(180)
        assert not runner.is_alive(), "the worker processes hung"
        assert not errors, errors
        for epoch_got, epoch_expected in zip(got, expected, strict=True):
            for (x, y), (ex, ey) in zip(epoch_got, epoch_expected, strict=True):
                np.testing.assert_array_equal(x, ex)
                np.testing.assert_array_equal(y, ey)
        assert got[0][0][0].shape == (2, 12, 12, 12, 1)
        limits = [many._processes.executor.submit(compute_threads).result(60) for _ in range(4)]
        pids = set(many._processes.pids)
        assert {x["pid"] for x in limits} <= pids and 1 <= len(pids) <= 2 and os.getpid() not in pids
        for x in limits:  # one compute thread each, set before the backend ran an op
            assert x["OMP_NUM_THREADS"] == "1" and "--xla_cpu_multi_thread_eigen=false" in x["XLA_FLAGS"]
            assert x.get("torch", (1, 1)) == (1, 1) and x.get("tensorflow", (1, 1)) == (1, 1)
        assert worker_start_method() == "forkserver"
    finally:
        many.close()
    assert many._processes is None and not any(os.path.exists(f"/proc/{p}") for p in pids if p)
