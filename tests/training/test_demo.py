"""The demo's settings, its closing sentence and the `L` initialisation it uses."""

import numpy as np
import pytest

from keras_medseg.training.demo import HEADLINE, comparison_sentence, demo_settings


def test_comparison_sentence_directions():
    ahead = comparison_sentence(0.25)
    assert "ahead of ResNet by +0.250" in ahead and "the same direction as the README headline" in ahead
    assert f"{HEADLINE['imexnet']:.3f} vs {HEADLINE['resnet_seg']:.3f}" in ahead
    assert "smaller gap" in comparison_sentence(0.05)
    assert "NOT the direction" in comparison_sentence(-0.02)


def test_demo_settings_are_fair():
    data, fit, model = demo_settings()
    assert data["size"] == 48 and fit["epochs"] == 10 and model["l_init"] == "multiscale"
    # Rods are at least size // 2 = 24 px long: beyond both ends of the explicit net's receptive field
    # (stem + 2 convolutions per block, radius 1 each).
    radius = 1 + 2 * sum(b for b, _ in model["stages"])
    assert 2 * radius < data["size"] // 2


@pytest.mark.backend_agnostic
def test_multiscale_laplacian_symbol():
    from keras import ops

    from keras_medseg.layers import MultiscaleLaplacian

    kernel = ops.convert_to_numpy(MultiscaleLaplacian(max_length=32.0, h=2.0)((3, 3, 4)))
    lengths = np.geomspace(1.0, 32.0, 4)
    for c in range(4):
        np.testing.assert_allclose(kernel[..., c].sum(), 0.0, atol=1e-3)  # passes the image mean
        np.testing.assert_allclose(kernel[1, 1, c], -4.0 * lengths[c] ** 2 / np.sqrt(2.0), rtol=1e-6)
        np.testing.assert_allclose(kernel[0, 1, c], lengths[c] ** 2 / np.sqrt(2.0), rtol=1e-6)
        assert kernel[0, 0, c] == 0.0
    with pytest.raises(ValueError, match=r"3x3 or 3x3x3.*shape=\(5, 5, 4\)"):
        MultiscaleLaplacian(8.0)((5, 5, 4))
    with pytest.raises(ValueError, match="max_length"):
        MultiscaleLaplacian(0.0)


@pytest.mark.backend_agnostic
def test_builder_l_init_and_schedule():
    import keras

    from keras_medseg.layers import IMEXBlock
    from keras_medseg.zoo.imexnet import imex_segmenter

    model = imex_segmenter(input_size=16, stages=((1, 4),), coarsen=False, l_init="multiscale", decay_steps=20)
    block = next(layer for layer in model.layers if isinstance(layer, IMEXBlock))
    kernel = keras.ops.convert_to_numpy(block.implicit_kernel)
    np.testing.assert_allclose(kernel[1, 1, -1], -4.0 * 16.0**2, rtol=1e-6)  # longest length = the grid
    from keras_medseg.zoo.imexnet import learning_schedule

    assert isinstance(model.optimizer._learning_rate, keras.optimizers.schedules.CosineDecay)
    schedule = learning_schedule(1e-3, 20)
    rates = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 1, 2, 11, 20)]
    # warm-up over 10 % of the 20 steps to 1e-3, then cosine down to 0
    np.testing.assert_allclose(rates, [0.0, 5e-4, 1e-3, 0.5e-3, 0.0], atol=1e-9)
    with pytest.raises(ValueError, match=r"l_init.*Received: l_init='laplace'"):
        imex_segmenter(input_size=16, stages=((1, 4),), l_init="laplace")
