"""`imexnet` / `resnet_seg`: same geometry, parameter counts, forward/fit on Q-tips, bad arguments."""

import numpy as np
import pytest
from keras import ops

from keras_medseg import zoo
from keras_medseg.data import qtips
from keras_medseg.layers import IMEXBlock

pytestmark = pytest.mark.backend_agnostic

SMALL = {"input_size": 16, "stages": ((2, 4), (1, 8)), "num_classes": 4}


def _blocks(model):
    return [layer for layer in model.layers if isinstance(layer, IMEXBlock)]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_same_geometry_params_differ_by_L_kernels(spatial_dims):
    imex = zoo.build("imexnet", spatial_dims=spatial_dims, **SMALL)
    res = zoo.build("resnet_seg", spatial_dims=spatial_dims, **SMALL)
    # Same layers in the same order, apart from the model-name prefix.
    assert [type(layer).__name__ for layer in imex.layers] == [type(layer).__name__ for layer in res.layers]
    assert [layer.name.replace("imexnet", "M") for layer in imex.layers] == \
           [layer.name.replace("resnet_seg", "M") for layer in res.layers]
    assert all(b.implicit for b in _blocks(imex)) and not any(b.implicit for b in _blocks(res))
    # L kernels: 3**d taps x width per block; 2 blocks of width 4 and 1 block of width 8.
    l_params = 3**spatial_dims * (2 * 4 + 1 * 8)
    assert imex.count_params() - res.count_params() == l_params
    assert sum(int(np.prod(b.implicit_kernel.shape)) for b in _blocks(imex)) == l_params
    assert imex.output_shape == res.output_shape == (None,) + (16,) * spatial_dims + (4,)


def test_paper_geometry_parameter_counts():
    imex = zoo.build("imexnet")
    res = zoo.build("resnet_seg")
    assert len(_blocks(imex)) == 12
    assert [b.filters for b in _blocks(imex)] == [64] * 4 + [128] * 4 + [256] * 4
    assert imex.count_params() - res.count_params() == 9 * 4 * (64 + 128 + 256)


def test_named_layers():
    model = zoo.build("imexnet", **SMALL)
    names = {layer.name for layer in model.layers}
    for expected in ["imexnet_stem_conv", "imexnet_stage0_block0", "imexnet_stage0_block1", "imexnet_stage1_pool",
                     "imexnet_stage1_conv", "imexnet_stage1_block0", "imexnet_upsample", "imexnet_head",
                     "imexnet_output"]:
        assert expected in names


@pytest.mark.parametrize("name", ["imexnet", "resnet_seg"])
def test_fit_on_qtips_lowers_loss(name):
    images, labels = qtips(16, size=16, seed=0, normalize=True)
    model = zoo.build(name, **SMALL, learning_rate=1e-2)
    history = model.fit(images, labels, epochs=3, batch_size=8, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]
    assert {"accuracy", "mean_iou", "mean_dice"} <= set(history)
    probs = ops.convert_to_numpy(model(images[:2], training=False))
    assert probs.shape == (2, 16, 16, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_no_coarsening_keeps_resolution():
    model = zoo.build("imexnet", input_size=12, stages=((1, 4), (1, 6)), coarsen=False)
    assert "imexnet_upsample" not in {layer.name for layer in model.layers}
    assert model.output_shape == (None, 12, 12, 4)


def test_resnet_seg_accepts_any_size():
    model = zoo.build("resnet_seg", input_size=None, stages=((1, 4), (1, 8)))
    out = model(np.zeros((1, 24, 20, 1), "float32"))
    assert tuple(out.shape) == (1, 24, 20, 4)


class TestBadArguments:
    def test_input_size_required_for_imexnet(self):
        with pytest.raises(ValueError, match=r"`input_size` must be given.*Received: input_size=None"):
            zoo.build("imexnet", input_size=None)

    def test_input_size_divisible(self):
        with pytest.raises(ValueError, match=r"`input_size` must be divisible by 4.*\(30, 30\)"):
            zoo.build("imexnet", input_size=30, stages=((1, 4), (1, 4), (1, 4)))

    @pytest.mark.parametrize("stages", [(), ((1, 4), (0, 8)), ((1, 4, 2),)])
    def test_bad_stages(self, stages):
        with pytest.raises(ValueError, match=r"`stages` must be .*Received: stages="):
            zoo.build("resnet_seg", stages=stages)

    def test_bad_spatial_dims(self):
        with pytest.raises(ValueError, match=r"spatial_dims.*Received: spatial_dims=4"):
            zoo.build("imexnet", spatial_dims=4)

    def test_bad_num_classes(self):
        with pytest.raises(ValueError, match=r"`num_classes` must be >= 2. Received: num_classes=1"):
            zoo.build("imexnet", num_classes=1)

    def test_bad_normalization(self):
        with pytest.raises(ValueError, match=r"`normalization` must be one of.*Received: normalization='group'"):
            zoo.build("resnet_seg", normalization="group")

    def test_kernel_larger_than_coarsest_grid(self):
        with pytest.raises(ValueError, match=r"`kernel_size` must not exceed the coarsest grid \(4 px"):
            zoo.build("imexnet", input_size=16, stages=((1, 4), (1, 4), (1, 4)), kernel_size=5)
