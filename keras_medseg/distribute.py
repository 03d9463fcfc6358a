"""Old import path of multi-device training; it lives in `keras_medseg.training.distribute`."""

from keras_medseg.training.distribute import STRATEGIES, distribution_scope, num_replicas

__all__ = ["STRATEGIES", "distribution_scope", "num_replicas"]
