"""The tutorial notebooks: every `tutorials/[0-9]*.ipynb` runs top to bottom in fast mode and opens in Colab.

Each notebook runs with nbclient on the `python3` kernel of the running
interpreter (its folder goes first on PATH so the kernel is this venv's
Python), in a temporary working directory so figures and checkpoints do not
land in the repository. Check one notebook with
`pytest tests/tutorials -k 01_level_sets`.

The fast checks (no execution) ask for what makes a notebook usable from
GitHub: the "Open in Colab" badge in its first cell and in the README, an
install cell that installs the repository's source from its git URL (the
package is not published yet) with a fallback to the checkout, and a current
executed copy with outputs in `tutorials/executed/`, made at the notebook's
full settings and saying which command made it (rebuilt by
`python scripts/execute_tutorials.py --full --only NN`).
"""

import importlib.util
import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "execute_tutorials", os.path.join(ROOT, "scripts", "execute_tutorials.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


execute_tutorials = _load_script()
NOTEBOOKS = execute_tutorials.notebooks()
IDS = [os.path.splitext(os.path.basename(p))[0] for p in NOTEBOOKS]
TIMEOUT = 600


def _code(nb):
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_tutorials_are_found():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("KERAS_MEDSEG_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(path, as_version=4)
    assert nb.cells, f"{path} has no cells"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{path} is saved with outputs; clear them (the copy with outputs goes to tutorials/executed/)"
    )
    client = nbclient.NotebookClient(
        nb, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_opens_in_colab(path):
    name = os.path.basename(path)
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    badge = execute_tutorials.colab_badge(name)
    assert first.cell_type == "markdown" and first.source.startswith(badge), (
        f"{name}: the first cell must start with its Colab badge; run `python scripts/execute_tutorials.py "
        "--badges-only`"
    )
    assert f"/blob/main/tutorials/{name})" in badge and execute_tutorials.GITHUB_OWNER in badge
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert badge in f.read(), f"README.md lacks the Colab badge of {name}"
    install = _code(nb)[0]
    assert install == execute_tutorials.install_cell(name), (
        f"{name}: the first code cell must be the install cell (the repository's source from GitHub, or the "
        "checkout when run inside it); run `python scripts/execute_tutorials.py --badges-only --no-readme`"
    )
    extras = execute_tutorials.extras_of(name)
    git = f"git+https://github.com/{execute_tutorials.GITHUB_OWNER}/{execute_tutorials.REPOSITORY}@main"
    assert f'"keras-medseg[{extras}] @ {git}"' in install and '"-e"' in install
    assert "not published" in install


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_executed_copy_is_current(path):
    name = os.path.basename(path)
    copy = os.path.join(ROOT, "tutorials", "executed", name)
    hint = f"run `python scripts/execute_tutorials.py --only {name[:2]}`"
    assert os.path.isfile(copy), f"tutorials/executed/{name} is missing; {hint}"
    executed = nbformat.read(copy, as_version=4)
    assert _code(executed) == _code(nbformat.read(path, as_version=4)), (
        f"tutorials/executed/{name} was made from an older version of the notebook; {hint}"
    )
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"], f"tutorials/executed/{name} holds an error"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"tutorials/executed/{name} shows no figure"
    meta = executed.metadata["keras_medseg_execution"]
    assert meta["mode"] == "full", f"tutorials/executed/{name} was made in {meta['mode']} mode; {hint}"
    note = executed.cells[1]
    assert note.cell_type == "markdown" and note.source == execute_tutorials.run_note(meta), (
        f"tutorials/executed/{name} does not say which command made it; {hint}")
    assert meta["command"] == execute_tutorials.reproduce_command(name, "full")
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "(claim" in printed, f"tutorials/executed/{name} prints no claim"


def test_badge_helpers(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title\n\ntext")])
    assert execute_tutorials.set_badge(nb, "09_x.ipynb")
    assert nb.cells[0].source.startswith(execute_tutorials.colab_badge("09_x.ipynb") + "\n\n# Title")
    assert not execute_tutorials.set_badge(nb, "09_x.ipynb")  # idempotent
    assert execute_tutorials.set_badge(nb, "10_y.ipynb")      # a renamed notebook gets its new link
    assert nb.cells[0].source.count("Open In Colab") == 1 and "10_y.ipynb" in nb.cells[0].source
    path = tmp_path / "09_x.ipynb"
    nbformat.write(nb, str(path))
    readme = tmp_path / "README.md"
    readme.write_text("# project\n")
    assert execute_tutorials.update_readme([str(path)], readme=str(readme))
    text = readme.read_text()
    assert "## Tutorials" in text and execute_tutorials.colab_badge("09_x.ipynb") in text and ": Title" in text
    assert not execute_tutorials.update_readme([str(path)], readme=str(readme))


def test_install_cell_helper():
    old = nbformat.v4.new_code_cell('import sys\nif "google.colab" in sys.modules:\n    !pip install keras-medseg')
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), old,
                                         nbformat.v4.new_code_cell("import keras")])
    cell = execute_tutorials.install_cell("05_x.ipynb")
    assert execute_tutorials.set_install_cell(nb, "05_x.ipynb")
    assert [c.source for c in nb.cells[1:]] == [cell, "import keras"]
    assert '"keras-medseg[tensorflow,medical] @ git+https://github.com/' in cell
    assert not execute_tutorials.set_install_cell(nb, "05_x.ipynb")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("x = 1")])
    assert execute_tutorials.set_install_cell(nb, "01_y.ipynb")
    assert [c.source for c in nb.cells[1:]] == [execute_tutorials.install_cell("01_y.ipynb"), "x = 1"]
    assert "[tensorflow] @ git+" in nb.cells[1].source


def test_run_note_helper():
    meta = {"mode": "full", "backend": "tensorflow", "keras": "3.0", "date": "2026-01-01 00:00 UTC",
            "seconds": 125.4, "command": execute_tutorials.reproduce_command("05_x.ipynb", "full"), "cpus": 2,
            "load_start": 1.5, "load_end": 2.0}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("x = 1")])
    execute_tutorials.set_run_note(nb, meta)
    execute_tutorials.set_run_note(nb, meta)  # replaces, never stacks
    assert [c.cell_type for c in nb.cells] == ["markdown", "markdown", "code"]
    note = nb.cells[1].source
    assert "`python scripts/execute_tutorials.py --full --only 05`" in note and "2 min 05 s" in note
    assert "full settings" in note and "2 CPU cores" in note


def test_native_log_lines_are_dropped():
    stream = nbformat.v4.new_output
    cell = nbformat.v4.new_code_cell("import keras")
    cell.outputs = [
        stream("stream", name="stderr", text="WARNING: All log messages before absl::InitializeLog() is called are "
               "written to STDERR\nI0000 00:00:1796085261.255386   16759 port.cc:153] oneDNN custom operations\n"),
        stream("stream", name="stderr", text="E0000 00:00:17.5   16759 cuda_platform.cc:52] failed call to cuInit\n"
               "UserWarning: something the reader should see\n"),
        stream("stream", name="stdout", text="I0000 00:00:1.0 1 x.cc:1] printed by the notebook itself\n"),
    ]
    nb = execute_tutorials.drop_native_logs(nbformat.v4.new_notebook(cells=[cell]))
    texts = [(o.name, o.text) for o in nb.cells[0].outputs]
    assert texts == [("stderr", "UserWarning: something the reader should see\n"),
                     ("stdout", "I0000 00:00:1.0 1 x.cc:1] printed by the notebook itself\n")]
