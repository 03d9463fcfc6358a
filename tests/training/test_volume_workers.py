"""`VolumeDataset` with worker threads (what `train_volumes` uses by default): the batches are the ones one thread
draws, whatever the order the threads make them in (each thread augments with its own copy of the layer), and
the memory cache stays within its budget."""

from multiprocessing.pool import ThreadPool

import numpy as np

from keras_medseg.data.scans.volume_dataset import VolumeDataset
from keras_medseg.training import default_augmentation
from keras_medseg.training.volumes import default_multiprocessing, default_workers
from tests.data.test_volume_dataset import write_cases


def test_worker_threads_draw_the_batches_of_one_thread(tmp_path, eager_tf_functions):
    root = write_cases(str(tmp_path / "data"), shapes=((20, 24, 16), (28, 18, 22), (16, 16, 30)))
    kwargs = {"patch_size": 12, "batch_size": 2, "steps_per_epoch": 4, "augment": default_augmentation(3, seed=3),
              "seed": 5}
    one = VolumeDataset(root, **kwargs)
    threaded = VolumeDataset(root, cache_bytes=40_000, workers=2, **kwargs)  # room for about one case
    expected = [one[i] for i in range(4)]
    order = [3, 2, 1, 0, 0, 1, 2, 3]
    with ThreadPool(2) as pool:
        got = pool.map(lambda i: threaded[i], order, chunksize=1)
    for i, (x, y) in zip(order, got):
        np.testing.assert_array_equal(x, expected[i][0])
        np.testing.assert_array_equal(y, expected[i][1])
    assert threaded.cached_bytes <= 40_000
    assert 1 <= len(threaded._layers.free) <= 2  # at most one copy of the layer per concurrent thread
    assert default_workers() >= 1 and default_multiprocessing() is True and default_multiprocessing(999) is False
    assert default_multiprocessing(1000) is True
