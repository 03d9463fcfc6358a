"""Backend-specific automatic differentiation in one place.

Keras 3 has no `ops.grad`, so everything in keras-medseg that needs a gradient
outside `fit()` (gradient checks, saliency maps, activation maximisation) goes
through `value_and_grad`, which uses `tf.GradientTape` on TensorFlow and
`jax.value_and_grad` on JAX and `torch.autograd.grad` on torch.
"""

import keras
from keras import ops


def value_and_grad(fn, *args):
    """Evaluate a scalar function and its gradient with respect to every argument.

    Args:
        fn: callable taking `*args` (each a tensor or a nested list/tuple/dict
            of tensors) and returning a scalar tensor.
        *args: the arguments; gradients are taken with respect to all of them.

    Returns:
        `(value, grads)` where `grads` is a tuple with the same structure as
        `args`. Arguments that do not influence the value get zero gradients.

    Raises:
        NotImplementedError: on a backend other than TensorFlow, JAX and torch.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value, grads = jax.value_and_grad(lambda a: fn(*a))(tuple(args))
        return value, tuple(grads)
    if backend == "tensorflow":
        import tensorflow as tf

        args = keras.tree.map_structure(ops.convert_to_tensor, tuple(args))
        with tf.GradientTape() as tape:
            for leaf in keras.tree.flatten(args):
                tape.watch(leaf)
            value = fn(*args)
        grads = tape.gradient(value, args, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return value, tuple(grads)
    if backend == "torch":
        import torch

        def leaf(x):
            return ops.convert_to_tensor(x).detach().requires_grad_(True)

        args = keras.tree.map_structure(leaf, tuple(args))
        leaves = keras.tree.flatten(args)
        with torch.enable_grad():
            value = fn(*args)
            if value.requires_grad:
                grads = torch.autograd.grad(value, leaves, allow_unused=True)
            else:  # no argument reaches the value (e.g. all behind stop_gradient): zero gradients
                grads = [None] * len(leaves)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
        return value.detach(), tuple(keras.tree.pack_sequence_as(args, grads))
    raise NotImplementedError(
        f"keras-medseg computes gradients on the 'tensorflow', 'jax' and 'torch' backends only. "
        f"Received: KERAS_BACKEND={backend!r}"
    )


def grad(fn, *args):
    """Gradient of a scalar function with respect to every argument (see `value_and_grad`)."""
    return value_and_grad(fn, *args)[1]
