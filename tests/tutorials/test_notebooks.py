"""Execute every `tutorials/*.ipynb` top to bottom in fast mode (`KERAS_MEDSEG_FAST=1`).

Each notebook runs with nbclient on the `python3` kernel of the running
interpreter (its folder goes first on PATH so the kernel is this venv's
Python), in a temporary working directory so figures and checkpoints do not
land in the repository. Check one notebook with
`pytest tests/tutorials -k 01_level_sets`.
"""

import glob
import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "tutorials", "*.ipynb")))
TIMEOUT = 600


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.splitext(os.path.basename(p))[0] for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_MEDSEG_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(path, as_version=4)
    assert nb.cells, f"{path} has no cells"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{path} is saved with outputs; clear them before committing"
    )
    client = nbclient.NotebookClient(
        nb, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()


def test_notebooks_are_colab_ready():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert "google.colab" in first.source and "pip" in first.source, (
            f"{os.path.basename(path)}: the first code cell must install keras-medseg when run in Colab"
        )
