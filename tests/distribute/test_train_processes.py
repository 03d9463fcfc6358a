"""`keras-medseg train MODEL --data DIR --processes 2` end to end: the command, the real folder data path
(`resolve_source` -> `load_data` -> `ArrayBatches` split by rank), the saved model.

One test, on JAX (the cheapest backend to start; run from the TensorFlow phase as subprocesses, so it is not
marked backend_agnostic): a tiny UNet on 10 PNG images of 16x16 (8 training, 2 validation, global batch 4,
2 epochs) is trained by the real command line with `--processes 2` and, at the same time, with
`--processes 1`. It checks what a user relies on: exit status 0 and one report; one run folder written by
rank 0 alone (an audit hook in every process records what it writes there), holding the best checkpoint, a
`log.csv` of 2 epochs and no temporary file; a model that loads and predicts; the same losses per epoch as
one process with the same global batch (relative 1e-5: float32 sums in another order).

Resuming a run over two processes (a rank killed mid-epoch, the same call again) is tested on every backend
with a toy job in `test_processes.py`; a rerun of this command would cost another 25 CPU s.
"""

import os

import numpy as np
import skimage.io

from tests.distribute import _cli


def test_train_command_over_two_processes_writes_one_run_and_matches_one_process(tmp_path):
    tmp = str(tmp_path)
    data = _cli.setup(tmp)
    two, one = os.path.join(tmp, "two"), os.path.join(tmp, "one")
    before = os.times()
    # both at once (the one-process run fills the cores while the two ranks start and wait for each other)
    runs = {"two": _cli.start(tmp, data, two, "--processes", "2"),
            "one": _cli.start(tmp, data, one, "--processes", "1")}
    stdout = {name: _cli.finish(proc)[0] for name, proc in runs.items()}
    after = os.times()
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    print(f"CPU seconds of the two commands and their processes: {cpu:.1f}")
    # one report, by the launching command (rank 0's result), naming the run folder
    assert stdout["two"].count("Validation Dice/IoU of the best checkpoint (2 cases)") == 1, stdout["two"]
    assert stdout["two"].count(f"checkpoint  {two}") == 1, stdout["two"]

    # the run folder: rank 0 wrote it alone, no temporary file and no second copy of anything is left
    rows = _cli.check_run_folder(tmp, two)

    # the saved model loads (safe_mode) and predicts class scores of every pixel
    from keras_medseg.utils.model_io import load_model

    model = load_model(os.path.join(two, "best.keras"))
    image = skimage.io.imread(os.path.join(data, "images", "c0.png")).astype("float32")
    x = ((image - image.mean()) / image.std())[None, :, :, None]
    scores = np.asarray(model.predict(x, verbose=0))
    assert scores.shape[:3] == (1, 16, 16) and np.all(np.isfinite(scores))

    # one process, the same global batch: the same losses each epoch (the batches are drawn from the seed
    # and the epoch alone and split by rank; JAX computes the loss and gradients of the global batch)
    _cli.assert_same_losses(rows, _cli.read_log(one))
