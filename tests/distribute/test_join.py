"""A run over several hosts, started as a user does on each of them: `keras-medseg train ... --processes 2
--coordinator HOST:PORT --process-id I`, one command per process (here two on localhost, on a port found
by binding port 0), and the ways such a run cannot start.

The join test (JAX, the cheapest backend to start; slow: three JAX commands, about 45 CPU s on 2 cores) checks
that the two commands join and train, that only process 0 wrote the run folder (an audit hook in each
process records what it writes there) and reports, and that the losses of each epoch equal those of one
process with the same global batch (relative 1e-5: float32 sums in another order), as the launched
`--processes 2` run of `test_train_processes.py` does.

The faults: a coordinator port in use, a coordinator that nobody serves and a process 1 that never comes each
end the command with one line and exit status 2 after the timeout (`KERAS_MEDSEG_TIMEOUT`), not in an engine's
stack trace (JAX aborts a process whose peers do not come) or a hang: the three through the command line's
`main` in this process (they fail before any engine starts), the last also as a JAX command of its own; the
roll call that decides it (`keras_medseg.training.distribute._rendezvous`) is checked without an engine too.
Every subprocess has a timeout, so nothing here can hang the suite.
"""

import concurrent.futures
import os
import socket
import time

import pytest

from keras_medseg.training.distribute import DistributedError
from keras_medseg.training.distribute._rendezvous import check_in, roll_call
from tests.distribute import _cli

FAULT_TIMEOUT = 120  # seconds a failing command may take at most (it fails after 2-3 s of waiting)


@pytest.mark.slow
def test_two_commands_started_by_hand_join_train_and_match_one_process(tmp_path):
    tmp = str(tmp_path)
    data = _cli.setup(tmp)
    run, one = os.path.join(tmp, "run"), os.path.join(tmp, "one")
    join = ["--processes", "2", "--coordinator", f"127.0.0.1:{_cli.free_port()}", "--process-id"]
    before = os.times()
    # process 1 first (it waits for process 0), as on another host; the one-process run at the same time
    procs = {"1": _cli.start(tmp, data, run, *join, "1", env={"AUDIT_RANK": "1"}),
             "0": _cli.start(tmp, data, run, *join, "0", env={"AUDIT_RANK": "0"}),
             "one": _cli.start(tmp, data, one, "--processes", "1")}
    stdout = {name: _cli.finish(proc)[0] for name, proc in procs.items()}
    after = os.times()
    print(f"CPU seconds of the three commands: "
          f"{after.children_user + after.children_system - before.children_user - before.children_system:.1f}")
    # process 0 reports; process 1 trains and says nothing
    assert stdout["0"].count("Validation Dice/IoU of the best checkpoint (2 cases)") == 1, stdout["0"]
    assert stdout["0"].count(f"checkpoint  {run}") == 1, stdout["0"]
    assert "Validation" not in stdout["1"] and "checkpoint" not in stdout["1"], stdout["1"]
    # one run folder, written by process 0 alone, and the losses of one process with the same global batch
    rows = _cli.check_run_folder(tmp, run, writer="0")
    _cli.assert_same_losses(rows, _cli.read_log(one))


def test_commands_that_cannot_join_end_in_one_line(tmp_path, monkeypatch, capsys):
    """In this process (the command line's `main`; nothing starts an engine): a coordinator port in use, a
    coordinator nobody serves, a process 1 that never comes. Two addresses: TensorFlow needs each process's."""
    from keras_medseg.cli import main
    from tests.distribute._cli import write_folder

    data = str(tmp_path / "data")
    write_folder(data, n=4)

    def error(*args):
        code = main(["train", "unet", "--data", data, "--epochs", "1", "--batch-size", "2", "--quiet",
                     "--processes", "2", "--out", str(tmp_path / "run"), *args])
        err = capsys.readouterr().err
        assert code == 2 and err.count("keras-medseg train: error: ") == 1, err
        return err.split("keras-medseg train: error: ", 1)[1].strip()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port, other = taken.getsockname()[1], _cli.free_port()
        line = error("--coordinator", f"127.0.0.1:{port},127.0.0.1:{other}", "--process-id", "0")
        assert line.startswith(f"Port {port} on 127.0.0.1 is in use: choose another port"), line
    nobody, own = _cli.free_port(), _cli.free_port()
    monkeypatch.setenv("KERAS_MEDSEG_TIMEOUT", "0.5")
    line = error("--coordinator", f"127.0.0.1:{nobody},127.0.0.1:{own}", "--process-id", "1")
    assert line.startswith(f"Could not reach the coordinator 127.0.0.1:{nobody} within 0.5 s"), line
    line = error("--coordinator", f"127.0.0.1:{nobody},127.0.0.1:{own}", "--process-id", "0")
    assert line.startswith(f"Process 1 of 2 did not join 127.0.0.1:{nobody} within 0.5 s: start each with "
                           f"--coordinator 127.0.0.1:{nobody} --process-id I --processes 2"), line
    assert not os.path.exists(tmp_path / "run")  # nothing was written: the run never started


def test_process_0_alone_ends_in_one_line_not_in_an_engine_abort(tmp_path):
    """The command as a user runs it on JAX, whose `jax.distributed.initialize` would abort process 0 with a
    C++ stack trace when process 1 does not come: the roll call ends it with one line and status 2 first."""
    tmp = str(tmp_path)
    data = _cli.setup(tmp)
    port, alone = _cli.free_port(), os.path.join(tmp, "alone")
    proc = _cli.start(tmp, data, alone, "--processes", "2", "--coordinator", f"127.0.0.1:{port}",
                      "--process-id", "0", env={"KERAS_MEDSEG_TIMEOUT": "3"})
    code, _, err = _cli.communicate(proc, timeout=FAULT_TIMEOUT)
    lines = [ln for ln in err.splitlines() if "keras-medseg train: error:" in ln]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and "Check failure" not in err, err[-3000:]
    assert lines[0].endswith(f"error: Process 1 of 2 did not join 127.0.0.1:{port} within 3 s: start each with "
                             f"--coordinator 127.0.0.1:{port} --process-id I --processes 2, and check that the "
                             f"address is reachable from its host (firewall)."), lines[0]
    assert not os.path.exists(alone)


def _wait_done(futures, n, seconds=30):
    """Wait until `n` of `futures` are done (a rank that is refused answers at once)."""
    deadline = time.monotonic() + seconds
    while sum(f.done() for f in futures) < n:
        assert time.monotonic() < deadline, "the roll call did not answer"
        time.sleep(0.05)


def test_the_roll_call_lets_every_rank_go_and_refuses_or_names_the_wrong_ones():
    port = _cli.free_port()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        zero = pool.submit(roll_call, "127.0.0.1", port, 3, 30)
        ones = [pool.submit(check_in, "127.0.0.1", port, 1, 3, 30) for _ in range(2)]  # two with rank 1
        _wait_done(ones, 1)  # the second to arrive is refused
        refused = [f for f in ones if f.done()][0]
        with pytest.raises(DistributedError, match=r"^Process 0 at 127.0.0.1:\d+ refused this process: another "
                                                   r"process joined as --process-id 1 already"):
            refused.result()
        with pytest.raises(DistributedError, match=r"refused this process: process 2 was started for 4 "
                                                   r"processes, process 0 for 3: give every process the same"):
            check_in("127.0.0.1", port, 2, 4, 30)
        check_in("127.0.0.1", port, 2, 3, 30)  # the last rank: everybody goes
        assert zero.result(timeout=30) is None and [f for f in ones if f is not refused][0].result(30) is None

    # process 1 never comes: process 0 names it, the process that did come hears that the run did not start
    port = _cli.free_port()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        zero = pool.submit(roll_call, "127.0.0.1", port, 3, 1.5)
        two = pool.submit(check_in, "127.0.0.1", port, 2, 3, 30)
        with pytest.raises(DistributedError, match=rf"^Process 1 of 3 did not join 127.0.0.1:{port} within 1.5 s"):
            zero.result(timeout=30)
        with pytest.raises(DistributedError, match=rf"^Process 0 at 127.0.0.1:{port} stopped before every "
                                                   r"process had joined"):
            two.result(timeout=30)
    with pytest.raises(DistributedError, match=rf"^Could not reach the coordinator 127.0.0.1:{port} within 0.5 s"):
        check_in("127.0.0.1", port, 1, 2, 0.5)
