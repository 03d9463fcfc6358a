"""Zoo models' outputs and loss gradients on the active backend, for `tests/test_cross_backend.py`.

`python -m tests.testing.cross_backend OUT_DIR NAME [NAME ...]` computes the
models one after the other in ONE process whose backend is fixed by
`KERAS_BACKEND` (the backend's import and first compilations are paid once,
not once per model); the test calls `compute` in its own process for the
backend it already runs on (TensorFlow in CI), so that backend's 8 s import
is not paid again. Weights: the first backend to run writes each model's
weights to `OUT_DIR/NAME.weights.h5` (atomically); a process started with
`--wait-for-weights` waits for that file instead of writing it, so it can
import its backend while the first backend is still building the models.
Results go to `OUT_DIR/NAME.BACKEND.npz` (atomically); a failing process
writes its traceback to `OUT_DIR/BACKEND.error`.
"""

import os
import sys
import time
import traceback

import keras
import numpy as np
from keras import ops


def weights_path(out_dir, name):
    return os.path.join(out_dir, name + ".weights.h5")


def result_path(out_dir, name, backend):
    return os.path.join(out_dir, f"{name}.{backend}.npz")


def error_path(out_dir, backend):
    return os.path.join(out_dir, backend + ".error")


def compute(out_dir, name):
    """Write `OUT_DIR/NAME.<backend>.npz` with the model's outputs, loss and weight gradients; return its path."""
    from keras_medseg import zoo
    from tests.testing import value_and_grad

    backend = keras.backend.backend()
    spec = zoo.get_spec(name)
    keras.utils.set_random_seed(0)
    model = zoo.build(name, **spec.tiny)
    x, y = zoo.example_batch(name, model, batch_size=2, seed=0)
    model(x, training=False)
    path = weights_path(out_dir, name)
    if not os.path.exists(path):
        tmp = os.path.join(out_dir, f"{name}.{os.getpid()}.tmp.weights.h5")
        model.save_weights(tmp)
        os.replace(tmp, path)  # readers never see a half-written file
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
    out = result_path(out_dir, name, backend)
    tmp = os.path.join(out_dir, f"{name}.{backend}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)
    return out


def main(argv):
    wait = "--wait-for-weights" in argv
    out_dir, *names = [a for a in argv if a != "--wait-for-weights"]
    try:
        for name in names:
            deadline = time.monotonic() + 600
            while wait and not os.path.exists(weights_path(out_dir, name)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {weights_path(out_dir, name)} after 600 s")
                time.sleep(0.05)
            keras.backend.clear_session(free_memory=False)  # fresh layer names, as in a new process
            compute(out_dir, name)
    except BaseException:
        with open(error_path(out_dir, keras.backend.backend()), "w") as f:
            f.write(traceback.format_exc())
        raise


if __name__ == "__main__":
    main(sys.argv[1:])
