"""Train a zoo UNet with `keras_medseg.training.train` on 1 and on 2 devices; print the losses as JSON.

Small on purpose (the claim is that 2 devices train like 1): a UNet of one level and 2 filters without
normalization, 16 images of 16 px, global batch 8 (4 per device) -> 2 steps per epoch, 2 epochs.

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

import tempfile  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_medseg.training import train  # noqa: E402

rng = np.random.default_rng(0)
x = rng.standard_normal((16, 16, 16, 1)).astype("float32")
y = (x > 0.3).astype("int32")[..., 0]
data = ((x, y), (x[:8], y[:8]))


class CountReplicas(keras.callbacks.Callback):
    """Records on how many devices the trained model's weights live."""

    def on_train_begin(self, logs=None):
        value = self.model.trainable_weights[0].value
        if backend == "jax":
            self.replicas = len(value.sharding.device_set)
        else:  # a tf MirroredVariable holds one copy per replica
            self.replicas = len(getattr(value, "values", [value]))


def run(name):
    counter = CountReplicas()
    with tempfile.TemporaryDirectory() as out:
        result = train("unet", data, epochs=2, out_dir=out, batch_size=8, verbose=0, seed=0, distribute=name,
                       callbacks=[counter],
                       model_kwargs={"depth": 1, "filters": 2, "batch_norm": False, "learning_rate": 0.01})
    return result.history["loss"], counter.replicas


single, one = run("none")
multi, replicas = run(strategy)
assert one == 1
print(json.dumps({"single": single, "multi": multi, "replicas": replicas}))
