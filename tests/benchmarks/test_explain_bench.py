"""benchmarks/explain.py: the kept old eager baseline is faithful, goals are judged right, the smoke run works."""

import importlib.util
import os

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")


def _module():
    spec = importlib.util.spec_from_file_location("bench_explain", os.path.join(BENCH, "explain.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_old_eager_occlusion_loop_gives_the_library_map(rng):
    from keras_medseg import explain

    bench = _module()
    model = bench.small_cnn(16)
    x = rng.uniform(0, 1, (1, 16, 16, 3)).astype("float32")
    old = bench.old_eager_occlusion_loop(model, x, 1, 4, 4)
    np.testing.assert_allclose(explain.occlusion(model, x, 1, patch=4, stride=4), old, rtol=1e-4, atol=1e-6)


def test_goals_are_judged_on_the_median_ratio():
    bench = _module()

    def t(lo, med):
        return {"min": lo, "median": med, "times": [lo, med]}

    result = {"models": {"small_cnn": {
        "saliency": {"keras-medseg": t(1.0, 1.0), "tf-keras-vis": t(1.5, 2.5)},
        "occlusion": {"keras-medseg": t(1.0, 2.0), "limit": t(1.0, 1.0), "old eager loop": t(5.0, 30.0)},
        "lime": {"keras-medseg": t(1.0, 1.0), "lime": {"error": "ImportError: no lime"}},
    }}}
    rows = {(r[2], r[4]): r for r in bench.rows_of(result, "tensorflow")}
    assert rows[("saliency", "tf-keras-vis")][6:] == ["1.50x / 2.50x", ">= 2.0x", "yes"]
    assert rows[("occlusion", "limit")][6:] == ["1.00 / 2.00 (time / limit)", "<= 1.3", "**no**"]
    assert rows[("occlusion", "old eager loop")][6:] == ["5.00x / 15.00x", ">= 10.0x", "yes"]
    assert rows[("lime", "lime")][5].startswith("fails: ImportError")


def test_interleaved_reports_a_failing_case_and_rotates():
    bench = _module()
    calls = []
    out = bench.interleaved([("a", lambda: calls.append("a")), ("b", lambda: calls.append("b")),
                             ("bad", lambda: 1 / 0)], repeats=2)
    assert out["bad"]["error"].startswith("ZeroDivisionError")
    assert calls == ["a", "b", "a", "b", "b", "a"]  # warm-up, then the order rotates every round
    assert len(out["a"]["times"]) == 2 and out["a"]["min"] <= out["a"]["median"]


@pytest.mark.slow
def test_smoke_run():
    bench = _module()
    result = bench.run("smoke", progress=False)
    methods = result["models"]["small_cnn"]
    assert set(methods) == {"saliency", "gradcam", "smoothgrad", "lime", "occlusion"}
    assert methods["occlusion"]["limit"]["median"] > 0
    assert set(result["models"]["tiny_cnn"]["occlusion"]) == {"keras-medseg", "limit", "old eager loop"}
    assert "old eager loop" in bench.markdown(result)
