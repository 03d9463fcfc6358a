"""One zoo model's outputs and loss gradients on the active backend, for `tests/test_cross_backend.py`.

`python -m tests.testing.cross_backend OUT_DIR NAME` runs it in a subprocess
whose backend is fixed by `KERAS_BACKEND`; the test calls `compute` in its
own process for the backend it already runs on (TensorFlow in CI), so that
backend's 8 s import is not paid again. The first backend to run writes the
model's weights to `OUT_DIR/NAME.weights.h5`; every backend loads them.
"""

import os
import sys

import keras
import numpy as np
from keras import ops


def compute(out_dir, name):
    """Write `OUT_DIR/<backend>.npz` with the model's outputs, loss and weight gradients; return its path."""
    from keras_medseg import zoo
    from tests.testing import value_and_grad

    backend = keras.backend.backend()
    spec = zoo.get_spec(name)
    keras.utils.set_random_seed(0)
    model = zoo.build(name, **spec.tiny)
    x, y = zoo.example_batch(name, model, batch_size=2, seed=0)
    model(x, training=False)
    path = os.path.join(out_dir, name + ".weights.h5")
    if not os.path.exists(path):
        model.save_weights(path)
    model.load_weights(path)
    pred = model(x, training=False)
    loss_fn = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(tv):
        out, _ = model.stateless_call(list(tv), non_trainable, x, training=True)
        return ops.mean(loss_fn(y, out))

    if backend == "jax":  # one compiled program: op-by-op tracing of the backward pass took minutes
        import jax
        value, grads = jax.jit(jax.value_and_grad(loss))(trainable)
    else:
        value, (grads,) = value_and_grad(loss, trainable)
    arrays = {f"{name}/output/{i}": np.asarray(ops.convert_to_numpy(o), "float64")
              for i, o in enumerate(keras.tree.flatten(pred))}
    arrays.update({f"{name}/grad/{i}": np.asarray(ops.convert_to_numpy(g), "float64") for i, g in enumerate(grads)})
    arrays[f"{name}/loss"] = np.array(float(ops.convert_to_numpy(value)))
    out = os.path.join(out_dir, backend + ".npz")
    np.savez(out, **arrays)
    return out


if __name__ == "__main__":
    compute(sys.argv[1], sys.argv[2])
