"""benchmarks/predict_memory.py: the smoke preset measures real child processes and reports the ratios."""

import predict_memory
import pytest


@pytest.mark.slow
def test_smoke_run(monkeypatch):
    monkeypatch.setattr(predict_memory, "_have_monai", lambda: False)  # the MONAI child is the slow one
    result = predict_memory.run("smoke", progress=False)
    assert result["settings"] == predict_memory.PRESETS["smoke"]
    peak, limit = result["keras_medseg"]["min"], result["physical_limit_mb"]
    # The children's own high-water marks: predicting holds at least the runtime, and on a 64x64x40 scan little more.
    assert result["baseline"]["min"] > 100 and peak >= 0.9 * result["baseline"]["min"]
    assert result["ratio_to_limit"] == pytest.approx(peak / limit)
    assert "monai" not in result and result["meets_target"] == (peak < 4096)
    text = predict_memory.markdown(result)
    assert "physical limit" in text and "64x64x40" in text


def test_bad_preset():
    with pytest.raises(ValueError, match="preset"):
        predict_memory.run("gpu")
