"""benchmarks/volume_pipeline.py: the smoke preset runs both pipelines on the same volumes."""

import pytest
import volume_pipeline

pytest.importorskip("monai")


@pytest.mark.slow
def test_smoke_run_compares_every_pipeline_and_limit():
    # one backend in this process (the script runs each backend in a child process the same way)
    import torch

    threads = torch.get_num_threads()
    try:
        result = volume_pipeline.measure("smoke", progress=False)
    finally:
        torch.set_num_threads(threads)  # measure() sets one thread, as the benchmark runs
    rates = result["rates"]
    assert set(rates) == {"keras_medseg", "keras_medseg_other", "warp_limit", "scipy_map_coordinates",
                          "crop_only", "crop_with_margin", "monai"}
    assert all(r["patches_per_s_median"] > 0 and r["cpu_s_median"] >= 0 for r in rates.values())
    assert set(result["ratios"]) >= {"vs_warp_limit", "vs_monai", "vs_crop_with_margin"}
    assert all(q["median"] > 0 for q in result["ratios"].values())
    table = volume_pipeline.markdown({"preset": "smoke", "threads": 1, "backends": {result["backend"]: result}})
    assert "vs MONAI, wall / CPU" in table and result["backend"] in table


def test_volumes_have_both_classes(tmp_path):
    import nibabel as nib
    import numpy as np

    pairs = volume_pipeline.write_volumes(str(tmp_path), [(20, 22, 18), (24, 18, 20)])
    for image, label in pairs:
        labels = np.asarray(nib.load(label).dataobj)
        assert nib.load(image).shape == labels.shape and set(np.unique(labels)) == {0, 1, 2}
