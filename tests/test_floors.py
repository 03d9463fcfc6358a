"""The version floors of pyproject.toml are the versions the floors phase installs (scripts/floors.txt).

scripts/test.sh installs the JAX venv with scripts/floors.txt as a constraint, so the floors it pins are the ones
CI runs; these tests keep pyproject.toml's `name>=X` and the file's `name==X` from drifting apart.
"""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ROOT / "scripts" / "floors.txt"

pytestmark = pytest.mark.skipif(not FLOORS.exists(), reason="scripts/ is not here (a copy of tests/ alone)")


def _pins():
    pins = {}
    for line in FLOORS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"scripts/floors.txt: not `name==version`: {line!r}"
            pins[name.strip().lower()] = version.strip()
    return pins


def _floors():
    """`name -> X` for every `name>=X` of pyproject.toml's dependencies and extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    floors = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?>=([^,;\s]+)", requirement.strip())
        if match:
            floors.setdefault(match.group(1).lower(), set()).add(match.group(3))
    return floors


def test_floors_file_pins_keras_numpy_and_jax():
    assert {"keras", "numpy", "jax", "jaxlib"} <= set(_pins())


def test_every_pin_is_the_floor_in_pyproject():
    floors = _floors()
    for name, version in _pins().items():
        assert floors.get(name) == {version}, (
            f"scripts/floors.txt pins {name}=={version}; pyproject.toml says {name}>={floors.get(name)}")


def test_the_jax_venv_is_installed_with_the_floors():
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert re.search(r'VENV="\$REPORTS/venv-jax" bash scripts/setup\.sh .*-c scripts/floors\.txt', script)
