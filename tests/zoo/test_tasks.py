"""Every zoo model declares its task in `@register_model(task=...)`; the command line reads the same task."""

import pytest

from keras_medseg import zoo
from keras_medseg.commands import _catalog as catalog
from keras_medseg.zoo.registry import TASKS


def test_every_model_declares_its_task():
    for name in zoo.list():
        static, live = catalog.describe(name), zoo.describe(name)
        assert static["declares_task"], f"@register_model of {name!r} states no task=... (one of {TASKS})"
        assert static["task"] == live["task"] in TASKS, name
    tasks = {name: zoo.describe(name)["task"] for name in ("unet", "vgg16_classifier", "fpn_detector", "cgan")}
    assert tasks == {"unet": "segmentation", "vgg16_classifier": "classification", "fpn_detector": "detection",
                     "cgan": "generation"}


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="task.*Received: task='painting'"):
        zoo.register_model("toy_painter", task="painting")
    assert "toy_painter" not in zoo.list()


def test_train_routes_on_the_declared_task():
    assert catalog.untrainable_reason("cyclegan").startswith("cyclegan is a GAN")
    assert "detector" in catalog.untrainable_reason("fpn_detector")
    assert "no training" in catalog.untrainable_reason("lse")
    assert catalog.untrainable_reason("attention_classifier") is None
    assert "patch store" in catalog.training_route("attention_classifier")  # a classifier needs a patch store
