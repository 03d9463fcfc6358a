"""benchmarks/volume_pipeline.py: the smoke preset runs both pipelines on the same volumes."""

import pytest
import volume_pipeline

pytest.importorskip("monai")


@pytest.mark.slow
def test_smoke_run_compares_both_pipelines():
    result = volume_pipeline.run("smoke", progress=False)
    rates = result["rates"]
    assert set(rates) == {"keras_medseg", "monai", "crop_only"}
    assert all(r["patches_per_s_median"] > 0 for r in rates.values())
    assert result["ratio_vs_monai_median"] > 0
    assert "keras-medseg / MONAI" in volume_pipeline.markdown(result)


def test_volumes_have_both_classes(tmp_path):
    import nibabel as nib
    import numpy as np

    pairs = volume_pipeline.write_volumes(str(tmp_path), [(20, 22, 18), (24, 18, 20)])
    for image, label in pairs:
        labels = np.asarray(nib.load(label).dataobj)
        assert nib.load(image).shape == labels.shape and set(np.unique(labels)) == {0, 1, 2}
