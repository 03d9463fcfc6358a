"""Fault and bad-input suite (issue 17): every case ends in its documented handling or one clear line.

Table-driven like tests/test_bad_inputs.py, through the CLI (`cli.main`, exit
code 2 and exactly one stderr line naming the argument/file/array) and the API
(`pytest.raises(..., match=...)`). Faults: a full disk (a small tmpfs when this
machine lets the test mount one, else a fault injected at the free-space check
and at the write call), a truncated or foreign HDF5 store, SIGKILL at an epoch
boundary (between the epoch backup and the log row), a second writer on a
patch store; plus NaN/Inf inputs, models `train` cannot fit, and a start-up
that imports no backend for `--help`, `--version`, `list` and `info`.
"""

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_medseg import zoo
from keras_medseg.cli import main
from keras_medseg.commands import _catalog as catalog
from keras_medseg.data import load_data
from keras_medseg.data.slides import PatchStore
from keras_medseg.data.slides.hdf5_check import check_hdf5_file
from keras_medseg.inference import sliding_window
from keras_medseg.kernels.spectral import identify
from keras_medseg.training import segmentation, train
from keras_medseg.training.checkpointing import ResumableCSVLogger, atomic_save_model
from keras_medseg.training.segmentation import evaluate_model
from keras_medseg.utils import atomic_io
from keras_medseg.utils.errors import DiskFullError
from keras_medseg.utils.input_layout import check_model_input
from tests.testing.tiny_segmenter import tiny_segmenter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_ARGS = ["--arg", "filters=2", "--arg", "depth=1"]
QTIPS = ["--n-train", "8", "--n-val", "4", "--size", "16", "--batch-size", "8", "--quiet"]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("KERAS_MEDSEG_LAZY_IMPORT", None)
    env.update(extra)
    return env


def _store(path, n=20):
    rng = np.random.default_rng(0)
    with PatchStore(path, "w", patch_size=8, channels=3) as s:
        s.append(rng.integers(0, 255, (n, 8, 8, 3), dtype="uint8"), np.arange(n) % 2, slide_id="s01",
                 coords=np.zeros((n, 2), "i4"))
    return str(path)


def _truncated(tmp):
    full = _store(tmp / "full.h5")
    with open(full, "rb") as f:
        data = f.read()
    path = tmp / "cut.h5"
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _model(tmp, name="clf.keras"):
    inp = keras.Input((8, 8, 3))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    path = str(tmp / name)
    keras.Model(inp, out).save(path)
    return path


def _cut_model(tmp):
    data = open(_model(tmp, "whole.keras"), "rb").read()
    (tmp / "cut.keras").write_bytes(data[: len(data) // 2])
    return str(tmp / "cut.keras")


def _png(tmp):
    import skimage.io

    skimage.io.imsave(tmp / "slide.png", np.full((16, 16, 3), 200, "uint8"), check_contrast=False)
    return str(tmp / "slide.png")


def _npy(tmp):
    np.save(tmp / "img.npy", np.zeros((8, 8, 3), "float32"))
    return str(tmp / "img.npy")


def _nan_folder(tmp):
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp / "nan" / sub).mkdir(parents=True)
    for i in range(3):
        img = rng.standard_normal((16, 16)).astype("float32")
        if i == 1:
            img[3, 4] = np.nan
        np.save(tmp / "nan" / "images" / f"c{i}.npy", img)
        np.save(tmp / "nan" / "masks" / f"c{i}.npy", (img > 0).astype("uint8"))
    return str(tmp / "nan")


# --------------------------------------------------------------------------- CLI: one line, exit code 2

TRUNCATED = r"cut\.h5.*corrupt or truncated: \d+ bytes on disk"
CUT_MODEL = r"cut\.keras is corrupt or truncated"
CLI_CASES = [
    # (id, argv builder(tmp) -> list, regex the single stderr line must match)
    ("unknown-model", lambda t: ["list", "unte"], r"Did you mean 'unet'"),
    ("train-gan", lambda t: ["train", "cgan"], r"cgan is a GAN.*fit"),
    ("train-lse", lambda t: ["train", "lse"], r"lse has no training.*predict.*evaluate"),
    ("train-detector", lambda t: ["train", "fpn_detector"], r"detector.*boxes"),
    ("train-classifier-on-images", lambda t: ["train", "vgg16_classifier"], r"patch store"),
    ("train-segmenter-on-store", lambda t: ["train", "unet", "--data", "p.h5"], r"segmentation model.*patch store"),
    ("truncated-store", lambda t: ["patches", "info", _truncated(t)],
     r"cut\.h5.*corrupt or truncated: \d+ bytes on disk"),
    ("not-hdf5-store", lambda t: ["patches", "info", str(t / "x.h5")], r"x\.h5.*not an HDF5 file"),
    ("nan-training-image", lambda t: ["train", "unet", "--data", _nan_folder(t), "--out", str(t / "r"), "--quiet"],
     r"c1\.npy.* 1 NaN and 0 Inf .*index \(3, 4\)"),
    ("out-under-a-file", lambda t: ["train", "unet", *QTIPS, "--epochs", "1", "--out", str(t / "x.h5" / "run"),
                                    *TINY_ARGS], r"Not a directory.*x\.h5"),

    # a truncated store or model, from every command that opens one: fails fast, naming the file
    ("truncated-store-extract", lambda t: ["patches", "extract", _png(t), "--out", _truncated(t), "--size", "8",
                                           "--quiet"], TRUNCATED),
    ("truncated-store-merge", lambda t: ["patches", "merge", str(t / "m.h5"), _truncated(t), "--quiet"], TRUNCATED),
    ("truncated-store-train", lambda t: ["train", "vgg16_classifier", "--data", _truncated(t), "--out",
                                         str(t / "r"), "--quiet"], TRUNCATED),
    ("truncated-store-evaluate", lambda t: ["evaluate", _model(t), "--data", _truncated(t)], TRUNCATED),
    ("truncated-model-evaluate", lambda t: ["evaluate", _cut_model(t), "--data", _store(t / "s.h5")], CUT_MODEL),
    ("truncated-model-explain", lambda t: ["explain", _cut_model(t), _npy(t)], CUT_MODEL),
    ("truncated-model-predict", lambda t: ["predict", _cut_model(t), "--input", _png(t), "--output",
                                           str(t / "p")], CUT_MODEL),
    ("truncated-model-slide-predict", lambda t: ["slide", "predict", _cut_model(t), _png(t), "--out", str(t / "sp")],
     CUT_MODEL),
    # never overwrite a store silently
    ("merge-over-an-existing-store", lambda t: ["patches", "merge", _store(t / "keep.h5"), _store(t / "a.h5"),
                                                "--quiet"], r"`out` already exists.*keep\.h5"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_one_line(case, tmp_path, capsys):
    _, argv, pattern = case
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all")
    assert main(argv(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert err.startswith("keras-medseg ")

    assert re.search(pattern, err), err


def test_cli_second_writer_one_line(tmp_path, capsys):
    store = _store(tmp_path / "s.h5")
    import skimage.io

    skimage.io.imsave(tmp_path / "slide.png", np.zeros((16, 16, 3), "uint8"), check_contrast=False)
    with PatchStore(store, "a"):
        assert main(["patches", "extract", str(tmp_path / "slide.png"), "--out", store, "--size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "being written by another process" in err, err


def test_cli_debug_shows_the_traceback():
    with pytest.raises(ValueError, match="Did you mean 'unet'"):
        main(["--debug", "list", "unte"])


# --------------------------------------------------------------------------- API: the same faults, named errors


def _held_store(tmp):
    path = _store(tmp / "held.h5")
    writer = PatchStore(path, "a")
    try:
        PatchStore(path, "a")
    finally:
        writer.close()


def _disk_full_save(tmp):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    path = str(tmp / "m.keras")
    atomic_save_model(model, path)
    with open(path, "rb") as f:
        before = f.read()

    def enospc(*a, **k):
        raise OSError(28, "No space left on device")

    model.save = enospc
    try:
        atomic_save_model(model, path)
    finally:
        with open(path, "rb") as f:
            assert f.read() == before  # nothing lost
        assert [f for f in os.listdir(tmp) if ".tmp" in f] == []


def _merge_over_existing(tmp):
    from keras_medseg.data.slides import merge_stores

    keep = _store(tmp / "keep.h5", n=6)
    before = open(keep, "rb").read()
    try:
        merge_stores([_store(tmp / "a.h5")], keep, progress=False)
    finally:
        assert open(keep, "rb").read() == before  # nothing lost


def _nan_arrays(_):
    x = np.zeros((4, 8, 8, 1), "float32")
    x[2, 1, 1, 0] = np.inf
    load_data(((x, np.zeros((4, 8, 8), "int32")), (x[:2] + 1, np.zeros((2, 8, 8), "int32"))))


API_CASES = [
    ("truncated-store", lambda t: PatchStore(_truncated(t)), ValueError, r"cut\.h5.*truncated"),
    ("truncated-store-append", lambda t: PatchStore(_truncated(t), "a"), ValueError, r"cut\.h5.*truncated"),
    ("foreign-file", lambda t: check_hdf5_file(str(t / "x.h5"), "Store"), ValueError, r"x\.h5.*not an HDF5"),
    ("second-writer", _held_store, RuntimeError, r"held\.h5.*being written by another process"),
    ("disk-full-at-write", _disk_full_save, DiskFullError,
     r"No space left on device while writing .*m\.keras; nothing was lost"),
    ("merge-over-an-existing-store", _merge_over_existing, ValueError, r"`out` already exists.*keep\.h5"),
    ("nan-kernel", lambda t: identify(np.full((3, 3), np.nan)), ValueError, r"`kernel` has 9 NaN"),
    ("inf-training-array", _nan_arrays, ValueError, r"`x_train` .* 0 NaN and 1 Inf .*index \(2, 1, 1, 0\)"),
    ("train-route-gan", lambda t: (_ for _ in ()).throw(ValueError(catalog.training_route("pix2pix"))), ValueError,
     r"pix2pix is a GAN"),
]


_UNET = []


def _unet():
    if not _UNET:
        _UNET.append(zoo.build("unet", filters=2, depth=2))
    return _UNET[0]


API_CASES += [
    ("missing-batch-axis", lambda t: check_model_input(np.zeros((64, 64, 1)), _unet(), "x"), ValueError,
     r"x has shape \(64, 64, 1\) without a batch axis"),
    ("volume-to-2d-model", lambda t: check_model_input(np.zeros((1, 8, 64, 64, 1)), _unet(), "x"), ValueError,
     r"x has shape \(1, 8, 64, 64, 1\) \(5 axes\); this 2D model takes 4 axes"),
    ("channels-first", lambda t: check_model_input(np.zeros((2, 1, 64, 64)), _unet(), "x"), ValueError,
     r"looks channels-first.*np.moveaxis"),
    ("size-the-unet-cannot-take", lambda t: evaluate_model(_unet(), np.zeros((1, 66, 66, 1), "float32"),
                                                           np.zeros((1, 66, 66), "int32")), ValueError,
     r"evaluation images have|evaluation images has spatial size \(66, 66\).*nearest size it takes is \(68, 68\)"),
    ("sliding-window-patch", lambda t: sliding_window(_unet(), np.zeros((80, 80, 1), "float32"), (30, 30)),
     ValueError, r"sliding-window patch of size \(30, 30\) has spatial size \(30, 30\).*nearest size"),
]


def test_layout_check_accepts_a_good_batch():
    x = np.zeros((2, 64, 64, 1), "float32")
    assert check_model_input(x, _unet()) is x


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_named_error(case, tmp_path):
    _, call, exc, pattern = case
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(exc, match=pattern):
        call(tmp_path)


def test_catalog_matches_the_live_registry():
    assert catalog.list_models() == zoo.list()
    for name in zoo.list():
        live, static = zoo.describe(name), catalog.describe(name)
        assert tuple(live["spatial_dims"]) == static["spatial_dims"]
        assert list(live["arguments"]) == list(static["arguments"])
        for arg, default in live["arguments"].items():
            if not isinstance(static["arguments"][arg], catalog._Unparsed):
                assert static["arguments"][arg] == default, (name, arg)


def test_train_trains_what_it_lists():
    trainable = {n for n in zoo.list() if catalog.training_route(n) is None}
    assert {"unet", "imexnet", "resnet_seg", "lsn"} <= trainable
    assert not trainable & {"cgan", "pix2pix", "cyclegan", "lse", "fpn_detector", "vgg16_classifier"}
    assert catalog.training_route("vgg16_classifier", patch_store=True) is None


# --------------------------------------------------------------------------- full disk during training, then resume


def _epochs(log):
    with open(log) as f:
        return [(int(r["epoch"]), r["loss"]) for r in csv.DictReader(f)]


def _mount_tmpfs(path, size="4m"):
    if sys.platform != "linux" or shutil.which("mount") is None:
        return False
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(check=False, args=["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True)
    return r.returncode == 0


class _FillDiskAt(keras.callbacks.Callback):
    """At the start of epoch `epoch`, leave (almost) no free space: a filler file on a tmpfs, or an injected 0."""

    def __init__(self, epoch, folder, monkeypatch):
        super().__init__()
        self.epoch, self.folder, self.monkeypatch = epoch, folder, monkeypatch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            return
        if self.monkeypatch is None:  # real tmpfs: fill it
            free = shutil.disk_usage(self.folder).free
            with open(os.path.join(self.folder, "filler"), "wb") as f:
                f.write(b"\0" * max(0, free - 4096))
        else:
            self.monkeypatch.setattr(atomic_io.shutil, "disk_usage",
                                     lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 0))


@pytest.mark.parametrize("how", ["tmpfs", "injected"])
def test_full_disk_during_train_then_rerun_finishes(how, tmp_path, monkeypatch):
    out = str(tmp_path / "disk")
    mounted = False
    if how == "tmpfs":
        mounted = _mount_tmpfs(out)
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root on Linux); the injected case covers it")
    try:
        # the smallest segmenter (tests/testing/tiny_segmenter.py): the claim is about the run folder
        kw = {"n_train": 8, "n_val": 4, "size": 16, "batch_size": 8, "verbose": 0, "out_dir": out}
        fill = _FillDiskAt(1, out, None if mounted else monkeypatch)
        with pytest.raises(DiskFullError, match=r"No space left on device while writing .*nothing was lost; "
                                                r"free space and rerun to resume"):
            train(tiny_segmenter(), epochs=3, callbacks=[fill], **kw)
        first = _epochs(os.path.join(out, "log.csv"))
        assert [e for e, _ in first] == [0]
        keras.saving.load_model(os.path.join(out, "best.keras"), safe_mode=True)  # still loadable
        # free the space and rerun the same call
        if mounted:
            os.remove(os.path.join(out, "filler"))
        else:
            monkeypatch.undo()
        assert not os.path.exists(os.path.join(out, "history.png"))  # the first run died before its plots
        drawn = []
        plot = segmentation.history_plot
        monkeypatch.setattr(segmentation, "history_plot", lambda h, **k: drawn.append(h) or plot(h, **k))
        result = train(tiny_segmenter(), epochs=3, **kw)
        rows = _epochs(os.path.join(out, "log.csv"))
        assert [e for e, _ in rows] == [0, 1, 2]  # every epoch logged once
        assert rows[0] == first[0]  # epoch 0 neither re-trained nor rewritten
        assert len(result.history["loss"]) == 2
        # issue 27 item 8: history.png is drawn from the whole log, each epoch with its own number
        (history,) = drawn[0].values()
        assert history["epoch"] == [0, 1, 2] and history["loss"] == [float(loss) for _, loss in rows]
        assert os.path.isfile(os.path.join(out, "history.png"))
        keras.saving.load_model(os.path.join(out, "best.keras"), safe_mode=True)
        assert [f for f in os.listdir(out) if ".tmp" in f] == []
    finally:
        if mounted:
            subprocess.run(["umount", out], capture_output=True, check=False)


_ENOSPC_SCRIPT = textwrap.dedent("""
    import gc, os, sys
    from keras_medseg.utils import atomic_io  # imports no backend (KERAS_MEDSEG_LAZY_IMPORT=1, as the CLI)
    atomic_io.check_free_space = lambda path, estimate: None  # no pre-check: the write itself hits ENOSPC
    # the command line first (it starts the backend quietly, as `keras-medseg train` does) ...
    from keras_medseg.cli import main
    code = main(["train", "unet", "--n-train", "8", "--n-val", "4", "--size", "16", "--batch-size", "8", "--quiet",
                 "--epochs", "2", "--out", os.path.join(sys.argv[1], "run"), "--arg", "filters=2", "--arg",
                 "depth=1"])
    # ... then the API in the same process (one backend start-up for both; the command line's run folder leaves
    # ~80 KB of the 192 KB free, the 0.5 MB backup below still fails half-way)
    import keras
    from keras_medseg.training.checkpointing import CrashSafeBackup
    inp = keras.Input((64,))
    model = keras.Model(inp, keras.layers.Dense(2000)(inp))  # 0.5 MB of weights: HDF5 fails half-way
    model.compile("adam", "mse")
    backup = CrashSafeBackup(os.path.join(sys.argv[1], "backup"))
    backup.set_model(model)
    try:
        backup.on_epoch_end(0, {"loss": 1.0})
    except OSError as exc:
        print(exc)
    del backup, model
    gc.collect()  # h5py lets go of the failed file here: any report of it lands on stderr before the exit
    print(f"cli exit status {code}")
    sys.exit(0)
""")


@pytest.mark.slow
def test_enospc_inside_a_write_prints_one_line(tmp_path):
    """A write that hits ENOSPC half-way (no pre-check), from `keras-medseg train` and from the API's backup:
    one line, nothing left behind, and no HDF5 close tracebacks afterwards (h5py reports the failed flush again
    when it lets go of the file). Both in one process (one backend start-up): the command line's line is the
    only one on stderr, the API's error message goes to stdout."""
    out = str(tmp_path / "small")
    if not _mount_tmpfs(out, "192k"):
        pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
    try:
        script = tmp_path / "enospc.py"
        script.write_text(_ENOSPC_SCRIPT)
        env = _env(TF_CPP_MIN_LOG_LEVEL="3", KERAS_MEDSEG_LAZY_IMPORT="1")
        r = subprocess.run([sys.executable, str(script), out], env=env, capture_output=True, text=True, timeout=300,
                           check=False)
        assert r.returncode == 0 and "cli exit status 2" in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])
        # the command line: exit status 2 and one line
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr[-2000:]
        assert re.search(r"No space left on device while writing .*run.*nothing was lost", lines[0]), lines
        # the API: the error, no traceback, no "Exception ignored" from h5py, no half-written file
        assert re.search(r"No space left on device while writing .*backup", r.stdout), r.stdout[-2000:]
        assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr[-2000:]
        assert os.listdir(os.path.join(out, "backup")) == []
    finally:
        subprocess.run(["umount", out], capture_output=True, check=False)


# --------------------------------------------------------------------------- SIGKILL at an epoch boundary

_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from keras_medseg.training import checkpointing, train
    original = checkpointing.ResumableCSVLogger.on_epoch_end
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1 and sys.argv[2] == "before-row":   # epoch-end backup written, row not yet
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, epoch, logs)
        if epoch == 1 and sys.argv[2] == "after-row":
            os.kill(os.getpid(), signal.SIGKILL)
    checkpointing.ResumableCSVLogger.on_epoch_end = on_epoch_end
    from tests.testing.tiny_segmenter import tiny_segmenter
    train(tiny_segmenter(), epochs=3, out_dir=sys.argv[1], n_train=8, n_val=4, size=16, batch_size=8, verbose=0)
""")


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["before-row", "after-row"])
def test_sigkill_at_epoch_boundary_resumes_without_retraining(moment, tmp_path):
    out = str(tmp_path / "run")
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), out, moment], check=False, env=_env(TF_CPP_MIN_LOG_LEVEL="3"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    logged = _epochs(os.path.join(out, "log.csv"))
    assert [e for e, _ in logged] == ([0] if moment == "before-row" else [0, 1])
    result = train(tiny_segmenter(), epochs=3, out_dir=out, n_train=8, n_val=4, size=16, batch_size=8, verbose=0)
    rows = _epochs(os.path.join(out, "log.csv"))
    assert [e for e, _ in rows] == [0, 1, 2]
    assert rows[: len(logged)] == logged  # logged rows never rewritten
    assert len(result.history["loss"]) == 1  # epochs 0 and 1 were not re-trained


def test_csv_logger_restores_a_row_lost_between_backup_and_log(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n0,1.0\n")
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "epoch_metadata.json").write_text('{"epoch": 2, "batch": 0, "logs": {"loss": 0.9}}')
    cb = ResumableCSVLogger(str(log), backup_dir=str(backup))
    inp = keras.Input((2,))
    cb.set_model(keras.Model(inp, inp))
    cb.on_train_begin()
    cb.on_epoch_end(2, {"loss": 0.8})
    assert _epochs(str(log)) == [(0, "1.0"), (1, "0.9"), (2, "0.8")]


# --------------------------------------------------------------------------- start-up


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["list"], ["list", "unet"], ["info"]])
def test_light_commands_import_no_backend(argv):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "keras_medseg", *argv], env=_env(), check=False,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    assert not imported & {"keras", "tensorflow", "jax", "torch"}, sorted(imported & {"keras", "tensorflow"})
    assert "keras_medseg.cli" in imported


@pytest.mark.slow
def test_backend_commands_start_quietly():
    r = subprocess.run([sys.executable, "-m", "keras_medseg", "evaluate", "missing.keras"], check=False,
                       env=_env(TF_CPP_MIN_LOG_LEVEL="0"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.keras" in lines[0], r.stderr[-2000:]
    assert "cuda" not in r.stderr.lower() and "absl" not in r.stderr


def test_evaluate_warns_when_classes_differ(tmp_path):
    from keras_medseg.training import evaluate

    inp = keras.Input((16, 16, 1))
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp))
    path = str(tmp_path / "binary.keras")
    model.save(path)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 16, 16, 1)).astype("float32"), rng.integers(0, 4, (3, 16, 16)).astype("int32")
    with pytest.warns(UserWarning, match=r"predicts 2 classes \(one sigmoid channel\).*has 4: scoring label > 0 "
                                         r"as foreground against background in all 3 cases"):
        table, _ = evaluate(path, data=(x, y))
    assert len(table["classes"]) == 2
