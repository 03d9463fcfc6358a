"""Worker processes of a `VolumeDataset`: a pool started once, never forked from the training process.

`VolumeDataset(workers=N, use_multiprocessing=True)` makes its batches in
`WorkerProcesses`: `N` processes of a `concurrent.futures.ProcessPoolExecutor`
started by a forkserver (`worker_start_method`; spawn where the platform has
no forkserver), each limited to one compute thread before its backend runs an
op (`one_compute_thread`), each holding a copy of the dataset (unpickled once;
the augmentation layer travels as its config). Keras' enqueuer threads hand
them `(epoch, batch index)` and wait; a batch depends only on `(seed, epoch,
index)`, so it is the batch one worker makes.

Why not Keras' own worker processes: Keras forks a new pool from the training
process at every epoch. A fork of a process whose TensorFlow or JAX runtime
runs thread pools hung in our runs, and on torch the forked pools cost a pool
start per epoch and a cold memory cache in every new worker (2 processes
loaded at 0.59x of one worker in `benchmarks/volume_workers.py`).
"""

import collections
import contextlib
import multiprocessing
import os
import pickle
import threading
import warnings
import weakref

import keras

__all__ = ["ONE_THREAD_ENV", "LayerCopies", "WorkerPoolMixin", "WorkerProcesses", "load_dataset", "one_compute_thread",
           "worker_start_method"]

#: Environment variables set to 1 in a worker process before its backend runs an op: one thread of compute.
#: `PJRT_NPROC` sizes the thread pools of JAX's CPU client (XLA's `--xla_cpu_multi_thread_eigen=false` no longer
#: does: one JAX worker kept 1.84 cores busy with it set).
ONE_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                  "TF_NUM_INTEROP_THREADS", "PJRT_NPROC")
_DATASET = None  # in a worker process: its copy of the dataset


def worker_start_method():
    """How worker processes start: "forkserver" where the platform has it, else "spawn"; never "fork".

    A forkserver's workers are forked from Python's one server of the process, not from the training process.
    This module never adds to its preload list (which would load Keras and the backend into the server that
    Dask's nannies and every later forkserver process of the training process fork from too; Python preloads
    only the main script's module); each worker imports the dataset's modules itself, the workers in parallel.
    """
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def one_compute_thread():
    """Limit this process to one thread of compute: BLAS/OpenMP variables, TensorFlow's intra- and inter-op
    pools, the thread pools of JAX's CPU client (`PJRT_NPROC`, XLA's Eigen pool), torch's intra- and inter-op
    threads. Call before the backend runs an op."""
    for name in ONE_THREAD_ENV:
        os.environ[name] = "1"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    backend = keras.backend.backend()
    with contextlib.suppress(RuntimeError, ValueError):  # a runtime already started keeps its pools
        if backend == "torch":
            import torch

            torch.set_num_threads(1)
            torch.set_num_interop_threads(1)
        elif backend == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
    with contextlib.suppress(ImportError):  # NumPy's BLAS, loaded before the variables were set
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


def _init_worker(payload):
    """A worker process's initializer: one compute thread, then its copy of the dataset."""
    global _DATASET
    one_compute_thread()
    _DATASET = load_dataset(payload)


def load_dataset(payload):
    """The dataset `WorkerProcesses.start` pickled into `payload`, with a fresh copy of its augmentation layer
    (keyed for compiled programs by the config it came as)."""
    cls, state, config = pickle.loads(payload)
    state["augment"] = None
    if config is not None:
        from keras_medseg.data.augment import warp

        state["augment"] = keras.layers.deserialize(config)
        warp.program_config(state["augment"], config)
    dataset = cls.__new__(cls)
    dataset.__setstate__(state)
    return dataset


def _batch(epoch, index):
    """Batch `index` of `epoch`, made in a worker process."""
    _DATASET.epoch = epoch
    return _DATASET[index]


class LayerCopies:
    """Copies of an augmentation layer for worker threads: one per thread at once (a `keras.layers.serialize`
    round trip), or the layer itself, one thread at a time, when it cannot be copied."""

    def __init__(self, layer):
        self.layer = layer
        self.free = [] if layer is None else [layer]  # copies no thread is using
        self._lock = threading.Lock()
        self._one_at_a_time = threading.Lock()
        self._copyable = True

    @contextlib.contextmanager
    def take(self):
        """A copy of the layer no other thread is using (made when all are busy), given back on exit."""
        with self._lock:
            layer = self.free.pop() if self.free else None
        if layer is None and self._copyable:
            try:
                layer = keras.layers.deserialize(keras.layers.serialize(self.layer))
            except Exception:  # a custom layer without a config round trip: share the original, one at a time
                self._copyable = False
        if layer is None:
            with self._one_at_a_time:
                yield self.layer
            return
        try:
            yield layer
        finally:
            with self._lock:
                self.free.append(layer)


class WorkerProcesses:
    """The worker processes of one dataset (`start`), until `close` or the dataset is deleted."""

    def __init__(self, executor, augment, owner):
        self.executor = executor
        self.augment = augment  # the layer the processes copied
        self._finalizer = weakref.finalize(owner, executor.shutdown, wait=False, cancel_futures=True)

    @classmethod
    def ensure(cls, processes, dataset):
        """`processes` if they copied `dataset`'s current `augment` layer, else (after closing them) new ones."""
        if processes is not None and processes.augment is dataset.augment:
            return processes
        if processes is not None:
            processes.close()
        return cls.start(dataset)

    @classmethod
    def start(cls, dataset):
        """`dataset._workers` processes (the `workers` it was given), each with a copy of `dataset` (its
        `__getstate__`, without the memory cache) and of its `augment` layer; None, with a warning, when they do not
        pickle (threads then)."""
        from concurrent.futures import ProcessPoolExecutor

        state = dataset.__getstate__()
        state.update(_cache=collections.OrderedDict(), _cached_bytes=0, worker_processes=False, _workers=1)
        augment = state.pop("augment", None)
        try:  # the layer travels as its config (as the threads' copies): its seeds are reset per batch
            config = None if augment is None else keras.layers.serialize(augment)
            payload = pickle.dumps((type(dataset), state, config))
        except Exception as exc:
            warnings.warn(f"The workers are threads: worker processes need the dataset and its augmentation to "
                          f"pickle ({type(exc).__name__}: {exc}).", stacklevel=5)
            return None
        # no `set_forkserver_preload`: the server is one per process and shared (Dask's nannies fork from it); with
        # Keras and TensorFlow preloaded in it, a cohort's Dask workers started later in the same process forked
        # from a server running TensorFlow's thread pools (the likely cause of a test that stalled a minute in CI)
        context = multiprocessing.get_context(worker_start_method())
        executor = ProcessPoolExecutor(dataset._workers, mp_context=context, initializer=_init_worker,
                                       initargs=(payload,))
        return cls(executor, augment, dataset)

    @property
    def pids(self):
        """The process ids of the workers started so far."""
        return [p.pid for p in list(self.executor._processes.values())]

    def batch(self, epoch, index):
        """Batch `index` of `epoch`, made by a worker (this thread waits)."""
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self.executor.submit(_batch, epoch, index).result()
        except BrokenProcessPool as exc:
            raise RuntimeError(
                "A worker process of the VolumeDataset died (killed, out of memory, or it could not start: a "
                "script that trains must do so under `if __name__ == \"__main__\":`, Python's rule for processes "
                "it starts this way); `use_multiprocessing=False` makes the workers threads.") from exc

    def close(self):
        """Stop the processes (waits for the batches they are making); returns None."""
        self._finalizer.detach()
        self.executor.shutdown(wait=True, cancel_futures=True)


class WorkerPoolMixin:
    """`use_multiprocessing` for a `keras.utils.PyDataset` whose batches depend only on `(epoch, index)`: with
    it and `workers >= 2` (`worker_processes`), `WorkerProcesses` of its own make the batches, fed by Keras'
    enqueuer threads (Keras sees `use_multiprocessing=False` and forks nothing). The dataset's `__getitem__`
    hands the batch to `_pool()` when `worker_processes`; it has a `_lock`, an `epoch` and `augment`."""

    _processes = None

    @property
    def workers(self):
        """Keras' enqueuer threads: `workers`, or with worker processes twice as many (the processes' number is
        the `workers` given), so that each process has its next batch waiting while it hands one back (one
        thread per process left each idle for every batch's round trip: 2 processes at 1.50x one worker on
        TensorFlow with 9 ms patches)."""
        return 2 * self._workers if getattr(self, "worker_processes", False) else self._workers

    @workers.setter
    def workers(self, value):
        self._workers = value

    @property
    def use_multiprocessing(self):
        """False to Keras: its enqueuer runs threads, which hand batches to `worker_processes` and wait."""
        return False

    @use_multiprocessing.setter
    def use_multiprocessing(self, value):
        self.worker_processes = bool(value) and self._workers > 1

    def _pool(self):
        """The worker processes (started at the first batch; again when `augment` was replaced), or None."""
        with self._lock:
            self._processes = WorkerProcesses.ensure(self._processes, self)
            self.worker_processes = self._processes is not None
            return self._processes

    def close(self):
        """Stop the worker processes, if any (a later batch starts new ones)."""
        self._processes = self._processes and self._processes.close()
