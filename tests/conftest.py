"""Test configuration shared by the whole suite.

* JAX runs with 64-bit floats enabled so the float64 gradient checks mean
  what they say (set before JAX is imported).
* `KERAS_MEDSEG_FAST=1` (set by scripts/test.sh) makes tutorials and demos
  run with tiny sizes.
* Threads: under pytest-xdist each worker gets its share of the cores
  (`cores // workers`, at least 1) for TensorFlow (intra- and inter-op
  pools), XLA (JAX), OpenMP (torch) and BLAS, so 2 workers do not run 8
  threads on 2 cores. Set before any backend is imported; a variable the
  caller set wins.
* `TF_ENABLE_ONEDNN_OPTS=1`: TensorFlow turns its oneDNN kernels on by
  default only on CPUs with AVX-512 VNNI/BF16; elsewhere (AMD EPYC Zen 3 in
  CI) a strided Conv3D's gradient runs TensorFlow's generic Eigen kernel,
  100-600x slower (docs/install.md, "Speed on the CPU"). The suite runs as users are
  told to run.
* `JAX_THREEFRY_PARTITIONABLE=0`: JAX 0.10's default ("partitionable")
  threefry compiles its random-number kernel for every new weight shape in
  1.5-6 CPU s on XLA:CPU (0.3 s with the classic kernel), so building a tiny
  3D UNet cost 68 CPU s instead of 19. The CLI does the same
  (`utils.quiet_backend`).
* XLA at a low backend optimisation level (0 on JAX, 1 elsewhere) with the fusion emitters off
  (where XLA knows that flag), for JAX and TensorFlow's compiled loops, here and in subprocesses; in the JAX phase a
  compilation cache shared by the workers of one run (compile-bound; see below).
* Every test runs inside a guard of process-wide flags
  (`tests.testing.process_state`): a test that leaves TensorFlow op
  determinism, a Keras dtype policy, a determinism environment variable ...
  changed fails, and the flags are put back for the next test.
"""

import os


def _threads_per_worker():
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(workers, 1))


_THREADS = str(_threads_per_worker())
if "PYTEST_XDIST_WORKER" in os.environ:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                 "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_var, _THREADS)
    if "XLA_FLAGS" not in os.environ and _THREADS == "1":
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"
# XLA (JAX, and TensorFlow's compiled level-set loops), in this process and the subprocesses it starts: the suite
# is compile-bound, so XLA:CPU's fusion emitters off (the older loop emitter) and a low backend optimisation level
# (default 3): 0 in the JAX phase, 1 elsewhere. Measured on 2 AMD EPYC cores: with the emitters off, JAX subsets
# 133 -> 93 s and 101 -> 72 s; level 1 against 3: Swin UNETR 2D build+forward+fit 44 -> 30 s, the JAX phase 620 ->
# 501 s, TensorFlow's level-set evolution, window and speed tests 127 -> 102 s; level 0 against 1: Swin UNETR 2D 39
# -> 19 CPU s, the JAX phase 16.3 -> 13.4 CPU min, but TensorFlow's compiled 3D level-set window 4.4 -> 12.7 CPU s.
# Level 0 also runs long JAX trainings slower (the LSN small-target training: 20 -> 96 s), so that test trains on
# 16 images, not 64, and at level 3 (the `xla_optimized` fixture). Same results at every setting.
_LEVEL = "0" if os.environ.get("KERAS_BACKEND") == "jax" else "1"
_FLAGS = [f"--xla_backend_optimization_level={_LEVEL}", "--xla_cpu_use_fusion_emitters=false"]


def _jaxlib_before(version):
    # the installed jaxlib's version, read without importing JAX (XLA_FLAGS must be set first)
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        release = installed("jaxlib").split(".")[:3]
    except PackageNotFoundError:
        return False
    return tuple(int("".join(c for c in part if c.isdigit()) or 0) for part in release) < version


# XLA aborts the process on a flag it does not know, and jaxlib before 0.5.3 does not know the fusion-emitter flag
# (measured: 0.5.1 and 0.4.30 abort): below the floor (scripts/floors.txt), but a run against an older JAX still starts
if _jaxlib_before((0, 5, 3)):
    _FLAGS.remove("--xla_cpu_use_fusion_emitters=false")
for _flag in _FLAGS:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
if os.environ.get("KERAS_BACKEND") == "jax":
    # one compilation cache per suite run, shared by the workers, compiles a program seen before once (a zoo
    # model's forward again in its save/load test: 10.6 -> 3.6 s). `scripts/test.sh` empties the cache
    # (.test-reports/) every run, so CI measures a cold start.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), ".test-reports", "jax-cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("JAX_ENABLE_X64", "1")
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_MEDSEG_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import resource  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.testing import process_state  # noqa: E402


def _cpu_seconds():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


_CPU_START = pytest.StashKey[float]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item.stash[_CPU_START] = _cpu_seconds()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Add each test's CPU seconds (this process, its threads and its finished subprocesses; setup, call and
    teardown) to its teardown report, so the junit XML carries a `cpu_s` property: unlike wall time it barely
    changes when other work shares the cores, so `scripts/suite_durations.py` can estimate a quiet machine's
    time from a busy one's run."""
    outcome = yield
    if call.when == "teardown" and _CPU_START in item.stash:
        outcome.get_result().user_properties.append(("cpu_s", round(_cpu_seconds() - item.stash[_CPU_START], 3)))


@pytest.fixture(autouse=True)
def _process_state_guard(request):
    """Fail a test that leaves a process-wide flag changed (and put the flag back for the next test).

    Defined (so set up) before `_reset_keras_state` and torn down after it, so
    a test that changed the dtype policy and relied on that reset still counts
    as restoring it; `monkeypatch` has undone its own changes by then.
    """
    before = process_state.snapshot()
    yield
    changed = process_state.diff(before, process_state.snapshot())
    if changed:
        process_state.restore(before)
        names = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed)
        pytest.fail(f"{request.node.nodeid} left process-wide state changed ({names}); restore it in the test",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Every test starts from the default dtype policy and a fixed seed.

    `clear_session(free_memory=False)`: Keras' default also runs a full
    `gc.collect()`, which took 0.3-1.3 s per test with TensorFlow loaded
    (measured on 2 AMD EPYC cores), minutes over the suite; Python's own
    collector still frees the old models.
    """
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)


@pytest.fixture
def xla_optimized(monkeypatch):
    """On JAX, the test's `jax.jit` programs are compiled at XLA's default optimisation level (3), not the JAX
    phase's 0 (above): for a test that runs its program long enough to repay the slower compile. Measured, the LSN
    small-target training (10 epochs of 2 steps, one thread): compile 0.6 s + 2.3 s per epoch at level 0, 3.4 s +
    0.13 s per epoch at level 3. Elsewhere nothing changes.
    """
    if keras.backend.backend() == "jax":
        import jax

        jit = jax.jit

        def optimized(*args, **kwargs):
            kwargs.setdefault("compiler_options", {"xla_backend_optimization_level": 3})
            return jit(*args, **kwargs)
        monkeypatch.setattr(jax, "jit", optimized)
        from keras.src.backend.jax import trainer  # Keras 3.12 on binds `jit = jax.jit` at import

        if getattr(trainer, "jit", None) is jit:
            monkeypatch.setattr(trainer, "jit", optimized)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def eager_tf_functions():
    """Keras' train/test/predict functions run eagerly on TensorFlow in this test (`tests.testing`'s context)."""
    from tests.testing import eager_tf_functions as eager

    with eager():
        yield
