"""The package's architecture, checked statically with `ast` (nothing is imported).

Imports run one way (the picture is in CONTRIBUTING.md, and `test_the_picture_matches_the_tiers` reads it):

    utils, version                      tier 0  standard library, NumPy, Keras only
    ops, boxes                          tier 1  pure functions on keras.ops
    initializers                        tier 2  stencil initialisers (use ops)
    layers, losses, metrics,            tier 3  what a model is made of and compiled with,
      inference, plotting                       sliding-window prediction, figure helpers
    data, evaluation, explain, kernels  tier 4  beside ops/layers: they work on arrays and on any
                                                keras.Model, never on a particular zoo model
    zoo, keras_medseg/__init__.py       tier 5  registered models (the package root imports zoo)
    training, predict                   tier 6  the one fit runner, recipes, callbacks, distribution;
                                                whole-scan and whole-slide prediction with any saved model
    commands, cli, __main__             tier 7  the command line

A module may import modules of its own tier or lower ones, never a higher one:
module-level AND function-level imports count (a lazy import is still a dependency).
No import cycle between modules (lazy imports included). On top of that no
`commands/` module imports another command module (shared options live in private
modules such as `commands/_options.py`), no module is over 500 lines, every package
`__init__.py` defines `__all__`, no module forwards names with a module `__getattr__`
(the package root's lazy sub-module import excepted) or re-exports private names, and
each piece of knowledge has one owner: the data-source decision, the case finder, the
mask rule, the conv table and the normalisation factory are defined once, and their
copies (found by the patterns in `DUPLICATE_PATTERNS`) appear nowhere else.

A new top-level module or package must be given a tier in `TIERS` below and in
the picture in CONTRIBUTING.md.
"""

import ast
import functools
import os
import re

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
TIER_NAMES = {
    0: "utils/version",
    1: "ops",
    2: "initializers",
    3: "layers/losses/metrics/inference/plotting",
    4: "data/evaluation/explain/kernels",
    5: "zoo",
    6: "training/predict",
    7: "commands/cli",
}
CONTRIBUTING = os.path.join(ROOT, "CONTRIBUTING.md")

#: The one owner of each piece of knowledge: `function name -> module that defines it` (and nobody else does).
OWNERS = {
    "resolve_source": "keras_medseg.data.sources",  # what a data argument is
    "find_cases": "keras_medseg.data.cases",  # which (image, label map) cases a folder holds
    "find_scans": "keras_medseg.data.cases",
    "mask_ids": "keras_medseg.data.cases",  # the mask rule: RGB(A) drawings -> ids ...
    "standardize_labels": "keras_medseg.data.cases",  # ... and ids -> classes
    "layers_for": "keras_medseg.layers.factories",  # the conv / pool / upsample table by spatial dims
    "normalization": "keras_medseg.layers.factories",  # the normalisation factory
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


def upward_imports(module, source, is_package=False, is_module=_is_module):
    """Messages for every import in `source` that points to a higher tier, or to a unit without a tier."""
    problems = []
    own = unit_of(module)
    if own not in TIERS:
        return [f"{module}: top-level unit {own!r} has no tier; add it to TIERS and to CONTRIBUTING.md"]
    for line, target in imported_modules(module, source, is_package, is_module):
        unit = unit_of(target)
        if unit not in TIERS:
            problems.append(f"{module}:{line} imports {target}, whose unit {unit!r} has no tier in TIERS")
        elif TIERS[unit] > TIERS[own]:
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


def import_cycles(graph):
    """The import cycles of `graph` (`{module: set of imported modules}`): strongly connected components of 2+."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def visit(v):  # Tarjan's algorithm, iterative over each node's edges
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def picture_tiers(text):
    """`{unit: tier}` read from the architecture picture in CONTRIBUTING.md.

    A box line `tier N | names | comment` opens tier N; the lines below it that start with `|` add names to
    it until the box closes (`+---`). Names are `unit/`, `unit.py` or `keras_medseg/__init__.py` (the root, "").
    """
    block = text.split("## The architecture", 1)[1].split("```", 2)[1]
    tiers, current = {}, None
    for line in block.splitlines():
        stripped = line.strip()
        if stripped.startswith("+"):
            current = None
            continue
        head = line.split("|")
        if len(head) < 3:
            continue
        label = head[0].strip()
        if label.startswith("tier "):
            current = int(label.split()[1])
        if current is None:
            continue
        for token in head[1].split():
            if token == "keras_medseg/__init__.py":
                tiers[""] = current
            elif token.endswith("/") and token[:-1].isidentifier():
                tiers[token[:-1]] = current
            elif token.endswith(".py") and token[:-3].isidentifier() and token != "registry.py":
                tiers[token[:-3]] = current
    return tiers


def _name(node):
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


_SPATIAL_CLASS = re.compile(r"^(Conv|MaxPooling|AveragePooling|UpSampling|GlobalAveragePooling|GlobalMaxPooling)[23]D"
                            r"(Transpose)?$")
_NORM_LAYERS = {"BatchNormalization", "GroupNormalization", "LayerNormalization"}
_LAYOUT_NAMES = {"images", "masks", "labels", "dataset.json", ".h5", ".hdf5", ".json"}
_LAYOUT_OWNERS = {"keras_medseg.data.sources", "keras_medseg.data.cases"}


def _constants(node):
    """String / number constants in `node`, looking into tuples and lists."""
    if isinstance(node, ast.Constant):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [v for elt in node.elts for v in _constants(elt)]
    return []


def _is_mask_name(node):
    name = _name(node) or ""
    return name == "y" or "mask" in name.lower() or "label" in name.lower()


def _is_mask_rgb_slice(node):
    """Whether `node` is `<mask>[..., :3]`, the colour channels of a mask."""
    if not (isinstance(node, ast.Subscript) and _is_mask_name(node.value) and isinstance(node.slice, ast.Tuple)):
        return False
    parts = node.slice.elts
    return len(parts) == 2 and _constants(parts[0]) == [Ellipsis] and isinstance(parts[1], ast.Slice) \
        and parts[1].upper is not None and _constants(parts[1].upper) == [3]


def _is_mask_channels(node):
    """Whether `node` is `<mask>.shape[-1]`, the channel count of a mask (a name holding "mask"/"label", or `y`)."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "shape"):
        return False
    if not _is_mask_name(node.value.value):
        return False
    index = node.slice
    return isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub) and _constants(index.operand) == [1]


def duplicate_knowledge(module, source):
    """Messages for copies, in `module`, of knowledge that has one owner (see `OWNERS` and CONTRIBUTING.md).

    Found: a definition of an owned function outside its owner; a `{2: ...2D, 3: ...3D}` layer table or a
    `...2D if ... else ...3D` choice outside `layers/factories.py`; a Keras normalisation layer built outside
    `layers/factories.py`; a data-layout name (`images`, `masks`, `labels`, `dataset.json`, `.h5`, `.hdf5`,
    `.json`) joined into a path or tested as a suffix outside `data/sources.py` and `data/cases.py`; an RGB(A)
    mask rule (a channel count tested against `(3, 4)`) outside `data/cases.py`.
    """
    problems = []
    factories = module == "keras_medseg.layers.factories"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in OWNERS \
                and OWNERS[node.name] != module:
            problems.append(f"{module}:{node.lineno} defines {node.name}, which {OWNERS[node.name]} owns")
        elif isinstance(node, ast.Dict) and not factories:
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if {2, 3} <= set(keys) and any(_SPATIAL_CLASS.match(_name(v) or "") for v in node.values):
                problems.append(f"{module}:{node.lineno} has its own 2D/3D layer table; use layers_for")
        elif isinstance(node, ast.IfExp) and not factories:
            if _SPATIAL_CLASS.match(_name(node.body) or "") and _SPATIAL_CLASS.match(_name(node.orelse) or ""):
                problems.append(f"{module}:{node.lineno} picks a 2D/3D layer class itself; use layers_for")
        elif isinstance(node, ast.Call):
            func = _name(node.func)
            if func in _NORM_LAYERS and not factories:
                problems.append(f"{module}:{node.lineno} builds a {func} itself; use layers.normalization")
            elif func in ("join", "endswith") and module not in _LAYOUT_OWNERS:
                found = {v for arg in node.args for v in _constants(arg) if isinstance(v, str)} & _LAYOUT_NAMES
                if found:
                    problems.append(f"{module}:{node.lineno} reads the data layout ({', '.join(sorted(found))}) "
                                    "itself; ask data.sources.resolve_source / data.cases.find_cases")
        elif isinstance(node, ast.Subscript) and module != "keras_medseg.data.cases" and _is_mask_rgb_slice(node):
            problems.append(f"{module}:{node.lineno} has its own RGB(A) mask rule; use data.cases.mask_ids")
        elif isinstance(node, ast.Compare) and module != "keras_medseg.data.cases" and _is_mask_channels(node.left):
            for comparator in node.comparators:
                if isinstance(comparator, (ast.Tuple, ast.List, ast.Set)) \
                        and sorted(v for v in _constants(comparator) if isinstance(v, int)) == [3, 4]:
                    problems.append(f"{module}:{node.lineno} has its own RGB(A) mask rule; use data.cases.mask_ids")
    return problems


def forwarding(module, source, is_package=False):
    """Messages for a module `__getattr__` (other than the root's lazy import) and for private names re-exported."""
    problems = []
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and module != PACKAGE:
            problems.append(f"{module}:{node.lineno} forwards names with a module __getattr__")
        if is_package and isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private:
                problems.append(f"{module}:{node.lineno} re-exports private names {private}")
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
        problems += upward_imports(module, _read(path), path.endswith("__init__.py"))
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_no_import_cycle():
    graph = {module: {t for _, t in imported_modules(module, _read(path), path.endswith("__init__.py")) if t != module}
             for module, path in MODULES}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (lazy imports included):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_picture_matches_the_tiers():
    with open(CONTRIBUTING, encoding="utf-8") as f:
        picture = picture_tiers(f.read())
    assert picture == TIERS, (f"CONTRIBUTING.md's picture and TIERS differ: only in the picture "
                              f"{sorted(set(picture.items()) - set(TIERS.items()))}, only in TIERS "
                              f"{sorted(set(TIERS.items()) - set(picture.items()))}")


def test_one_owner_for_each_piece_of_knowledge():
    problems, defined = [], {}
    for module, path in MODULES:
        source = _read(path)
        problems += duplicate_knowledge(module, source)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.name in OWNERS:
                defined.setdefault(node.name, []).append(module)
    assert not problems, "knowledge with a second home:\n" + "\n".join(problems)
    assert defined == {name: [owner] for name, owner in OWNERS.items()}, defined


def test_no_forwarding_aliases_or_private_re_exports():
    problems = []
    for module, path in MODULES:
        problems += forwarding(module, _read(path), path.endswith("__init__.py"))
    assert not problems, "\n".join(problems)


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
                      "keras_medseg.predict", "keras_medseg.predict.scans",
                      "keras_medseg.commands.train", "keras_medseg.commands._options", "keras_medseg.utils",
                      "keras_medseg.utils.validation", "keras_medseg.data", "keras_medseg.data.io"}


@pytest.mark.parametrize(
    "module, source, expected",
    [
        # module-level upward import: ops -> zoo
        ("keras_medseg.ops.level_set", "from keras_medseg.zoo import unet\n", "keras_medseg.zoo.unet upward"),
        # function-level (lazy) upward import: data -> training
        ("keras_medseg.data.qtips", "def f():\n    import keras_medseg.training\n", "keras_medseg.training upward"),
        # data never imports prediction
        ("keras_medseg.data.cases", "from keras_medseg.predict import scans\n", "keras_medseg.predict.scans upward"),
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


def test_checker_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"pkg": {"pkg.mod"}, "pkg.mod": set()}) == []


def test_checker_reads_the_picture():
    text = ("## The architecture\n\n```\n +---+\n tier 7 | commands/  cli.py | parse\n"
            "        | more.py        | text\n +---+\n tier 5 | zoo/ (registry.py + one file) | x\n"
            "        |  keras_medseg/__init__.py | y\n tier 0 | utils/ | z\n +---+\n```\n")
    assert picture_tiers(text) == {"commands": 7, "cli": 7, "more": 7, "zoo": 5, "": 5, "utils": 0}


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("keras_medseg.zoo.x", "import keras\n_C = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}\n",
         "layer table"),
        ("keras_medseg.zoo.x", "C = layers.Conv2D if d == 2 else layers.Conv3D\n", "picks a 2D/3D layer class"),
        ("keras_medseg.zoo.x", "n = keras.layers.GroupNormalization(groups=-1)\n", "builds a GroupNormalization"),
        ("keras_medseg.training.x", "ok = str(p).lower().endswith(('.h5', '.hdf5'))\n", "data layout (.h5, .hdf5)"),
        ("keras_medseg.predict.x", "m = os.path.join(d, 'masks')\n", "data layout (masks)"),
        ("keras_medseg.commands.x", "if mask.ndim == 3 and mask.shape[-1] in (3, 4):\n    mask = mask[..., 0]\n",
         "RGB(A)"),
        ("keras_medseg.commands.x", "if mask.ndim == 3:\n    tumour = mask[..., :3].max(axis=-1) > 0\n", "RGB(A)"),
        ("keras_medseg.data.folder", "def find_cases(source):\n    return []\n", "defines find_cases"),
    ],
)
def test_checker_finds_duplicate_knowledge(module, source, expected):
    problems = duplicate_knowledge(module, source)
    assert len(problems) == 1 and expected in problems[0], problems


def test_checker_accepts_the_owners_and_other_code():
    assert duplicate_knowledge("keras_medseg.layers.factories", "T = {2: L.Conv2D, 3: L.Conv3D}\n"
                                                                 "n = L.BatchNormalization()\n") == []
    assert duplicate_knowledge("keras_medseg.data.cases", "p = os.path.join(d, 'masks')\n") == []
    assert duplicate_knowledge("keras_medseg.zoo.x", "d = {2: 'a', 3: 'b'}\nt = tempfile.mkstemp(suffix='.h5')\n"
                                                     "ok = image.shape[-1] in (3, 4)\n"
                                                     "rgb = image[..., :3]\n") == []


def test_checker_finds_forwarding():
    assert "__getattr__" in forwarding("keras_medseg.zoo.x", "def __getattr__(name):\n    return 1\n")[0]
    assert "_grid" in forwarding("keras_medseg.data.slides", "from keras_medseg.data.slides.x import _grid, a\n",
                                 is_package=True)[0]
    assert forwarding(PACKAGE, "def __getattr__(name):\n    return 1\n") == []  # the root's lazy import


def test_checker_finds_command_cross_imports():
    source = "from keras_medseg.commands._options import add_data\n\ndef run():\n    from . import train\n"
    problems = command_cross_imports("keras_medseg.commands.evaluate", source, is_module=_fake_is_module)
    assert len(problems) == 1 and "keras_medseg.commands.train" in problems[0], problems


_IMPORT_FACTS = (
    "import json, os, sys\n"
    "import keras, keras_cv, tensorflow\n"  # hard dependencies, imported first
    "os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)\n"  # TensorFlow sets it on import
    "before = dict(os.environ)\n"
    "import keras_medseg\n"
    "after = dict(os.environ)\n"
    "import keras_medseg.zoo.vgg16_classifier\n"
    "print(json.dumps({'changed_environment': {k: [before.get(k), after.get(k)] for k in set(before) | set(after)"
    " if before.get(k) != after.get(k)}, 'training_imported': 'keras_medseg.training' in sys.modules,"
    " 'training_modules': sorted(m for m in sys.modules if 'training' in m)}))\n"
)


@functools.cache
def import_facts():
    """What a fresh interpreter's `import keras_medseg` (then `import keras_medseg.zoo.vgg16_classifier`) did,
    as a dict: `changed_environment` ({name: [before, after]}), `training_imported` and `training_modules`.

    One subprocess (importing TensorFlow costs about 10 CPU s) shared by the tests of one pytest worker that ask:
    `test_import_changes_no_environment_variable` here and `test_zoo_import_does_not_import_training`
    (tests/training/test_layout.py).
    """
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _IMPORT_FACTS], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a fresh interpreter imports TensorFlow (about 10-50 s on shared CPUs)
def test_import_changes_no_environment_variable():
    """`import keras_medseg` leaves `os.environ` as it found it (the CLI quiets TensorFlow for itself).

    Its dependencies are imported first (TensorFlow itself sets `TF_CPP_MIN_LOG_LEVEL` when imported, so
    the variable is removed again before the package is imported).
    """
    changed = import_facts()["changed_environment"]
    assert changed == {}, f"import keras_medseg changed environment variables: {changed}"
