"""Execute the tutorial notebooks and keep copies with their outputs in `tutorials/executed/`.

    python scripts/execute_tutorials.py --only 05        # full settings (the default), as the committed copies
    python scripts/execute_tutorials.py --fast           # KERAS_MEDSEG_FAST=1, smoke-sized (what the test suite runs)
    python scripts/execute_tutorials.py --no-readme      # leave README.md's tutorial list alone
    python scripts/execute_tutorials.py --badges-only    # refresh badges and install cells, execute nothing

Every `tutorials/[0-9]*.ipynb` is picked up (a new numbered notebook needs no
change here). Before executing, the script writes the "Open in Colab" badge
as the first line of each notebook's first cell, `install_cell(name)` as its
first code cell (keras-medseg is not on PyPI yet: in Colab it installs the
repository's source from its git URL with the notebook's `EXTRAS`; in a
checkout, the checkout), and, unless `--no-readme`, the tutorial list between
`<!-- BEGIN tutorials -->` and `<!-- END tutorials -->` in README.md, all
from `GITHUB_OWNER` below. Each notebook runs top to bottom with nbclient on
the `python3` kernel of this interpreter, in a temporary working directory
(runs, checkpoints and sample images stay out of the repository), with
`PYTHONPATH` set to this checkout so the checkout's `keras_medseg` is used
and TensorFlow's oneDNN kernels on; the copy with its outputs is written to
`tutorials/executed/<name>.ipynb` with the mode, backend, Keras version,
date, run time, command and machine load in its metadata
(`keras_medseg_execution`) and in a markdown cell after its title
(`run_note`). The source notebooks stay without outputs (the test suite
executes them itself, in fast mode).

The committed copies are full runs, each made by
`python scripts/execute_tutorials.py --full --no-readme --only NN` on the
TensorFlow backend (Keras 3.15.1) on 7 December 2026, on a machine with 2 CPU
cores and no GPU that other jobs shared (load average 5-10; 01, 02, 03 and 06
partly ran side by side): 01 11 min 33 s, 02 27 min 42 s (25 min of it the
VGG16 classifier), 03 7 min 15 s, 04 1 min 18 s, 05 2 min 3 s, 06 3 min 15 s.
tutorials/README.md lists what each copy shows.
"""

import argparse
import datetime
import glob
import os
import re
import sys
import tempfile
import time

#: GitHub account that hosts the repository; every Colab badge and link is built from it.
GITHUB_OWNER = "keras-medseg"
REPOSITORY = "keras-medseg"
BRANCH = "main"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = os.path.join(ROOT, "tutorials")
EXECUTED = os.path.join(TUTORIALS, "executed")
README = os.path.join(ROOT, "README.md")
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_PATTERN = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)[ \t]*\n*")
README_BEGIN, README_END = "<!-- BEGIN tutorials -->", "<!-- END tutorials -->"
TIMEOUT_S = {"fast": 900, "full": 3600}  # per cell


#: Extras each tutorial installs (keyed by the notebook's number); the others get `DEFAULT_EXTRAS`.
DEFAULT_EXTRAS = ("tensorflow",)
EXTRAS = {"05": ("tensorflow", "medical"), "06": ("tensorflow", "slides")}


def git_url():
    """The pip URL of this repository's source on GitHub (`BRANCH`), built from `GITHUB_OWNER`."""
    return f"git+https://github.com/{GITHUB_OWNER}/{REPOSITORY}@{BRANCH}"


def extras_of(name):
    """The extras that notebook `name` installs, e.g. `"tensorflow,medical"`."""
    return ",".join(EXTRAS.get(os.path.basename(name)[:2], DEFAULT_EXTRAS))


def install_cell(name):
    """The first code cell of notebook `name`.

    keras-medseg is not published on PyPI yet, so in Colab (or any fresh environment) the cell installs
    the repository's source from GitHub with pip's direct-reference syntax; inside a checkout (the
    notebook opened from its tutorials/ folder) it installs that checkout, editable; nothing when
    `keras_medseg` is importable already.
    """
    extras = extras_of(name)
    return f"""\
# Install keras-medseg if it is not importable yet. The package is not published on PyPI yet: in Colab
# (or any fresh environment) this installs the repository's source from GitHub ({BRANCH} branch); inside a
# checkout of the repository (this notebook opened from its tutorials/ folder) that checkout, editable.
# In Colab, restart the session once if pip upgraded Keras or TensorFlow.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("keras_medseg") is None:
    checkout = os.path.abspath("..")  # the repository root when the notebook runs from tutorials/
    in_checkout = all(os.path.exists(os.path.join(checkout, f)) for f in ("pyproject.toml", "keras_medseg"))
    source = "keras-medseg[{extras}] @ {git_url()}"
    target = ["-e", checkout + "[{extras}]"] if in_checkout else [source]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *target], check=True)"""


def notebooks(folder=TUTORIALS):
    """Paths of the tutorial notebooks (`[0-9]*.ipynb` in `folder`), sorted by name."""
    return sorted(glob.glob(os.path.join(folder, "[0-9]*.ipynb")))


def colab_url(name):
    """The Colab URL that opens `tutorials/<name>` from GitHub."""
    return f"https://colab.research.google.com/github/{GITHUB_OWNER}/{REPOSITORY}/blob/{BRANCH}/tutorials/{name}"


def colab_badge(name):
    """Markdown of the "Open in Colab" badge for `tutorials/<name>`."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(name)})"


def title_of(nb):
    """The first `# ` heading of a notebook (its title), or "" when it has none."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return re.sub(r"^\d+\s*-\s*", "", line[2:].strip())  # "02 - Title" -> "Title"
    return ""


def set_badge(nb, name):
    """Make the badge of `name` the first line of the notebook's first cell (a markdown cell).

    Returns True when the notebook changed.
    """
    import nbformat

    badge = colab_badge(name) + "\n\n"
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(badge.strip()))
        return True
    old = nb.cells[0].source
    new = badge + BADGE_PATTERN.sub("", old, count=1)
    nb.cells[0].source = new
    return new != old


def set_install_cell(nb, name):
    """Make `install_cell(name)` the notebook's first code cell (replacing an older install cell).

    An existing first code cell that runs pip is replaced; otherwise the cell is inserted before
    the first code cell. Returns True when the notebook changed.
    """
    import nbformat

    source = install_cell(name)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            if cell.source == source:
                return False
            if "pip" in cell.source:
                cell.source = source
            else:
                nb.cells.insert(index, nbformat.v4.new_code_cell(source))
            return True
    nb.cells.append(nbformat.v4.new_code_cell(source))
    return True


def readme_block(paths):
    """README lines: one bullet per notebook with its badge, title and executed copy."""
    import nbformat

    lines = [README_BEGIN]
    for path in paths:
        name = os.path.basename(path)
        title = title_of(nbformat.read(path, as_version=4)) or name
        lines.append(f"- {colab_badge(name)} [`{name}`](tutorials/{name}): {title} "
                     f"([with outputs](tutorials/executed/{name}))")
    lines.append(README_END)
    return "\n".join(lines)


def update_readme(paths, readme=README):
    """Replace the tutorials block of README.md (appended under "## Tutorials" if missing)."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    block = readme_block(paths)
    if README_BEGIN in text and README_END in text:
        start = text.index(README_BEGIN)
        end = text.index(README_END) + len(README_END)
        new = text[:start] + block + text[end:]
    else:
        new = text.rstrip("\n") + "\n\n## Tutorials\n" + block + "\n"
    if new != text:
        with open(readme, "w", encoding="utf-8") as f:
            f.write(new)
    return new != text


def refresh_badges(paths, readme=True):
    """Write the badges and the install cell into the source notebooks, the list into README.md.

    `readme=False` leaves README.md alone. Returns the names of the files that changed.
    """
    import nbformat

    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        badge_changed = set_badge(nb, os.path.basename(path))
        if set_install_cell(nb, os.path.basename(path)) or badge_changed:
            nbformat.write(nb, path)
            changed.append(os.path.basename(path))
    if readme and update_readme(paths):
        changed.append("README.md")
    return changed


#: Start-up lines that TensorFlow's C++ runtime writes to the kernel's stderr before its log level applies.
NATIVE_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                        r"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] .*)$")


def drop_native_logs(nb):
    """Remove TensorFlow's native start-up log lines from the stderr outputs (empty outputs go too)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines = out.text.splitlines(keepends=True)
                text = "".join(line for line in lines if not NATIVE_LOG.match(line.rstrip("\n")))
                if not text.strip():
                    continue
                out.text = text
            kept.append(out)
        cell.outputs = kept
    return nb


def _kernel_environment(mode):
    """Environment of the notebook kernels: this checkout first on PYTHONPATH, fast mode or not, inline plots."""
    env = {
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_ENABLE_ONEDNN_OPTS": "1",  # TensorFlow's oneDNN kernels, as the test suite and the command line use
    }
    if mode == "fast":
        env["KERAS_MEDSEG_FAST"] = "1"
    return env


def reproduce_command(name, mode):
    """The command that rebuilds the executed copy of notebook `name` in `mode`."""
    return f"python scripts/execute_tutorials.py --{mode} --only {name[:2]}"


def machine():
    """One line describing this machine: CPU cores and the 1-minute load average now."""
    import platform

    return f"{os.cpu_count()} CPU cores ({platform.machine()}), load average {os.getloadavg()[0]:.2f}"


#: First line of the markdown cell that `execute` puts after the title cell of each executed copy.
RUN_NOTE = "**This copy's run.**"


def run_note(meta):
    """Markdown cell text saying how the executed copy was made (command, mode, time, machine)."""
    minutes, seconds = divmod(round(meta["seconds"]), 60)
    settings = ("the notebook's full settings" if meta["mode"] == "full"
                else "fast mode (`KERAS_MEDSEG_FAST=1`, the test suite's smoke-sized settings)")
    return (f"{RUN_NOTE} Executed top to bottom with `{meta['command']}` at {settings} on the "
            f"{meta['backend']} backend (Keras {meta['keras']}), {meta['date']}: {minutes} min {seconds:02d} s "
            f"on {meta['cpus']} CPU cores, no GPU, load average {meta['load_start']:.2f} at the start and "
            f"{meta['load_end']:.2f} at the end (other jobs shared the machine when the load is above 0). The "
            "numbers below are that run's.")


def set_run_note(nb, meta):
    """Put `run_note(meta)` after the notebook's first cell (replacing an older note)."""
    import nbformat

    nb.cells = [c for c in nb.cells if not (c.cell_type == "markdown" and c.source.startswith(RUN_NOTE))]
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(run_note(meta)))
    return nb


def execute(path, mode="full", out_dir=EXECUTED):
    """Run one notebook top to bottom and write the copy with outputs; returns the seconds it took."""
    import importlib.metadata

    import nbclient
    import nbformat

    name = os.path.basename(path)
    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in ("PATH", "PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS",
                                            "KERAS_MEDSEG_FAST", "MPLBACKEND")}
    os.environ.update(_kernel_environment(mode))
    if mode != "fast":
        os.environ.pop("KERAS_MEDSEG_FAST", None)
    os.environ.pop("MPLBACKEND", None)  # the kernel picks the inline backend, so figures become outputs
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="keras_medseg_tutorial_") as work:
            client = nbclient.NotebookClient(nb, timeout=TIMEOUT_S[mode], kernel_name="python3",
                                             record_timing=False, resources={"metadata": {"path": work}})
            client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds = time.perf_counter() - start
    drop_native_logs(nb)
    meta = {
        "mode": mode,
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "keras": importlib.metadata.version("keras"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(seconds, 1),
        "command": reproduce_command(name, mode),
        "cpus": os.cpu_count(),
        "load_start": round(load_start, 2),
        "load_end": round(os.getloadavg()[0], 2),
    }
    nb.metadata["keras_medseg_execution"] = meta
    set_run_note(nb, meta)
    os.makedirs(out_dir, exist_ok=True)
    nbformat.write(nb, os.path.join(out_dir, name))
    return seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the notebooks' own settings (default; the committed copies)")
    mode.add_argument("--fast", dest="mode", action="store_const", const="fast",
                      help="KERAS_MEDSEG_FAST=1: the test suite's smoke-sized runs (a quick look, not committed)")
    p.add_argument("--only", action="append", default=None, metavar="PREFIX",
                   help="only notebooks whose file name starts with PREFIX (repeatable)")
    p.add_argument("--badges-only", action="store_true",
                   help="refresh the Colab badges, install cells and README list only")
    p.add_argument("--no-readme", action="store_true",
                   help="leave README.md alone (its tutorial list is not rewritten)")
    args = p.parse_args(argv)
    paths = notebooks()
    changed = refresh_badges(paths, readme=not args.no_readme)
    if changed:
        print("badges refreshed:", ", ".join(changed))
    if args.badges_only:
        return 0
    if args.only:
        paths = [q for q in paths if any(os.path.basename(q).startswith(pre) for pre in args.only)]
        if not paths:
            p.error(f"no notebook in tutorials/ starts with {args.only}")
    run_mode = args.mode or "full"
    total = 0.0
    for path in paths:
        print(f"executing {os.path.basename(path)} ({run_mode} mode; {machine()}) ...", flush=True)
        seconds = execute(path, run_mode)
        total += seconds
        print(f"  done in {seconds:.0f} s ({machine()}) -> tutorials/executed/{os.path.basename(path)}",
              flush=True)
    print(f"{len(paths)} notebook(s) in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
