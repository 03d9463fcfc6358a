"""benchmarks/_common.py helpers shared by the benchmark scripts."""

import numpy as np
import pytest
from _common import dice


def test_dice_matches_sklearn_f1(rng):
    from sklearn.metrics import f1_score

    for _ in range(5):
        t = rng.random((4, 9, 7)) < 0.3
        p = rng.random((4, 9, 7)) < 0.4
        assert dice(t, p) == pytest.approx(f1_score(t.ravel(), p.ravel()))
    assert dice(np.zeros(5), np.zeros(5)) == 1.0
    assert dice(np.ones(5), np.zeros(5)) == 0.0
    with pytest.raises(ValueError, match="same size"):
        dice(np.ones(5), np.ones(6))


def test_benchmark_main_runs_writes_and_passes_extra_arguments(tmp_path, capsys, monkeypatch):
    import types

    import _common

    calls, written = [], []
    mod = types.ModuleType("fake_bench", "A fake benchmark.")
    mod.NAME, mod.PRESETS = "fake_bench", {"smoke": {}, "cpu": {}}
    mod.run = lambda preset, out_dir=None, progress=True, **kw: calls.append((preset, out_dir, progress, kw)) or {
        "preset": preset}
    mod.markdown = lambda result, fig_prefix="": f"section {result['preset']} {fig_prefix}"
    monkeypatch.setattr(_common, "write_results", lambda *a, **k: written.append(a))
    extra = [(("--model-path",), {"default": None})]
    assert _common.benchmark_main(mod, ["--preset", "smoke", "--quiet", "--out-dir", str(tmp_path),
                                        "--model-path", "m.keras"], extra) == 0
    assert calls == [("smoke", str(tmp_path), False, {"model_path": "m.keras"})] and written == []
    assert _common.benchmark_main(mod, [], extra) == 0  # cpu: results written with the README figure prefix
    assert calls[-1] == ("cpu", None, True, {"model_path": None})
    assert written == [("fake_bench", {"preset": "cpu"}, "section cpu results/fake_bench/")]
    assert "section cpu" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _common.benchmark_main(mod, ["--preset", "paper"])
