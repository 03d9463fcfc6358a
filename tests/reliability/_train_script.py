"""A small resumable training run: `python _train_script.py OUT_DIR EPOCHS`.

Used by test_resume.py, which SIGKILLs it mid-epoch and runs it again.
"""

import os
import sys

import keras
import numpy as np

from keras_medseg.checkpointing import resumable_callbacks

out_dir, epochs = sys.argv[1], int(sys.argv[2])
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.standard_normal((256, 16, 16, 1)).astype("float32")
y = (x > 0).astype("float32")
inp = keras.Input((16, 16, 1))
h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
out = keras.layers.Conv2D(1, 1, activation="sigmoid")(h)
model = keras.Model(inp, out)
model.compile(optimizer="adam", loss="binary_crossentropy")


class Slow(keras.callbacks.Callback):
    """Makes each epoch last long enough to be killed in the middle."""

    def on_train_batch_end(self, batch, logs=None):
        import time

        time.sleep(0.05)


model.fit(x, y, validation_split=0.25, batch_size=16, epochs=epochs, verbose=0,
          callbacks=[Slow()] + resumable_callbacks(out_dir, backup_every=5))
print("FINISHED", flush=True)
