"""`VolumeDataset(workers=2, use_multiprocessing=True)` with real worker processes (started once by a forkserver,
one compute thread each): through Keras' own enqueuer, two epochs give the batches one worker makes, on every
backend, within a timeout (a forked TensorFlow or JAX worker hung here before). Run on TensorFlow in the suite
(the processes' start, one backend import and two runtime starts, is most of its 6-10 s); passed on JAX and
torch when it was written (`KERAS_BACKEND=jax pytest tests/data/test_volume_worker_processes.py`)."""

import multiprocessing.forkserver
import os
import signal
import sys
import threading

import keras
import numpy as np
import pytest
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

from keras_medseg.data import VolumeDataset
from keras_medseg.data.augment import Compose, RandomAffine, RandomFlip, RandomGamma
from keras_medseg.data.scans.workers import worker_start_method
from tests.data.test_volume_dataset import write_cases


def compute_threads():
    """What limits a worker process's compute threads (run in the worker)."""
    out = {"pid": os.getpid(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
           "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "tensorflow_loaded": "tensorflow" in sys.modules}
    names = []
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as f:
            names.append(f.read().strip())
    out["xla_eigen_threads"] = names.count("tf_XLAEigen")  # JAX's CPU client pool (TensorFlow's XLA: none)
    if keras.backend.backend() == "torch":
        import torch

        out["torch"] = (torch.get_num_threads(), torch.get_num_interop_threads())
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        out["tensorflow"] = (tf.config.threading.get_intra_op_parallelism_threads(),
                             tf.config.threading.get_inter_op_parallelism_threads())
    return out


@pytest.fixture
def fresh_forkserver():
    """Python's forkserver (one per process) started by this test with the default preload list. An earlier test in
    the same pytest worker may have started it with another: the slide cohort preloads its module, which imports
    Keras, so the server would hold TensorFlow whatever the pool does. Put back as found afterwards."""
    server = multiprocessing.forkserver._forkserver
    saved = list(server._preload_modules)
    server._stop()
    multiprocessing.forkserver.set_forkserver_preload(["__main__"])
    yield
    server._stop()
    multiprocessing.forkserver.set_forkserver_preload(saved)


@pytest.mark.slow  # still run in CI
def test_worker_processes_make_the_batches_of_one_worker(tmp_path, fresh_forkserver):
    root = write_cases(str(tmp_path / "data"))
    # a warp on JAX and torch, where the workers must not import TensorFlow to key its compiled program; not on
    # TensorFlow, where it would double the test's time (its compilation in each worker and here)
    warp = [] if keras.backend.backend() == "tensorflow" else [RandomAffine(rotation=0.2, probability=0.5)]
    augment = Compose([*warp, RandomFlip(probability=0.5), RandomGamma(probability=0.5)])
    kwargs = {"patch_size": 12, "batch_size": 2, "steps_per_epoch": 3, "seed": 5, "augment": augment,
              "cache_dir": str(tmp_path / "cache")}
    many = VolumeDataset(root, workers=2, use_multiprocessing=True, **kwargs)
    assert many.worker_processes and many.use_multiprocessing is False  # Keras' enqueuer: threads, no fork
    assert many.workers == 4  # its threads: two per process, so a process has its next batch waiting
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
            assert x["xla_eigen_threads"] <= 1, x  # JAX: one thread in its CPU client's pool (`PJRT_NPROC`)
            assert x.get("torch", (1, 1)) == (1, 1) and x.get("tensorflow", (1, 1)) == (1, 1)
            # on JAX and torch no worker imports TensorFlow (2.2 s each) to key its compiled warp
            assert x["tensorflow_loaded"] == (keras.backend.backend() == "tensorflow")
        assert worker_start_method() == "forkserver"
        # the process's one forkserver (Dask's nannies fork from it too) runs no backend: it was not told to
        # preload the dataset's module, which would load Keras and TensorFlow into it
        server = multiprocessing.forkserver._forkserver._forkserver_pid
        with open(f"/proc/{server}/maps") as maps:
            loaded = maps.read()
        assert "tensorflow" not in loaded and "libtorch" not in loaded and "jaxlib" not in loaded
        # a worker killed mid-run (out of memory, a kill): the next batch is one clear error, not a hang
        os.kill(next(iter(pids)), signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"A worker process of the VolumeDataset died \(killed"):
            for index in range(100):  # the living worker may make a batch before the pool is seen broken
                many[index % len(many)]
    finally:
        many.close()
    assert many._processes is None and not any(os.path.exists(f"/proc/{p}") for p in pids if p)


def test_a_worker_keys_its_compiled_warp_with_the_config_it_was_sent(tmp_path):
    """A worker's copy of the augmentation gets its program key from the config it was built from (serializing
    it again imports TensorFlow on JAX and torch when installed): the same key the training process computes."""
    import pickle

    from keras_medseg.data.augment import warp
    from keras_medseg.data.scans import workers

    augment = Compose([RandomAffine(rotation=0.2, probability=0.5), RandomGamma(probability=0.5)])
    dataset = VolumeDataset(write_cases(str(tmp_path / "data")), patch_size=8, batch_size=1, augment=augment)
    state = dataset.__getstate__()
    state.pop("augment")
    payload = pickle.dumps((type(dataset), state, keras.layers.serialize(augment)))
    copy = workers.load_dataset(payload).augment  # what `_init_worker` does after `one_compute_thread`
    assert copy is not augment and copy._program_config == warp.program_config(augment)
    assert copy.transforms[0].rotation == augment.transforms[0].rotation
