"""`keras-medseg train MODEL --data DIR --processes 2` end to end: the command, the real folder data path
(`resolve_source` -> `load_data` -> `ArrayBatches` split by rank), the saved model.

One test, on JAX (the cheapest backend to start; run from the TensorFlow phase as subprocesses, so it is not
marked backend_agnostic): a tiny UNet on 10 PNG images of 16x16 (8 training, 2 validation, global batch 4,
2 epochs) is trained by the real command line with `--processes 2` and, at the same time, with
`--processes 1`. It checks what a user relies on: exit status 0 and one report; one run folder written by
rank 0 alone (an audit hook in every process records what it writes there), holding the best checkpoint, a
`log.csv` of 2 epochs and no temporary file; a model that loads and predicts; the same losses per epoch as
one process with the same global batch (relative 1e-5: float32 sums in another order).

Resuming a run over two processes (a rank killed mid-epoch, the same call again) is tested on every backend
with a toy job in `test_processes.py`; a rerun of this command would cost another 25 CPU s.
"""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.io

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300

# Loaded first by every Python process of a command (PYTHONPATH): appends each path it opens for writing,
# renames, removes or creates under AUDIT_FOLDER, with the process's rank, to AUDIT_LOG. Lines are written
# with os.write at once: the ranks end with os._exit, which runs no exit handler.
_AUDIT = '''
import os, sys

_folder = os.environ.get("AUDIT_FOLDER")
_log = os.environ.get("AUDIT_LOG")
_rank = os.environ.get("KERAS_MEDSEG_PROCESS_ID", "main")
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


def _write_folder(root, n=10, side=16):
    """`root/images/c<i>.png` + `root/masks/c<i>.png`: noise images, masks of their bright pixels (0/255)."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    for i in range(n):
        image = rng.integers(0, 256, size=(side, side), dtype=np.uint8)
        skimage.io.imsave(os.path.join(root, "images", f"c{i}.png"), image, check_contrast=False)
        skimage.io.imsave(os.path.join(root, "masks", f"c{i}.png"), ((image > 128) * 255).astype(np.uint8),
                          check_contrast=False)


def _start(tmp, data, out, *extra):
    """Start `keras-medseg train` on JAX (a tiny UNet, 2 epochs, global batch 4) into `out`."""
    hooks = os.path.join(tmp, "hooks")
    # XLA's cheapest optimisation level: the same losses, about 3 CPU s less per command (measured, 2 cores)
    xla = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
                    "--xla_llvm_disable_expensive_passes=true"]).strip()
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", XLA_FLAGS=xla,
               PYTHONPATH=os.pathsep.join([hooks, ROOT, os.environ.get("PYTHONPATH", "")]),
               AUDIT_FOLDER=os.path.realpath(out), AUDIT_LOG=os.path.join(tmp, f"audit-{os.path.basename(out)}.txt"))
    for name in ("KERAS_MEDSEG_PROCESS_ID", "KERAS_MEDSEG_NUM_PROCESSES", "KERAS_MEDSEG_COORDINATOR"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "keras_medseg", "train", "unet", "--data", data, "--arg", "filters=2",
         "--arg", "depth=1", "--epochs", "2", "--batch-size", "4", "--out", out, "--quiet", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp)


def _finish(proc):
    """`(stdout, stderr)` of a command that must end with status 0."""
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"`keras-medseg train` did not end within {TIMEOUT} s: {err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _log(out):
    with open(os.path.join(out, "log.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _audit(tmp, out):
    """`{rank: set of paths written}` under `out` (rank "main": the command's own process)."""
    written = {}
    path = os.path.join(tmp, f"audit-{os.path.basename(out)}.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                rank, _, rel = line.rstrip("\n").partition(" ")
                written.setdefault(rank, set()).add(rel)
    return written


def _files(out):
    return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)


def test_train_command_over_two_processes_writes_one_run_and_matches_one_process(tmp_path):
    tmp = str(tmp_path)
    os.makedirs(os.path.join(tmp, "hooks"))
    with open(os.path.join(tmp, "hooks", "sitecustomize.py"), "w") as f:
        f.write(_AUDIT)
    data = os.path.join(tmp, "data")
    _write_folder(data)
    two, one = os.path.join(tmp, "two"), os.path.join(tmp, "one")
    before = os.times()
    # both at once (the one-process run fills the cores while the two ranks start and wait for each other)
    runs = {"two": _start(tmp, data, two, "--processes", "2"), "one": _start(tmp, data, one, "--processes", "1")}
    stdout = {name: _finish(proc)[0] for name, proc in runs.items()}
    after = os.times()
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    print(f"CPU seconds of the two commands and their processes: {cpu:.1f}")
    # one report, by the launching command (rank 0's result), naming the run folder
    assert stdout["two"].count("Validation Dice/IoU of the best checkpoint (2 cases)") == 1, stdout["two"]
    assert stdout["two"].count(f"checkpoint  {two}") == 1, stdout["two"]

    # the run folder: rank 0 wrote it alone, no temporary file and no second copy of anything is left
    files = _files(two)
    assert {"best.keras", "log.csv", "predictions.png", "history.png"} <= set(files), files
    assert any(f.startswith("backup" + os.sep) for f in files), files
    assert not [f for f in files if ".tmp" in f or "rank" in f or f.endswith(("~", ".part"))], files
    written = _audit(tmp, two)
    assert set(written) == {"0"}, written  # neither rank 1 nor the launching command wrote there
    assert {"best.keras", "log.csv"} <= written["0"], written
    rows = _log(two)
    assert [int(r["epoch"]) for r in rows] == [0, 1]

    # the saved model loads (safe_mode) and predicts class scores of every pixel
    from keras_medseg.utils.model_io import load_model

    model = load_model(os.path.join(two, "best.keras"))
    image = skimage.io.imread(os.path.join(data, "images", "c0.png")).astype("float32")
    x = ((image - image.mean()) / image.std())[None, :, :, None]
    scores = np.asarray(model.predict(x, verbose=0))
    assert scores.shape[:3] == (1, 16, 16) and np.all(np.isfinite(scores))

    # one process, the same global batch: the same losses each epoch (the batches are drawn from the seed
    # and the epoch alone and split by rank; JAX computes the loss and gradients of the global batch)
    alone = _log(one)
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose([float(r[key]) for r in rows], [float(r[key]) for r in alone], rtol=1e-5,
                                   err_msg=key)
