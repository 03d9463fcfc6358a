"""Old import path of crash-safe checkpointing; it lives in `keras_medseg.training.checkpointing`."""

from keras_medseg.training.checkpointing import (
                                                 AtomicModelCheckpoint,
                                                 ResumableCSVLogger,
                                                 atomic_save_model,
                                                 resumable_callbacks,
)

__all__ = ["AtomicModelCheckpoint", "ResumableCSVLogger", "atomic_save_model", "resumable_callbacks"]
