"""The roll call before a run's engine starts: process 0 waits until every other process has checked in.

The engines wait for their peers inside native code that ends a process
badly when one never comes: `jax.distributed.initialize` aborts the process
(SIGABRT and a C++ stack trace after `initialization_timeout`), torch and
TensorFlow wait in their own loops. So before the engine starts, process 0
serves the coordinator's port itself for a moment: each other process
connects (retrying until process 0 is there), says which rank of how many it
is, and waits for process 0's answer. When every rank has checked in,
process 0 closes the port, answers "go", and every process starts its engine
(process 0's on the same port). Whatever goes wrong before that ends in one
line on every process that is there, after at most `timeout` seconds:

* a process that never comes: process 0 names the missing ranks;
* two processes with the same `--process-id`, or a different number of
  processes: the late one is refused, naming both;
* process 0 that is not there: the others name the address they tried;
* process 0 that ends while the others wait: they say so.

The roll call is plain TCP (one line each way); the others close their
connection first, so process 0's port is left free of `TIME_WAIT` sockets
for the engine to bind.
"""

import socket
import time

__all__ = ["check_in", "connect", "roll_call"]

_GREETING = "keras_medseg join"
_LINE_SECONDS = 5.0


def _read_line(sock, limit=256):
    """One line from `sock` (without the newline), or "" when the peer closed; `socket.timeout` passes up."""
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = sock.recv(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def _listen(host, port):
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the engine binds the port right after
    try:
        listener.bind((host, port))
        listener.listen(64)
    except OSError:
        listener.close()
        raise
    return listener


def _ranks(ranks):
    return ", ".join(str(r) for r in ranks)


def roll_call(host, port, size, timeout):
    """Process 0: serve `host:port` until processes `1 .. size - 1` have checked in, then let them go.

    Args:
        host, port: the coordinator's address (this machine's).
        size: int >= 2, the number of processes of the run.
        timeout: seconds to wait for every process.

    Raises:
        DistributedError: a process did not check in within `timeout` seconds (the missing ranks named).
        OSError: the port cannot be served (`process_group` checked it is free just before).
    """
    from keras_medseg.training.distribute._errors import DistributedError

    deadline = time.monotonic() + timeout
    waiting = {}  # rank -> connection
    listener = _listen(host, port)
    try:
        listener.settimeout(0.25)
        while len(waiting) < size - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [r for r in range(1, size) if r not in waiting]
                label = "Process" if len(missing) == 1 else "Processes"
                raise DistributedError(
                    f"{label} {_ranks(missing)} of {size} did not join {host}:{port} within {timeout:g} s: start "
                    f"each with --coordinator {host}:{port} --process-id I --processes {size}, and check that "
                    f"the address is reachable from its host (firewall).")
            try:
                conn, _ = listener.accept()
            except (socket.timeout, BlockingIOError):
                continue
            conn.settimeout(min(_LINE_SECONDS, max(left, 0.1)))
            try:
                words = _read_line(conn).split()
            except OSError:
                conn.close()
                continue
            reply = _judge(words, size, waiting)
            if reply is None:
                waiting[int(words[2])] = conn
                continue
            if reply:
                try:
                    conn.sendall(f"refused {reply}\n".encode())
                except OSError:
                    pass
            conn.close()
        listener.close()  # before "go": what the others reach next on this port is the engine
        for conn in waiting.values():
            conn.settimeout(_LINE_SECONDS)
            try:
                conn.sendall(b"go\n")
                _read_line(conn)  # until they close: the closing side keeps the TIME_WAIT, not this port
            except OSError:
                pass
    finally:
        listener.close()
        for conn in waiting.values():
            conn.close()


def _judge(words, size, waiting):
    """None: a rank checked in; "": not one of ours (dropped); else the reason it is refused."""
    if len(words) != 4 or " ".join(words[:2]) != _GREETING or not (words[2].isdigit() and words[3].isdigit()):
        return ""
    rank, their_size = int(words[2]), int(words[3])
    if their_size != size:
        return (f"process {rank} was started for {their_size} processes, process 0 for {size}: give every "
                f"process the same --processes")
    if not 0 < rank < size:
        return f"--process-id {rank} is not in [1, {size})"
    if rank in waiting:
        return f"another process joined as --process-id {rank} already: give each process its own rank"
    return None


def check_in(host, port, rank, size, timeout):
    """Process `rank` > 0: check in with process 0 at `host:port` and return once every process has.

    Args:
        host, port: the coordinator's address.
        rank: int in `[1, size)`, this process's rank.
        size: int, the number of processes of the run.
        timeout: seconds to wait for process 0 and then for the others.

    Raises:
        DistributedError: process 0 unreachable within `timeout` seconds, or it refused this process (the
            reason named), or it ended before every process had checked in.
    """
    from keras_medseg.training.distribute._errors import DistributedError

    deadline = time.monotonic() + timeout
    sock = connect(host, port, timeout)
    with sock:
        try:
            sock.sendall(f"{_GREETING} {rank} {size}\n".encode())
            sock.settimeout(max(_LINE_SECONDS, deadline - time.monotonic() + _LINE_SECONDS))
            answer = _read_line(sock, limit=1024)
        except socket.timeout:
            raise DistributedError(f"Not every process joined process 0 at {host}:{port} within {timeout:g} s: "
                                   f"start the missing ones (process 0 names them).") from None
        except OSError:
            answer = ""
    if answer == "go":
        return
    if answer.startswith("refused "):
        raise DistributedError(f"Process 0 at {host}:{port} refused this process: {answer[len('refused '):]}.")
    raise DistributedError(f"Process 0 at {host}:{port} stopped before every process had joined (see its "
                           f"output): the run did not start.")


def connect(host, port, timeout):
    """A socket connected to `host:port`, retried every 0.25 s for up to `timeout` seconds.

    Raises:
        DistributedError: nothing accepted a connection in time (one line: start process 0 there, check the
            address and the firewall).
    """
    from keras_medseg.training.distribute._errors import DistributedError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        except OSError:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"Could not reach the coordinator {host}:{port} within {timeout:g} s: start process 0 "
                    f"there (--process-id 0), check the address and that the firewall lets the port through."
                ) from None
            time.sleep(0.25)
