"""Issue 27, items 1 and 8: `predict` never replaces an input, writes label maps atomically, and every file
follows the umask; history plots come from the whole log after a resume.

Real files and processes: NIfTI scans written with nibabel, a DICOM series with pydicom, `predict` through
the command line, a `predict` SIGKILLed in a subprocess half-way through writing a label map.
"""

import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap

import keras
import nibabel
import numpy as np
import pytest

from keras_medseg.cli import main
from keras_medseg.data.cases import find_scans
from keras_medseg.predict.scans import plan_outputs, predict_files
from keras_medseg.training.checkpointing import atomic_save_model
from tests.data.scan_factory import ball, write_dicom_series, write_nifti
from tests.test_scans import _threshold_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = {"intensity": {"preset": "none"}}


def _scan(path, seed=0):
    shape = (16, 16, 8)
    truth = ball(shape, (8, 7, 4), 4.0 + seed, (1.0, 1.0, 2.0))
    return write_nifti(path, truth.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "m.keras")
    _threshold_model(path, SPEC)
    return path


# --------------------------------------------------------------------------- never over an input


def _output_is_the_inputs_folder(tmp, monkeypatch):
    src = _scan(tmp / "ct.nii.gz")
    monkeypatch.chdir(tmp)
    return ["--input", "ct.nii.gz", "--output", "."], [src]


def _scan_folder_onto_itself(tmp, monkeypatch):
    (tmp / "scans").mkdir()
    srcs = [_scan(tmp / "scans" / f"{n}.nii.gz", i) for i, n in enumerate(("a", "b"))]
    return ["--input", str(tmp / "scans"), "--output", str(tmp / "scans")], srcs


def _hard_link_in_output(tmp, monkeypatch):
    (tmp / "in").mkdir()
    (tmp / "out").mkdir()
    src = _scan(tmp / "in" / "ct.nii.gz")
    os.link(src, tmp / "out" / "ct.nii.gz")  # the same file under the derived name
    return ["--input", str(tmp / "in"), "--output", str(tmp / "out")], [src]


def _symlink_in_output(tmp, monkeypatch):
    (tmp / "in").mkdir()
    (tmp / "out").mkdir()
    src = _scan(tmp / "in" / "ct.nii.gz")
    os.symlink(src, tmp / "out" / "ct.nii.gz")
    return ["--input", str(tmp / "in" / "ct.nii.gz"), "--output", str(tmp / "out")], [src]


@pytest.mark.parametrize("layout", [_output_is_the_inputs_folder, _scan_folder_onto_itself, _hard_link_in_output,
                                    _symlink_in_output], ids=["output-dot", "folder-onto-itself", "hard-link",
                                                              "symlink"])
def test_predict_never_replaces_an_input(layout, model_path, tmp_path, monkeypatch, capsys):
    argv, inputs = layout(tmp_path, monkeypatch)
    before = {p: _digest(p) for p in inputs}
    assert main(["predict", model_path, *argv, "--quiet"]) == 2
    err = _one_line(capsys)
    assert re.search(r"Refusing to write the label map of .*ct\.nii\.gz|Refusing to write the label map of .*a\.nii",
                     err), err
    assert "that file is an input scan" in err and "--output" in err
    assert {p: _digest(p) for p in inputs} == before  # nothing replaced, nothing predicted first


def test_colliding_names_are_refused_before_any_work(model_path, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    _scan(scans / "case.nii.gz")
    write_dicom_series(str(scans / "case"), np.full((16, 14, 4), 40.0))  # a DICOM series folder `case/`
    assert main(["predict", model_path, "--input", str(scans), "--output", str(tmp_path / "out"), "--quiet"]) == 2
    assert re.search(r"Two scan files with the same name stem 'case' in .*scans", _one_line(capsys))
    assert not (tmp_path / "out").exists()
    # names that differ only in case share one file on macOS/Windows: refused everywhere
    other = tmp_path / "mixed"
    other.mkdir()
    _scan(other / "Case.nii")
    _scan(other / "case.nii.gz", 1)
    with pytest.raises(ValueError, match=r"Case\.nii.*case\.nii\.gz.*differ only in letter case; rename one"):
        plan_outputs(find_scans(str(other)), str(tmp_path / "out2"), ".nii.gz")
    assert main(["predict", model_path, "--input", str(other), "--output", str(tmp_path / "out2"), "--quiet"]) == 2
    assert "differ only in letter case" in _one_line(capsys)
    assert not (tmp_path / "out2").exists()


def test_label_maps_follow_the_umask_and_a_failed_write_keeps_the_old_one(model_path, tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    _scan(tmp_path / "in" / "ct.nii.gz")
    out = tmp_path / "out" / "ct.nii.gz"
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(umask)
        try:
            predict_files(model_path, str(tmp_path / "in"), str(tmp_path / "out"), progress=False)
        finally:
            os.umask(old)
        assert os.stat(out).st_mode & 0o777 == mode
    before = _digest(out)

    def half_then_fail(img, path):  # nibabel writes half the file, then the disk fails
        with open(path, "wb") as f:
            f.write(b"\x00" * 100)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(nibabel, "save", half_then_fail)
    with pytest.raises(OSError, match="Input/output error"):
        predict_files(model_path, str(tmp_path / "in"), str(tmp_path / "out"), progress=False)
    assert _digest(out) == before  # the previous label map, whole
    assert os.listdir(tmp_path / "out") == ["ct.nii.gz"]  # no temporary left


_KILL = textwrap.dedent("""
    import os, signal, sys
    import nibabel
    original = nibabel.save
    calls = []
    def save(img, path):  # the second label map: half written when the process is killed
        calls.append(path)
        original(img, path)
        if len(calls) == 2:
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.truncate(size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    nibabel.save = save
    from keras_medseg.cli import main
    sys.exit(main(["predict", sys.argv[1], "--input", sys.argv[2], "--output", sys.argv[3], "--quiet"]))
""")


def test_sigkill_during_predict_leaves_no_truncated_label_map(model_path, tmp_path):
    scans, out = tmp_path / "scans", tmp_path / "out"
    scans.mkdir()
    for i, name in enumerate(("a", "b")):
        _scan(scans / f"{name}.nii.gz", i)
    script = tmp_path / "kill.py"
    script.write_text(_KILL)
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="numpy",
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script), model_path, str(scans), str(out)], env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = sorted(os.listdir(out))
    assert "b.nii.gz" not in left  # nothing under the final name of the label map being written
    assert nibabel.load(str(out / "a.nii.gz")).shape == (16, 16, 8)  # the finished one is whole
    temporaries = [f for f in left if f.startswith(".b.") and f.endswith(".tmp.nii.gz")]
    assert len(temporaries) == 1, left
    # the rerun writes both and removes the dead writer's temporary
    predict_files(model_path, str(scans), str(out), progress=False)
    assert sorted(os.listdir(out)) == ["a.nii.gz", "b.nii.gz"]
    assert np.asarray(nibabel.load(str(out / "b.nii.gz")).dataobj).any()


# --------------------------------------------------------------------------- records (item 8)


def test_best_keras_follows_the_umask(tmp_path):
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    old = os.umask(0o022)
    try:
        atomic_save_model(model, str(tmp_path / "best.keras"), preprocessing={"intensity": {"preset": "zscore"}})
        (tmp_path / "log.csv").write_text("epoch\n")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "best.keras").st_mode & 0o777 == 0o644  # was 0600 (a mkstemp temporary)
    assert os.stat(tmp_path / "best.keras").st_mode & 0o777 == os.stat(tmp_path / "log.csv").st_mode & 0o777


def test_history_plot_numbers_epochs_as_logged():
    """A resumed run's epochs keep their numbers (the whole-log plot after a real resume is checked in
    tests/reliability/test_faults.py::test_full_disk_during_train_then_rerun_finishes)."""
    from keras_medseg.plotting import history_plot
    from keras_medseg.training.runner import RunResult

    rows = [{"epoch": "2", "loss": "0.5", "val_loss": "0.7"}, {"epoch": "3", "loss": "0.25", "val_loss": "nan"}]
    logged = RunResult({}, rows, "best.keras", "log.csv", ".").logged_history()
    assert logged == {"epoch": [2, 3], "loss": [0.5, 0.25], "val_loss": [0.7, pytest.approx(np.nan, nan_ok=True)]}
    fig = history_plot({"unet": logged}, metrics=["loss"])
    assert [list(line.get_xdata()) for line in fig.axes[0].lines] == [[3, 4], [3, 4]]  # loss, val_loss
