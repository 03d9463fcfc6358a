"""Training on several devices, processes and hosts with the backends' own engines.

keras-medseg ships no scheduler and no collective of its own:

* several devices of one process: `distribution_scope("mirrored")`
  (`tf.distribute.MirroredStrategy`) or `distribution_scope("jax-data-parallel")`
  (`keras.distribution.DataParallel`) (`scopes`);
* several processes (one per GPU) and hosts, on every backend: the
  `processes=`, `coordinator=`, `process_id=` arguments of
  `keras_medseg.training.train`, `train_volumes` and `train_patch_classifier`
  (and `keras-medseg train --processes N [--coordinator HOST:PORT
  --process-id I]`):
  `jax.distributed` + `keras.distribution.DataParallel`,
  `tf.distribute.MultiWorkerMirroredStrategy`, or `torch.distributed` with a
  gradient all-reduce (`engines`); `launch` starts local processes and
  watches them (`launcher`), `process_group` joins one (`group`).

In a run over `W` processes the batch size is the global one; each process
trains on its own `1 / W` of every batch (`keras_medseg.data.ArrayBatches`,
`VolumeDataset(num_shards=...)`, `ThreeStepSampler(num_shards=...)`), the
gradients are averaged, so the loss after N steps is that of one process
with the same global batch. Rank 0 alone writes the run folder
(`keras_medseg.training.runner.fit`); a rerun resumes every rank from its
backup.

Example (two local processes, any backend):

>>> keras_medseg.training.train("unet", "data/", epochs=10, batch_size=16, processes=2)  # doctest: +SKIP

Reference: Li et al., "PyTorch Distributed: Experiences on Accelerating Data
Parallel Training", VLDB 2020; Sergeev & Del Balso, "Horovod: fast and easy
distributed deep learning in TensorFlow", 2018 (ring all-reduce).
"""

from keras_medseg.training.distribute.group import (
    DEFAULT_TIMEOUT,
    DistributedError,
    ProcessGroup,
    current_group,
    process_group,
)
from keras_medseg.training.distribute.launcher import distributable, launch
from keras_medseg.training.distribute.scopes import STRATEGIES, distribution_scope, num_replicas

__all__ = [
    "DEFAULT_TIMEOUT",
    "STRATEGIES",
    "DistributedError",
    "ProcessGroup",
    "current_group",
    "distributable",
    "distribution_scope",
    "launch",
    "num_replicas",
    "process_group",
]
