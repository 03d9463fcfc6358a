"""Train a small segmentation model single-device and on 2 devices; print the losses as JSON.

Run in a fresh process (device configuration must precede backend start-up):
    python _run_distributed.py tensorflow mirrored
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python _run_distributed.py jax jax-data-parallel
"""

import json
import os
import sys

backend, strategy = sys.argv[1], sys.argv[2]
os.environ["KERAS_BACKEND"] = backend
if backend == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_medseg.distribute import distribution_scope, num_replicas  # noqa: E402


def model_fn():
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(x)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", name="head")(x)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")
    return model


rng = np.random.default_rng(0)
x = rng.standard_normal((32, 16, 16, 1)).astype("float32")
y = (x > 0.3).astype("float32")


def run(name):
    keras.utils.set_random_seed(0)
    with distribution_scope(name) as scope:
        model = model_fn()
        replicas = num_replicas(scope)
    hist = model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    return hist.history["loss"], replicas


single, _ = run("none")
multi, replicas = run(strategy)
print(json.dumps({"single": single, "multi": multi, "replicas": replicas}))
