"""benchmarks/qtips.py: smoke run, settings validation, the L initialisation and the receptive-field helper."""

import os

import numpy as np
import pytest
import qtips


@pytest.mark.slow
def test_smoke_run(tmp_path, eager_tf_functions):
    result = qtips.run("smoke", out_dir=str(tmp_path), progress=False)
    assert result["preset"] == "smoke" and result["settings"] == qtips.PRESETS["smoke"]
    assert result["seconds"] > 0
    for name in qtips.NETS:
        net = result["nets"][name]
        assert len(net["iou"]) == len(net["dice"]) == 4
        assert 0.0 <= net["accuracy"] <= 1.0 and np.isfinite(net["val_loss"])
        assert len(net["history"]["loss"]) == len(net["history"]["val_loss"]) == qtips.PRESETS["smoke"]["epochs"]
        assert net["mean_iou_all"] == pytest.approx(np.nanmean(net["iou"]))
        assert net["mean_iou_rods"] == pytest.approx(np.nanmean(net["iou"][1:]))
        assert os.path.exists(tmp_path / net["model_file"])
    # the nets differ by the L kernels only: 3x3 taps x width per block
    stages = qtips.PRESETS["smoke"]["stages"]
    assert result["param_difference"] == sum(9 * b * w for b, w in stages)
    for fig in result["figures"]:
        path = tmp_path / fig
        assert fig.endswith(".png") and path.exists() and path.stat().st_size < 300_000
    text = qtips.markdown(result, fig_prefix="results/qtips/")
    assert "| network | parameters | background |" in text
    assert "](results/qtips/predictions.png)" in text
    assert ("does not meet" in text) == (min(result["gap_mean_iou_all"], result["gap_mean_iou_rods"]) < 0.1)
    import json

    json.dumps(result)  # plain Python types only


def test_bad_settings():
    with pytest.raises(ValueError, match="preset"):
        qtips.get_settings("gpu")
    with pytest.raises(ValueError, match="overrides"):
        qtips.get_settings("cpu", {"epoch": 3})
    with pytest.raises(ValueError, match="l_init"):
        qtips.get_settings("cpu", {"l_init": "laplace"})
    with pytest.raises(ValueError, match="optimizer"):
        qtips.get_settings("cpu", {"optimizer": "rmsprop"})
    assert qtips.get_settings("cpu", {"epochs": 2})["epochs"] == 2
    assert qtips.PRESETS["cpu"]["epochs"] != 2  # the preset itself is untouched


def test_multiscale_laplacian_kernel():
    from keras import ops

    from keras_medseg.ops import implicit_conv_solve

    h, grid, width = 0.5, 32, 6
    kernel = qtips.multiscale_laplacian_kernel(width, grid, h, min_length=1.0)
    assert kernel.shape == (3, 3, width) and kernel.dtype == np.float32
    lengths = np.geomspace(1.0, grid, width)
    stencil = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
    np.testing.assert_allclose(kernel, stencil[..., None] * lengths**2 / np.sqrt(h), rtol=1e-6)
    # A constant image passes the solve unchanged (the stencil sums to 0) ...
    const = np.full((1, grid, grid, width), 3.0, dtype=np.float32)
    np.testing.assert_allclose(ops.convert_to_numpy(implicit_conv_solve(const, kernel, h)), const, rtol=1e-5)
    # ... and a point source spreads further on the channels with longer diffusion lengths.
    point = np.zeros((1, grid, grid, width), dtype=np.float32)
    point[0, 0, 0, :] = 1.0
    out = ops.convert_to_numpy(implicit_conv_solve(point, kernel, h))[0]
    far = out[grid // 4, 0, :] / out[0, 0, :]  # response 8 px away relative to the centre
    assert np.all(np.abs(far[lengths < 4]) < 0.01)  # lengths 1, 2 px: local
    assert np.all(np.diff(far[lengths >= 4]) > 0) and far[-1] > 0.9  # 4..32 px: wider and wider
    # 3D stencil: 7 points, zero sum
    k3 = qtips.multiscale_laplacian_kernel(2, 8, 1.0, rank=3)
    assert k3.shape == (3, 3, 3, 2) and np.count_nonzero(k3[..., 0]) == 7
    np.testing.assert_allclose(k3.sum(axis=(0, 1, 2)), 0.0, atol=1e-3)


@pytest.mark.parametrize("stages,coarsen", [([[1, 4], [1, 8]], False), ([[2, 4]], False), ([[1, 4], [1, 4]], True)])
def test_receptive_field_matches_the_resnet(stages, coarsen):
    """Perturb one input pixel of the explicit net; the changed outputs lie within `receptive_field`."""
    settings = qtips.get_settings("smoke", {"stages": stages, "coarsen": coarsen, "size": 32})
    model = qtips.build_models(settings)["resnet_seg"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 32, 32, 1)).astype("float32")
    x2 = x.copy()
    x2[0, 16, 16, 0] += 5.0
    diff = np.abs(model.predict(x2, verbose=0) - model.predict(x, verbose=0)).max(axis=-1)[0]
    rows, cols = np.nonzero(diff > 1e-6)
    reach = int(max(np.abs(rows - 16).max(), np.abs(cols - 16).max()))
    radius = qtips.receptive_field(settings)
    if coarsen:
        # pooling/upsampling grids shift the reach by up to a pooling cell
        assert reach <= radius + 2
    else:
        assert reach == radius
