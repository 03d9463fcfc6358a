"""The suite's guard of process-wide flags (`tests.testing.process_state`, used by `tests/conftest.py`).

A test that leaves TensorFlow op determinism (or a dtype policy, or a
determinism environment variable) switched on changes the speed and numbers
of every later test in its pytest worker; the guard must name the flag, fail
that test and put the flag back.
"""

import os
import subprocess
import sys
import textwrap

import keras
import pytest

from tests.testing import process_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_snapshot_names_and_restores_a_changed_flag(monkeypatch):
    before = process_state.snapshot()
    keras.config.set_dtype_policy("mixed_float16")
    monkeypatch.setenv("TF_DETERMINISTIC_OPS", "1")
    changed = {k: (a, b) for k, a, b in process_state.diff(before, process_state.snapshot())}
    assert changed["keras dtype policy"] == ("float32", "mixed_float16")
    assert changed["env TF_DETERMINISTIC_OPS"][1] == "1"
    assert process_state.restore(before) == []
    assert process_state.diff(before, process_state.snapshot()) == []


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow op determinism")
def test_tensorflow_op_determinism_is_seen_and_switched_back_off():
    from tensorflow.python.framework import config as tf_config

    from keras_medseg.utils.reproducibility import set_deterministic

    before = process_state.snapshot()
    assert before["tensorflow op determinism"] is False
    try:
        set_deterministic(0)
        changed = [k for k, _, _ in process_state.diff(before, process_state.snapshot())]
        assert "tensorflow op determinism" in changed and "env TF_DETERMINISTIC_OPS" in changed
    finally:
        process_state.restore(before)
    assert not tf_config.is_op_determinism_enabled()
    assert process_state.diff(before, process_state.snapshot()) == []


def test_a_test_that_leaks_a_flag_fails_and_the_next_test_starts_clean(tmp_path):
    """Run pytest on two tests with the suite's guard: the first leaves a flag on, the second sees it off."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from tests.conftest import _process_state_guard  # noqa: F401  (the suite's own guard fixture)
    """))
    (tmp_path / "test_leak.py").write_text(textwrap.dedent("""
        import keras

        def test_a_leaks():
            keras.config.set_dtype_policy("mixed_bfloat16")

        def test_b_starts_clean():
            assert keras.config.dtype_policy().name == "float32"
    """))
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="jax" if keras.backend.backend() == "jax" else "numpy")
    env.pop("PYTEST_XDIST_WORKER", None)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # no installed plugins (xdist, hypothesis ...): 1.5 CPU s less;
    # the guard is the suite's conftest fixture, no plugin
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "2 passed, 1 error" in text, text  # test_a passes, its teardown errors; test_b passes
    assert "test_a_leaks left process-wide state changed (keras dtype policy: 'float32' -> 'mixed_bfloat16')" \
        in text, text
