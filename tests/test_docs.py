"""The documentation site (mkdocs.yml, docs/): every public name is in the API reference, the nav is whole.

Cheap checks on the sources, no MkDocs build (scripts/test.sh runs `mkdocs build --strict` itself): the public
modules of `keras_medseg` (no `_`-prefixed part) and their public names (`__all__`, or else the public functions
and classes) are read with `ast` (nothing is imported). A name counts as documented when an API page has a
`::: identifier` directive for its module, for the name itself, for a package above it whose `__all__` exports it
(mkdocstrings renders a package's `__all__`) or for a package above it with `show_submodules: true`; a function
or class without a docstring only under a directive with `show_if_no_docstring: true` (mkdocstrings leaves it
out otherwise).
"""

import ast
import functools
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "keras_medseg")
DOCS = os.path.join(ROOT, "docs")
DIRECTIVE = re.compile(r"^:::\s+([\w.]+)[ \t]*\n((?:[ \t]+\S.*\n?)*)", re.M)  # `::: name` + its indented options


def public_modules():
    """`{dotted module name: file}` of every module of keras_medseg with no `_`-prefixed part in its path."""
    modules = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        parts = os.path.relpath(folder, ROOT).split(os.sep)
        for file in sorted(files):
            if not file.endswith(".py") or (file.startswith("_") and file != "__init__.py"):
                continue
            name = ".".join(parts if file == "__init__.py" else [*parts, file[:-3]])
            modules[name] = os.path.join(folder, file)
    return modules


DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@functools.lru_cache(maxsize=None)
def parse(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read())


def public_names(path):
    """The module's `__all__` (a literal), or else its top-level public functions and classes."""
    tree = parse(path)
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
            return list(ast.literal_eval(node.value))
    return [node.name for node in tree.body if isinstance(node, DEFINITIONS) and not node.name.startswith("_")]


def undocstringed(path):
    """The module's public functions and classes (of `public_names`) that have no docstring."""
    names = set(public_names(path))
    return [node.name for node in parse(path).body
            if isinstance(node, DEFINITIONS) and node.name in names and not ast.get_docstring(node)]


def nav_pages(nav):
    """Every page path named in mkdocs.yml's `nav` (nested sections included)."""
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            pages += nav_pages(value)
        elif not re.match(r"^[a-z]+://", value):
            pages.append(value)
    return pages


def read_nav():
    """mkdocs.yml's nav (the file also holds `!!python/name:` tags for Material's emoji, hence the line scan)."""
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("\nnav:\n") + 1
    lines = text[start:].splitlines()
    end = next((i for i, line in enumerate(lines[1:], 1) if line and not line.startswith((" ", "-"))), len(lines))
    return yaml.safe_load("\n".join(lines[:end]))["nav"]


def docs_pages():
    pages = []
    for folder, _, files in os.walk(DOCS):
        rel = os.path.relpath(folder, DOCS)
        pages += [os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/") for f in files if f.endswith(".md")]
    return sorted(pages)


def directives():
    """`{identifier: its options text}` of every `::: identifier` directive in docs/."""
    found = {}
    for page in docs_pages():
        with open(os.path.join(DOCS, page), encoding="utf-8") as f:
            found.update(DIRECTIVE.findall(f.read()))
    return found


def covering(module, name, modules, documented):
    """The directives that render `module.name` (`documented`: as `directives` returns)."""
    parents = [module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)]
    found = [d for d in (module, f"{module}.{name}") if d in documented]
    found += [p for p in parents if p in documented and "show_submodules: true" in documented[p]]
    found += [p for p in parents if p in documented and p in modules and name in public_names(modules[p])]
    return found


def undocumented(modules, documented):
    """`module.name` of every public name no directive renders (a name without a docstring needs a directive
    with `show_if_no_docstring: true`: mkdocstrings leaves such names out by default)."""
    missing = []
    for module, path in modules.items():
        bare = set(undocstringed(path))
        for name in sorted(public_names(path)):
            if f"{module}.{name}" in modules:  # a submodule listed in `__all__`: checked as a module
                continue
            found = covering(module, name, modules, documented)
            if name in bare:
                found = [d for d in found if "show_if_no_docstring: true" in documented[d]]
            if not found:
                missing.append(f"{module}.{name}")
    return missing


def test_every_public_name_is_in_the_api_reference():
    modules = public_modules()
    assert "keras_medseg.layers" in modules and "keras_medseg.data.scans.io" in modules
    assert "keras_medseg.commands._options" not in modules
    documented = directives()
    assert "keras_medseg.layers" in documented
    missing = undocumented(modules, documented)
    assert not missing, (f"public names without an API page (add `::: <module>` to its package's page in docs/api/): "
                         f"{sorted({name.rsplit('.', 1)[0] for name in missing})}, names {missing}")
    unknown = sorted(d for d in documented if d not in modules and d.rsplit(".", 1)[0] not in modules)
    assert not unknown, f"API directives naming no public module: {unknown}"


def test_undocumented_finds_a_missing_name(tmp_path):
    modules = {"keras_medseg.layers": os.path.join(PACKAGE, "layers", "__init__.py")}
    assert "keras_medseg.layers.CurvatureConv" in undocumented(modules, {})
    assert not undocumented(modules, {"keras_medseg.layers": ""})
    (tmp_path / "tool.py").write_text('def told():\n    """Docstring."""\n\n\ndef bare():\n    pass\n')
    modules = {"keras_medseg.commands.tool": str(tmp_path / "tool.py")}
    assert undocumented(modules, {"keras_medseg.commands": "      show_submodules: true\n"}) == [
        "keras_medseg.commands.tool.bare"]
    assert not undocumented(modules, {"keras_medseg.commands": "show_submodules: true\nshow_if_no_docstring: true"})
    assert undocumented(modules, {"keras_medseg": "show_if_no_docstring: true"}) == [
        "keras_medseg.commands.tool.bare", "keras_medseg.commands.tool.told"]


def test_nav_and_pages_agree():
    nav = nav_pages(read_nav())
    pages = docs_pages()
    assert not [p for p in nav if p not in pages], "mkdocs.yml's nav names a page docs/ does not have"
    assert not [p for p in pages if p not in nav], "a page in docs/ is missing from mkdocs.yml's nav"
    assert len(nav) == len(set(nav))


def test_generated_blocks_are_in_the_files_their_scripts_write():
    """The README keeps the blocks benchmarks/run_all.py and scripts/execute_tutorials.py rewrite; the zoo's
    parameter table (benchmarks/zoo3d.py --counts) moved to docs/zoo.md with the text around it."""
    files = {"README.md": ("results-headline", "tutorials"), "docs/zoo.md": ("zoo3d_params",)}
    for file, blocks in files.items():
        with open(os.path.join(ROOT, file), encoding="utf-8") as f:
            text = f.read()
        for block in blocks:
            assert [text.count(f"<!-- {end} {block} -->") for end in ("BEGIN", "END")] == [1, 1], (file, block)
    with open(os.path.join(ROOT, "benchmarks", "zoo3d.py"), encoding="utf-8") as f:
        assert 'os.path.join(os.path.dirname(HERE), "docs", "zoo.md")' in f.read()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) < 250
