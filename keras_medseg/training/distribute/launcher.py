"""Start `N` local processes of a training run and watch them, like `torchrun --nproc-per-node N`.

`launch(fn, *args, processes=N, **kwargs)` picks free ports on this host,
starts `N` Python processes (`keras_medseg.training.distribute.worker`) with
their rank in the environment (`KERAS_MEDSEG_PROCESS_ID`,
`KERAS_MEDSEG_NUM_PROCESSES`, `KERAS_MEDSEG_COORDINATOR`), one GPU each when
the host has at least `N` (`CUDA_VISIBLE_DEVICES`), and `cores // N` CPU
threads each unless the caller set `OMP_NUM_THREADS`. Every process joins
the backend's engine and runs `fn(*args, **kwargs)`; the value that rank 0
returns is returned.

A watchdog polls the processes: when one ends with a non-zero status (an
exception, a kill, an out-of-memory kill), the others are stopped at once
(SIGTERM, then SIGKILL after 5 s) and `DistributedError` says which process
ended how, in one line; nothing hangs on a dead peer. The processes die with
the launcher (Linux `PR_SET_PDEATHSIG`). Run folders are written by rank 0
alone, atomically, so rerunning the same call resumes from the last backup.
"""

import functools
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time

from keras_medseg.training.distribute.group import (
    ENV_COORDINATOR,
    ENV_RANK,
    ENV_SIZE,
    DistributedError,
    process_group,
)

__all__ = ["distributable", "launch"]

_POLL_SECONDS = 0.2
_GRACE_SECONDS = 5.0


def _free_ports(n, host="127.0.0.1"):
    """`n` distinct ports free on `host` now (the OS picks them; the engines bind them moments later)."""
    sockets, ports = [], []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


def _gpus():
    """The GPU ids this process may use: `CUDA_VISIBLE_DEVICES`, else what `nvidia-smi -L` lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def _die_with_parent():
    """In the child: be killed when the launcher dies (Linux), so no rank outlives a killed launcher."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _describe(code):
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"ended with exit status {code}"


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + _GRACE_SECONDS
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def distributable(fn):
    """Give a training function the `processes=`, `coordinator=`, `process_id=` arguments of a distributed run.

    The wrapped function joins (or, with `processes=N` alone, `launch`es) the
    run's processes (`keras_medseg.training.distribute.process_group`) and
    then runs `fn` in each of them, where `current_group()` is its rank;
    without those arguments it runs `fn` as before. `fn` must be a module
    level function whose arguments pickle (a zoo name, not a built model).

    Example:

    >>> @keras_medseg.training.distribute.distributable
    ... def my_training(data, epochs=5):
    ...     ...  # build in current_group().model_scope(), fit with keras_medseg.training.runner.fit
    >>> my_training("data/", processes=2)  # doctest: +SKIP
    """

    @functools.wraps(fn)
    def wrapper(*args, processes=None, coordinator=None, process_id=None, **kwargs):
        if process_group(processes, coordinator, process_id) is None:
            return launch(wrapper, *args, processes=processes, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def launch(fn, *args, processes, backend=None, **kwargs):
    """Run `fn(*args, **kwargs)` in `processes` local processes of one training run; return rank 0's value.

    Args:
        fn: an importable function (module level; it and its arguments are pickled to the processes), e.g.
            `keras_medseg.training.train`.
        *args, **kwargs: its arguments.
        processes: int >= 2, the number of processes.
        backend: the Keras backend of the processes, "jax", "tensorflow" or "torch" (default: this
            process's).

    Returns:
        What `fn` returned on rank 0.

    Raises:
        DistributedError: a process failed or was killed (the others are stopped; one line naming it).
        ValueError: `processes` < 2.

    Example:

    >>> result = keras_medseg.training.distribute.launch(keras_medseg.training.train, "unet", "qtips",
    ...                                                  epochs=2, out_dir="runs/u", processes=2)  # doctest: +SKIP
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 2:
        raise ValueError(f"`processes` must be an int >= 2 to launch. Received: processes={processes!r}")
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow", "torch"):
        raise ValueError(f"`backend` must be 'jax', 'tensorflow' or 'torch'. Received: backend={backend!r}")
    ports = _free_ports(processes if backend == "tensorflow" else 1)
    coordinator = ",".join(f"127.0.0.1:{p}" for p in ports)
    gpus = _gpus()
    threads = str(max(1, (os.cpu_count() or 1) // processes))
    with tempfile.TemporaryDirectory(prefix="keras_medseg_launch_") as work:
        payload = os.path.join(work, "payload.pkl")
        with open(payload, "wb") as f:
            pickle.dump((fn, args, kwargs), f)
        procs, started = [], time.monotonic()
        try:
            for rank in range(processes):
                env = dict(os.environ, **{ENV_RANK: str(rank), ENV_SIZE: str(processes), ENV_COORDINATOR: coordinator,
                                          "KERAS_BACKEND": backend, "LOCAL_RANK": str(rank),
                                          "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
                env.setdefault("OMP_NUM_THREADS", threads)
                if len(gpus) >= processes:
                    env["CUDA_VISIBLE_DEVICES"], env["LOCAL_RANK"] = gpus[rank], "0"
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "keras_medseg.training.distribute.worker", payload, work], env=env,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None))
            while True:
                codes = [p.poll() for p in procs]
                failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
                if failed:  # a kill is a cause, a peer's error seen in the same poll its consequence
                    rank, code = min(failed, key=lambda rc: (rc[1] > 0, rc[0]))
                    _stop(procs)
                    raise DistributedError(_failure(rank, code, processes, time.monotonic() - started, work))
                if all(c == 0 for c in codes):
                    break
                time.sleep(_POLL_SECONDS)
        except BaseException:
            _stop(procs)
            raise
        result = os.path.join(work, "result.pkl")
        if not os.path.exists(result):
            raise DistributedError(f"Process 0 of {processes} ended without a result (see its output above).")
        with open(result, "rb") as f:
            return pickle.load(f)


def _failure(rank, code, processes, seconds, work):
    """The one line that says which process ended how, and what to do."""
    reason = ""
    error = os.path.join(work, f"error{rank}.txt")
    if os.path.exists(error):
        with open(error) as f:
            reason = ": " + f.read().strip()
    others = "the other process was" if processes == 2 else f"the other {processes - 1} processes were"
    return (f"Process {rank} of {processes} {_describe(code)} after {seconds:.0f} s{reason}; {others} stopped. "
            f"Rerun the same command to resume from the last backup.")
