"""The package's architecture, checked statically with `ast` (nothing is imported).

Imports run one way (the picture is in CONTRIBUTING.md):

    utils, version                      tier 0  standard library, NumPy, Keras only
    ops, boxes                          tier 1  pure functions on keras.ops
    initializers                        tier 2  stencil initialisers (use ops)
    layers, losses, metrics,            tier 3  what a model is made of and compiled with,
      inference, plotting                       sliding-window prediction, figure helpers
    data, evaluation, explain, kernels  tier 4  beside ops/layers: they work on arrays and on any
                                                keras.Model, never on a particular zoo model
    zoo, keras_medseg/__init__.py       tier 5  registered models (the package root imports zoo)
    training (+ the old root shims      tier 6  train loops, recipes, callbacks, checkpointing,
      callbacks, gan_callbacks,                 distribution; whole-scan and whole-slide prediction
      checkpointing, distribute),               with any saved model
      scans, slide_inference
    commands, cli, __main__             tier 7  the command line

A module may import modules of its own tier or lower ones, never a higher one:
module-level AND function-level imports count (a lazy import is still a dependency).
On top of that no `commands/` module imports another command module (shared options
live in private modules such as `commands/_options.py`), no module is over 500
lines, and every package `__init__.py` defines `__all__`.

A new top-level module or package must be given a tier in `TIERS` below and in
the picture in CONTRIBUTING.md. The only upward imports allowed are the old
public import paths kept working by a lazy re-export, listed with their reason
in `KEPT_OLD_PATHS` (each entry must still be needed, or the test fails).
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "keras_medseg"
PACKAGE_DIR = os.path.join(ROOT, PACKAGE)
MAX_LINES = 500

#: Tier of every top-level unit of `keras_medseg` ("" is the package root `__init__.py`).
TIERS = {
    "utils": 0,
    "version": 0,
    "ops": 1,
    "boxes": 1,
    "initializers": 2,
    "layers": 3,
    "losses": 3,
    "metrics": 3,
    "inference": 3,
    "plotting": 3,
    "data": 4,
    "evaluation": 4,
    "explain": 4,
    "kernels": 4,
    "zoo": 5,
    "": 5,
    "training": 6,
    "predict": 6,
    "commands": 7,
    "cli": 7,
    "__main__": 7,
}
#: `(module, imported module)`: upward imports kept on purpose, each one a lazy re-export of an old public path.
KEPT_OLD_PATHS = {}
TIER_NAMES = {
    0: "utils/version",
    1: "ops",
    2: "initializers",
    3: "layers/losses/metrics/inference/plotting",
    4: "data/evaluation/explain/kernels",
    5: "zoo",
    6: "training/scans/slide_inference",
    7: "commands/cli",
}


def package_modules():
    """`(dotted module name, path)` of every `.py` file under `keras_medseg/`, sorted."""
    found = []
    for folder, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                found.append((".".join(rel), path))
    return found


def _is_module(dotted):
    """True when `dotted` (e.g. `keras_medseg.zoo.unet`) is a module or package in the source tree."""
    base = os.path.join(ROOT, *dotted.split("."))
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))


def imported_modules(module, source, is_package=False, is_module=_is_module):
    """`(line, dotted name)` of every `keras_medseg` module imported anywhere in `source`.

    `from keras_medseg.x import y` counts as importing `keras_medseg.x.y` when that is a
    module, else `keras_medseg.x`; relative imports are resolved against `module`.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if alias.name != "*" and is_module(sub) else base))
    found = sorted(set(found))
    return [(line, name) for line, name in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def unit_of(dotted):
    """The top-level unit of a `keras_medseg` module name: `keras_medseg.zoo.unet` -> `zoo`."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(module, source, is_package=False, is_module=_is_module, allowed=()):
    """Messages for every import in `source` that points to a higher tier, or to a unit without a tier.

    `(module, target)` pairs in `allowed` are not reported.
    """
    problems = []
    own = unit_of(module)
    if own not in TIERS:
        return [f"{module}: top-level unit {own!r} has no tier; add it to TIERS and to CONTRIBUTING.md"]
    for line, target in imported_modules(module, source, is_package, is_module):
        unit = unit_of(target)
        if unit not in TIERS:
            problems.append(f"{module}:{line} imports {target}, whose unit {unit!r} has no tier in TIERS")
        elif TIERS[unit] > TIERS[own] and (module, target) not in allowed:
            problems.append(
                f"{module}:{line} imports {target} upward: {TIER_NAMES[TIERS[own]]} (tier {TIERS[own]}) may not "
                f"import {TIER_NAMES[TIERS[unit]]} (tier {TIERS[unit]})"
            )
    return problems


def command_cross_imports(module, source, is_package=False, is_module=_is_module):
    """Messages for a `commands/` module that imports another (public) command module."""
    if not module.startswith(PACKAGE + ".commands.") or is_package:
        return []
    problems = []
    for line, target in imported_modules(module, source, is_package, is_module):
        parts = target.split(".")
        if len(parts) >= 3 and parts[1] == "commands" and target != module and not parts[2].startswith("_"):
            problems.append(f"{module}:{line} imports the command module {target}; share code through "
                            "commands/_options.py or a library function instead")
    return problems


MODULES = package_modules()


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_every_module_is_found():
    names = [name for name, _ in MODULES]
    assert "keras_medseg.zoo.registry" in names and "keras_medseg" in names, names


def test_imports_run_one_way():
    problems = []
    for module, path in MODULES:
        problems += upward_imports(module, _read(path), path.endswith("__init__.py"), allowed=KEPT_OLD_PATHS)
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_kept_old_paths_are_still_needed():
    sources = {module: (_read(path), path.endswith("__init__.py")) for module, path in MODULES}
    stale = []
    for module, target in KEPT_OLD_PATHS:
        if module not in sources or (module, target) not in {
            (module, t) for _, t in imported_modules(module, *sources[module])
        }:
            stale.append(f"{module} -> {target}")
    assert not stale, "KEPT_OLD_PATHS entries no longer needed (remove them): " + ", ".join(stale)


def test_commands_do_not_import_each_other():
    problems = []
    for module, path in MODULES:
        problems += command_cross_imports(module, _read(path), path.endswith("__init__.py"))
    assert not problems, "\n".join(problems)


def test_no_module_over_500_lines():
    long = []
    for module, path in MODULES:
        n = len(_read(path).splitlines())
        if n > MAX_LINES:
            long.append(f"{module}: {n} lines")
    assert not long, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(long)


def test_every_package_init_defines_all():
    missing = []
    for module, path in MODULES:
        if path.endswith("__init__.py"):
            tree = ast.parse(_read(path))
            names = set()
            for node in tree.body:
                if isinstance(node, ast.Assign):
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    names.add(node.target.id)
            if "__all__" not in names:
                missing.append(module)
    assert not missing, "package __init__.py without __all__: " + ", ".join(missing)


# -- the checker itself, on planted sources (so a silent checker cannot pass the tests above) --

def _fake_is_module(dotted):
    return dotted in {"keras_medseg.zoo", "keras_medseg.zoo.unet", "keras_medseg.training", "keras_medseg.ops",
                      "keras_medseg.commands.train", "keras_medseg.commands._options", "keras_medseg.utils",
                      "keras_medseg.utils.validation", "keras_medseg.data", "keras_medseg.data.io"}


@pytest.mark.parametrize(
    "module, source, expected",
    [
        # module-level upward import: ops -> zoo
        ("keras_medseg.ops.level_set", "from keras_medseg.zoo import unet\n", "keras_medseg.zoo.unet upward"),
        # function-level (lazy) upward import: data -> training
        ("keras_medseg.data.qtips", "def f():\n    import keras_medseg.training\n", "keras_medseg.training upward"),
        # the package root imports zoo, so a low module may not import it
        ("keras_medseg.layers.x", "from keras_medseg import __version__\n", "imports keras_medseg upward"),
        # relative import resolved against the module: explain -> zoo
        ("keras_medseg.explain.gradcam", "from ..zoo import unet\n", "keras_medseg.zoo.unet upward"),
        # a module in a unit without a tier
        ("keras_medseg.mystery", "import numpy\n", "has no tier"),
    ],
)
def test_checker_finds_upward_imports(module, source, expected):
    problems = upward_imports(module, source, is_module=_fake_is_module)
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize(
    "module, source",
    [
        ("keras_medseg.zoo.unet", "from keras_medseg.utils.validation import x\nfrom keras_medseg import data\n"),
        ("keras_medseg.commands.train", "from keras_medseg.training import train\nimport keras_medseg.zoo\n"),
        ("keras_medseg.training.segmentation", "from .. import zoo\nfrom keras_medseg.data.io import read\n"),
    ],
)
def test_checker_accepts_downward_imports(module, source):
    assert upward_imports(module, source, is_module=_fake_is_module) == []


def test_checker_skips_only_the_allowed_pairs():
    source = "def __getattr__(name):\n    from keras_medseg.training import x\n    import keras_medseg.zoo\n"
    allowed = {("keras_medseg.data.qtips", "keras_medseg.training")}
    problems = upward_imports("keras_medseg.data.qtips", source, is_module=_fake_is_module, allowed=allowed)
    assert len(problems) == 1 and "keras_medseg.zoo upward" in problems[0], problems


def test_checker_finds_command_cross_imports():
    source = "from keras_medseg.commands._options import add_data\n\ndef run():\n    from . import train\n"
    problems = command_cross_imports("keras_medseg.commands.evaluate", source, is_module=_fake_is_module)
    assert len(problems) == 1 and "keras_medseg.commands.train" in problems[0], problems


@pytest.mark.slow  # a fresh interpreter imports TensorFlow (about 10-50 s on shared CPUs)
def test_import_changes_no_environment_variable():
    """`import keras_medseg` leaves `os.environ` as it found it (the CLI quiets TensorFlow for itself).

    Its dependencies are imported first (TensorFlow itself sets `TF_CPP_MIN_LOG_LEVEL` when imported, so
    the variable is removed again before the package is imported).
    """
    import json
    import subprocess
    import sys

    code = (
        "import json, os\n"
        "import keras, keras_cv, tensorflow\n"  # hard dependencies, imported first
        "os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)\n"  # TensorFlow sets it on import
        "before = dict(os.environ)\n"
        "import keras_medseg\n"
        "after = dict(os.environ)\n"
        "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after)"
        " if before.get(k) != after.get(k)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    changed = json.loads(out.stdout.strip().splitlines()[-1])
    assert changed == {}, f"import keras_medseg changed environment variables: {changed}"
