"""Figures of segmentation results: the colour key of the prediction grids and markers on short histories."""

import numpy as np
import pytest

from keras_medseg.plotting import MARKER_EPOCHS, class_colours, history_plot, prediction_grid


def _legend_entries(fig):
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()], [p.get_facecolor() for p in legend.get_patches()]


def test_prediction_grid_has_a_colour_key_matching_the_panels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((3, 12, 12, 1)).astype("float32")
    y = rng.integers(0, 3, (3, 12, 12))
    names = ["background", "liver", "tumour"]
    fig = prediction_grid(x, y, {"unet": y}, class_names=names, path=str(tmp_path / "grid.png"))
    texts, colours = _legend_entries(fig)
    assert texts == names
    panel = fig.axes[1].images[0]  # ground truth of the first row
    for k, colour in enumerate(colours):
        np.testing.assert_allclose(colour, panel.cmap(panel.norm(k)))
        np.testing.assert_allclose(colour, class_colours(3)[k])
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_prediction_grid_default_names_and_bad_names():
    y = np.zeros((2, 8, 8), dtype="int64")
    y[:, 2:4, 2:4] = 1
    texts, _ = _legend_entries(prediction_grid(np.zeros((2, 8, 8, 1)), y, y))
    assert texts == ["class 0", "class 1"]
    with pytest.raises(ValueError, match="class_names"):
        prediction_grid(np.zeros((2, 8, 8, 1)), y, y, num_classes=3, class_names=["a", "b"])


def test_history_plot_marks_short_histories():
    fig = history_plot({"one_epoch": {"loss": [0.7], "val_loss": [0.6]},
                        "long": {"loss": list(np.linspace(1, 0.1, MARKER_EPOCHS + 5))}}, metrics=("loss",))
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["one_epoch"].get_marker() == "o" and len(lines["one_epoch"].get_xdata()) == 1
    assert lines["one_epoch (val)"].get_marker() == "o"
    assert lines["long"].get_marker() in (None, "None", "")
