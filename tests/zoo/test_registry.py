"""Registry: build/list/describe/get_spec and its error messages."""

import keras
import numpy as np
import pytest

from keras_medseg import zoo
from keras_medseg.zoo import registry

pytestmark = pytest.mark.backend_agnostic


@pytest.fixture
def toy_model():
    """Register a tiny model for the duration of one test."""

    @zoo.register_model("toy_dense", spatial_dims=(2,), tiny={"units": 2})
    def toy_dense(units=4, use_bias=True, rate=0.1, activation="relu", sizes=(1, 2), spatial_dims=2):
        """A toy model.

        More text.
        """
        inputs = keras.Input((3,))
        outputs = keras.layers.Dense(units, use_bias=use_bias, activation=activation)(inputs)
        model = keras.Model(inputs, outputs)
        model.compile("sgd", "mse")
        return model

    yield "toy_dense"
    registry._REGISTRY.pop("toy_dense", None)


def test_list_and_describe(toy_model):
    models = zoo.list()
    assert models[toy_model] == "A toy model."
    assert list(models) == sorted(models)
    assert "unet" in models
    info = zoo.describe(toy_model)
    assert info["arguments"] == {"units": 4, "use_bias": True, "rate": 0.1, "activation": "relu",
                                 "sizes": (1, 2), "spatial_dims": 2}
    assert info["spatial_dims"] == (2,)


def test_build_merges_kwargs(toy_model):
    model = zoo.build(toy_model, units=7, rate=1)  # an int is a valid number
    assert model.outputs[0].shape[-1] == 7


def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError, match="Did you mean 'unet'"):
        zoo.build("unte")
    with pytest.raises(ValueError, match="Unknown zoo model"):
        zoo.describe("no_such_model_xyz")
    with pytest.raises(TypeError, match="name"):
        zoo.get_spec(3)


def test_unknown_argument_is_named(toy_model):
    with pytest.raises(ValueError, match="unit.*Did you mean 'units'"):
        zoo.build(toy_model, unit=3)


@pytest.mark.parametrize(
    "arg, value",
    [("units", "four"), ("units", 2.5), ("units", True), ("use_bias", 1), ("rate", "x"),
     ("activation", 3), ("sizes", 5)],
)
def test_ill_typed_argument_is_named(toy_model, arg, value):
    with pytest.raises(ValueError, match=f"Argument `{arg}`.*Received: {arg}="):
        zoo.build(toy_model, **{arg: value})


def test_unsupported_spatial_dims(toy_model):
    with pytest.raises(ValueError, match="spatial_dims"):
        zoo.build(toy_model, spatial_dims=3)


def test_duplicate_registration_and_missing_default(toy_model):
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model(toy_model)(lambda units=1: None)
    with pytest.raises(TypeError, match="default"):
        zoo.register_model("toy_no_default")(lambda units: None)
    assert "toy_no_default" not in zoo.list()


def test_default_example_batch(toy_model):
    model = zoo.build(toy_model)
    x, y = zoo.example_batch(toy_model, model, batch_size=3, seed=0)
    assert x.shape == (3, 3) and y.shape == (3, 4)
    assert set(np.unique(y)) <= {0.0, 1.0}
    x2, _ = zoo.example_batch(toy_model, model, batch_size=3, seed=0)
    np.testing.assert_array_equal(x, x2)


def test_size_arguments_take_per_axis_tuples():
    @zoo.register_model("toy_sized", spatial_dims=(2,))
    def toy_sized(input_size=8, units=2):
        inputs = keras.Input((3,))
        return keras.Model(inputs, keras.layers.Dense(units)(inputs))

    try:
        zoo.build("toy_sized", input_size=(8, 16))
        with pytest.raises(ValueError, match="input_size"):
            zoo.build("toy_sized", input_size=(8, "a"))
        with pytest.raises(ValueError, match="units"):
            zoo.build("toy_sized", units=(1, 2))
    finally:
        registry._REGISTRY.pop("toy_sized", None)
