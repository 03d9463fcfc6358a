"""Helpers of the tests that run `keras-medseg train` over several processes as a user does (subprocesses).

Used by `test_train_processes.py` (`--processes 2`: the command launches its ranks) and `test_join.py` (each
rank started by hand with `--coordinator HOST:PORT --process-id I`, as on several hosts). Every command runs
on JAX's CPU backend (the cheapest to start) with an audit hook that records, per rank, every path it writes
under the run folder, and ends within `TIMEOUT` seconds or is killed.
"""

import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import skimage.io

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300

# Loaded first by every Python process of a command (PYTHONPATH): appends each path it opens for writing,
# renames, removes or creates under AUDIT_FOLDER, with the process's rank (AUDIT_RANK when the test names it,
# else the rank a launcher gave it), to AUDIT_LOG. Lines are written with os.write at once: the ranks end
# with os._exit, which runs no exit handler.
_AUDIT = '''
import os, sys

_folder = os.environ.get("AUDIT_FOLDER")
_log = os.environ.get("AUDIT_LOG")
_rank = os.environ.get("AUDIT_RANK") or os.environ.get("KERAS_MEDSEG_PROCESS_ID", "main")
_busy = []
_writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _hook(event, args):
    if _busy or not _folder:
        return
    if event == "open":
        path, mode, flags = args
        if not (isinstance(mode, str) and set(mode) & set("wax+")) and not (flags or 0) & _writes:
            return
        paths = [path]
    elif event in ("os.rename", "os.replace", "os.remove", "os.mkdir", "shutil.rmtree"):
        paths = list(args[:2]) if event in ("os.rename", "os.replace") else [args[0]]
    else:
        return
    for p in paths:
        if isinstance(p, (str, bytes, os.PathLike)):
            p = os.path.realpath(os.fsdecode(p))
            if p.startswith(_folder + os.sep):
                _busy.append(1)
                try:
                    fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                    os.write(fd, f"{_rank} {os.path.relpath(p, _folder)}\\n".encode())
                    os.close(fd)
                finally:
                    _busy.pop()


if _folder and _log:
    sys.addaudithook(_hook)
'''


def setup(tmp):
    """Write the audit hook and a data folder under `tmp`; return the data folder."""
    os.makedirs(os.path.join(tmp, "hooks"))
    with open(os.path.join(tmp, "hooks", "sitecustomize.py"), "w") as f:
        f.write(_AUDIT)
    data = os.path.join(tmp, "data")
    write_folder(data)
    return data


def write_folder(root, n=10, side=16):
    """`root/images/c<i>.png` + `root/masks/c<i>.png`: noise images, masks of their bright pixels (0/255)."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    for i in range(n):
        image = rng.integers(0, 256, size=(side, side), dtype=np.uint8)
        skimage.io.imsave(os.path.join(root, "images", f"c{i}.png"), image, check_contrast=False)
        skimage.io.imsave(os.path.join(root, "masks", f"c{i}.png"), ((image > 128) * 255).astype(np.uint8),
                          check_contrast=False)


def free_port(host="127.0.0.1"):
    """A port the OS says is free on `host` now (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start(tmp, data, out, *extra, env=None):
    """Start `keras-medseg train` on JAX (a tiny UNet, 2 epochs, global batch 4) into `out`.

    `env`: extra environment variables (e.g. `AUDIT_RANK`, `KERAS_MEDSEG_TIMEOUT`).
    """
    hooks = os.path.join(tmp, "hooks")
    # XLA's cheapest optimisation level: the same losses, about 3 CPU s less per command (measured, 2 cores)
    xla = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
                    "--xla_llvm_disable_expensive_passes=true"]).strip()
    full = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS=xla,
                PYTHONPATH=os.pathsep.join([hooks, ROOT, os.environ.get("PYTHONPATH", "")]),
                AUDIT_FOLDER=os.path.realpath(out), AUDIT_LOG=audit_log(tmp, out))
    for name in ("KERAS_MEDSEG_PROCESS_ID", "KERAS_MEDSEG_NUM_PROCESSES", "KERAS_MEDSEG_COORDINATOR",
                 "KERAS_MEDSEG_TIMEOUT", "AUDIT_RANK"):
        full.pop(name, None)
    full.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "keras_medseg", "train", "unet", "--data", data, "--arg", "filters=2",
         "--arg", "depth=1", "--epochs", "2", "--batch-size", "4", "--out", out, "--quiet", *extra],
        env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp)


def communicate(proc, timeout=TIMEOUT):
    """`(status, stdout, stderr)` of a command, killed (and the test failed) after `timeout` seconds."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"`keras-medseg train` did not end within {timeout} s: {err[-3000:]}")
    return proc.returncode, out, err


def finish(proc):
    """`(stdout, stderr)` of a command that must end with status 0."""
    code, out, err = communicate(proc)
    assert code == 0, err[-3000:]
    return out, err


def read_log(out):
    with open(os.path.join(out, "log.csv"), newline="") as f:
        return list(csv.DictReader(f))


def audit_log(tmp, out):
    return os.path.join(tmp, f"audit-{os.path.basename(out)}.txt")


def audit(tmp, out):
    """`{rank: set of paths written}` under `out` (rank "main": the command's own process)."""
    written = {}
    path = audit_log(tmp, out)
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                rank, _, rel = line.rstrip("\n").partition(" ")
                written.setdefault(rank, set()).add(rel)
    return written


def files(out):
    return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)


def check_run_folder(tmp, out, writer="0"):
    """The run folder of 2 epochs: written by `writer` alone, no temporary file left; returns `log.csv`'s rows."""
    names = files(out)
    assert {"best.keras", "log.csv", "predictions.png", "history.png"} <= set(names), names
    assert any(f.startswith("backup" + os.sep) for f in names), names
    assert not [f for f in names if ".tmp" in f or "rank" in f or f.endswith(("~", ".part"))], names
    written = audit(tmp, out)
    assert set(written) == {writer}, written  # no other rank (nor a launching command) wrote there
    assert {"best.keras", "log.csv"} <= written[writer], written
    rows = read_log(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    return rows


def assert_same_losses(rows, alone, rtol=1e-5):
    """The losses of each epoch of a run over processes equal a 1-process run's (float32 sums in another order)."""
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose([float(r[key]) for r in rows], [float(r[key]) for r in alone], rtol=rtol,
                                   err_msg=key)
