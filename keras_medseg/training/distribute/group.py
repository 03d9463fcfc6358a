"""The process group of a training run: this process's rank, the engine behind it, and whether to launch.

A run over `N` processes is started in one of two ways:

* `processes=N` alone: the call starts `N` local processes (`launch`),
  like `torchrun --nproc-per-node N`, and each of them joins as one rank;
* `processes=N, coordinator="HOST:PORT", process_id=I`: this process joins
  as rank `I` (one such call per process, on every host). Process 0 runs on
  HOST and serves PORT. TensorFlow needs every process's own address:
  `coordinator="HOST0:PORT0,HOST1:PORT1,..."` (one per process, in rank
  order; JAX and torch use the first).

`process_group(...)` decides which and returns this process's
`ProcessGroup` (or None when the caller must launch); `current_group()` is
the group of this process afterwards (rank 0 of 1 when not distributed).
Before the engine starts, process 0 checks its port is free and holds a
roll call on it (`_rendezvous`): the others check in (at most `timeout`
seconds, `KERAS_MEDSEG_TIMEOUT`, default 1800), so a port in use, an
unreachable coordinator, a process that never comes or two with the same
rank end in one line on every process instead of an engine's stack trace
(JAX aborts a process whose peers do not come) or a hang.
"""

import contextlib
import errno
import os
import socket

from keras_medseg.training.distribute._errors import DistributedError
from keras_medseg.utils.validation import check_positive_int

__all__ = ["DEFAULT_TIMEOUT", "DistributedError", "ProcessGroup", "current_group", "parse_addresses",
           "process_group"]

ENV_RANK = "KERAS_MEDSEG_PROCESS_ID"
ENV_SIZE = "KERAS_MEDSEG_NUM_PROCESSES"
ENV_COORDINATOR = "KERAS_MEDSEG_COORDINATOR"
ENV_TIMEOUT = "KERAS_MEDSEG_TIMEOUT"
DEFAULT_TIMEOUT = 1800.0


class ProcessGroup:
    """One process of a training run over `size` processes (rank 0 of 1 when not distributed).

    Attributes:
        rank: int, this process's rank; rank 0 is the only one that writes files.
        size: int, the number of processes.
        addresses: tuple of "host:port" strings (empty when not distributed).
        engine: the backend's engine (`keras_medseg.training.distribute.engines`), None when not distributed.
    """

    def __init__(self, rank=0, size=1, addresses=(), engine=None):
        self.rank, self.size, self.addresses, self.engine = int(rank), int(size), tuple(addresses), engine

    def __repr__(self):
        engine = f", engine={self.engine.name!r}" if self.engine is not None else ""
        return f"ProcessGroup(rank={self.rank}, size={self.size}{engine})"

    @property
    def distributed(self):
        return self.size > 1

    @property
    def is_writer(self):
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    def barrier(self, name="barrier"):
        """Return once every process has reached this point (the engine's own barrier; nothing when alone)."""
        if self.engine is not None:
            self.engine.barrier(name)

    def mean(self, values):
        """The mean of a float vector over the processes (the vector itself when alone)."""
        import numpy as np

        return np.asarray(values, np.float64) if self.engine is None else self.engine.mean(values)

    def model_scope(self):
        """Context in which to build and compile a model trained by this group (the engine's scope)."""
        return contextlib.nullcontext() if self.engine is None else self.engine.model_scope()

    def fit_scope(self):
        """Context in which to call `fit` (JAX: the data-parallel distribution)."""
        return contextlib.nullcontext() if self.engine is None else self.engine.fit_scope()

    def fit_callbacks(self):
        """Callbacks the engine needs first in `fit`'s list (torch: gradient and log averaging)."""
        return [] if self.engine is None else self.engine.callbacks()

    def writer_callbacks(self, callbacks):
        """The run folder's callbacks (rank 0 writes, every rank restores), run in this process's local scope.

        JAX: outside the global distribution, so a tensor one of them makes (a save on rank 0 alone) is not
        put on every process; the restores, the same on every rank, stay collective-safe.
        """
        return list(callbacks) if self.engine is None else self.engine.writer_callbacks(callbacks)

    def wrap_dataset(self, dataset):
        """`(what fit takes, callbacks it needs)` for this process's batches."""
        return (dataset, []) if self.engine is None else self.engine.wrap_dataset(dataset)

    def local_scope(self):
        """Context in which this process alone loads or builds a model and predicts (JAX: outside the mesh)."""
        return contextlib.nullcontext() if self.engine is None else self.engine.local_scope()

    def local_model(self, model):
        """`model`, or a local copy with its weights, that predicts on this process alone (no collective)."""
        return model if self.engine is None else self.engine.local_model(model)


_CURRENT = [ProcessGroup()]


def current_group():
    """The `ProcessGroup` of this process (rank 0 of 1 unless it joined a run over several processes)."""
    return _CURRENT[0]


def _timeout():
    text = os.environ.get(ENV_TIMEOUT)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{ENV_TIMEOUT} must be a number of seconds > 0. Received: {ENV_TIMEOUT}={text!r}")
    return value


def parse_addresses(coordinator):
    """`"host:port[,host:port...]"` -> list of `(host, port)`.

    Raises:
        ValueError: an address without a port, or a port outside 1..65535 (named).
    """
    out = []
    for item in str(coordinator).split(","):
        host, sep, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"`coordinator` must look like HOST:PORT (port 1-65535), or HOST:PORT,HOST:PORT,... "
                             f"(one per process, for TensorFlow). Received: coordinator={coordinator!r}")
        out.append((host, int(port)))
    return out


def _check_port_free(host, port):
    """Refuse, in one line, a port this process must serve that is taken or not on this machine."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise DistributedError(f"Cannot resolve the address {host}:{port} ({exc.strerror}).") from None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DistributedError(f"Port {port} on {host} is in use: choose another port "
                                       f"(--coordinator {host}:PORT).") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise DistributedError(f"{host} is not an address of this machine: process 0 runs on the "
                                       f"coordinator host (--coordinator {host}:{port}).") from None
            raise


def _join(size, coordinator, rank):
    """Start the engine for rank `rank` of `size` and make it this process's group."""
    import keras

    from keras_medseg.training.distribute._rendezvous import check_in, connect, roll_call
    from keras_medseg.training.distribute.engines import start_engine

    addresses = parse_addresses(coordinator)
    tensorflow = keras.backend.backend() == "tensorflow"
    if tensorflow and len(addresses) != size:
        raise ValueError(f"TensorFlow's MultiWorkerMirroredStrategy needs every process's address: "
                         f"--coordinator HOST0:PORT0,HOST1:PORT1,... ({size} addresses, in rank order). "
                         f"Received: coordinator={coordinator!r}")
    timeout = _timeout()
    own = addresses[rank] if tensorflow else addresses[0]
    if tensorflow or rank == 0:
        _check_port_free(*own)
    if rank == 0:
        roll_call(*addresses[0], size, timeout)  # every process checked in (one line naming those that did not)
    else:
        check_in(*addresses[0], rank, size, timeout)
        connect(*addresses[0], timeout).close()  # process 0's engine serves the port now
    engine = start_engine([f"{h}:{p}" for h, p in addresses], size, rank, timeout)
    _CURRENT[0] = ProcessGroup(rank, size, [f"{h}:{p}" for h, p in addresses], engine)
    return _CURRENT[0]


def process_group(processes=None, coordinator=None, process_id=None):
    """This process's group for a run of `processes` processes, or None when the caller must launch them.

    Args:
        processes: int or None, the number of processes of the run (None or 1: this process alone).
        coordinator: "HOST:PORT" of process 0 (TensorFlow: every process's "HOST:PORT", comma-separated),
            or None to start `processes` local processes.
        process_id: int, this process's rank in `[0, processes)`, with `coordinator`.

    Returns:
        `ProcessGroup` (joined, with its engine started, when `coordinator` is given or this process was
        launched as a rank), or None: `processes > 1` local processes are to be launched (`launch`).

    Raises:
        ValueError: inconsistent arguments (named).
        DistributedError: a port in use, an unreachable coordinator, a process that did not join within the
            timeout, two processes with one rank.
    """
    if processes is not None:
        processes = check_positive_int(processes, "processes")
    if (coordinator is None) != (process_id is None):
        raise ValueError("`coordinator` and `process_id` go together: each process of a run over several hosts "
                         "gets the coordinator's HOST:PORT and its own rank. "
                         f"Received: coordinator={coordinator!r}, process_id={process_id!r}")
    current = current_group()
    if current.distributed or ENV_RANK in os.environ:  # a launched rank (or joined already): run here
        if not current.distributed:
            current = _join(int(os.environ[ENV_SIZE]), os.environ[ENV_COORDINATOR], int(os.environ[ENV_RANK]))
        if processes not in (None, current.size):
            raise ValueError(f"This process is rank {current.rank} of a run over {current.size} processes. "
                             f"Received: processes={processes}")
        return current
    if coordinator is None:
        return current if processes in (None, 1) else None
    if processes is None:
        raise ValueError(f"`processes` (the number of processes of the run) is needed with `coordinator`. "
                         f"Received: processes=None, coordinator={coordinator!r}")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < processes:
        raise ValueError(f"`process_id` must be an int in [0, processes={processes}). "
                         f"Received: process_id={process_id!r}")
    parse_addresses(coordinator)
    if processes == 1:
        return current
    return _join(processes, coordinator, process_id)
