"""`_GANBase`: the shared GAN training machinery (optimisers, trackers, fit loops).

On TensorFlow and torch `fit` / `evaluate` are Keras' own loops around
`train_step` (two `GradientTape`s on TensorFlow; Keras' documented torch
pattern `zero_grad`, `backward`, `optimizer.apply` on torch); on JAX a small
epoch loop around one jitted pure step (`keras.StatelessScope` + `jax.vjp`)
and one jitted evaluation. Every backend trains from arrays, a
`keras.utils.PyDataset` or (where TensorFlow is installed) a
`tf.data.Dataset`, with `validation_data`.
"""

import keras
import numpy as np
from keras import ops

from keras_medseg.utils.validation import (
    check_choice,
)
from keras_medseg.zoo.gan._data import _as_tensor, _batches, _num_batches
from keras_medseg.zoo.gan.losses import (
    ADVERSARIAL_LOSSES,
    _default_optimizer,
)

# --------------------------------------------------------------------------
# Shared GAN model machinery
# --------------------------------------------------------------------------


class _GANBase(keras.Model):
    """Common base: sub-network bookkeeping, one optimiser per network, fit loop.

    Subclasses set `generator_names` / `discriminator_names` (attribute names
    of the sub-networks) and implement `compute_losses(x, y, training)`
    returning `(generator_loss, discriminator_loss, logs)`.
    """

    generator_names = ()
    discriminator_names = ()

    def __init__(self, adversarial_loss="non_saturating", **kwargs):
        super().__init__(**kwargs)
        check_choice(adversarial_loss, "adversarial_loss", ADVERSARIAL_LOSSES)
        self.adversarial_loss = adversarial_loss
        self._loss_trackers = {}

    # -- sub-networks and trackers ------------------------------------------
    @property
    def network_names(self):
        return tuple(self.generator_names) + tuple(self.discriminator_names)

    def _make_trackers(self, names):
        self._tracker_names = tuple(names)
        self.loss_trackers = [keras.metrics.Mean(name=n) for n in names]
        self.built = True

    @property
    def metrics(self):
        return list(self.loss_trackers)

    def _update_trackers(self, logs):
        out = {}
        for name, tracker in zip(self._tracker_names, self.loss_trackers):
            tracker.update_state(logs[name])
            out[name] = tracker.result()
        return out

    # -- compile / optimisers -------------------------------------------------
    def compile(self, optimizers=None, jit_compile=False, run_eagerly=False, steps_per_execution=1):
        """Configure the model for training with one optimiser per sub-network.

        Args:
            optimizers: `None` (default: `Adam(2e-4, beta_1=0.5)` for every
                sub-network), one optimiser identifier (string, config dict or
                instance; copied for each sub-network), or a dict
                `{network_name: optimizer}` (missing names get the default).
                Network names: `model.network_names`.
            jit_compile: whether to XLA-compile the training step. Default False.
            run_eagerly: run the training step eagerly (debugging). Default False.
            steps_per_execution: batches per compiled call. Default 1.

        Raises:
            ValueError: unknown network name in `optimizers`, or one optimiser
                instance given for two networks.
        """
        if optimizers is None:
            optimizers = {}
        if not isinstance(optimizers, dict):
            single = optimizers
            optimizers = {}
            for n in self.network_names:
                if isinstance(single, keras.optimizers.Optimizer):
                    optimizers[n] = single.__class__.from_config(single.get_config())
                else:
                    optimizers[n] = single
        unknown = sorted(set(optimizers) - set(self.network_names))
        if unknown:
            raise ValueError(
                f"`optimizers` has keys that are not sub-networks of {self.__class__.__name__} "
                f"(valid: {list(self.network_names)}). Received: optimizers keys={unknown}"
            )
        resolved = {}
        for n in self.network_names:
            spec = optimizers.get(n)
            opt = _default_optimizer() if spec is None else keras.optimizers.get(spec)
            if any(opt is o for o in resolved.values()):
                raise ValueError(
                    "Each sub-network needs its own optimizer instance. Received: the same "
                    f"optimizer for {n!r} and another network."
                )
            resolved[n] = opt
        first = self.network_names[0]
        super().compile(optimizer=resolved[first], jit_compile=jit_compile, run_eagerly=run_eagerly,
                        steps_per_execution=steps_per_execution, auto_scale_loss=False)
        for n, opt in resolved.items():
            setattr(self, f"{n}_optimizer", opt)
        self._gan_compile_config = {
            "optimizers": {n: keras.optimizers.serialize(o) for n, o in resolved.items()},
            "jit_compile": jit_compile,
            "run_eagerly": run_eagerly,
            "steps_per_execution": steps_per_execution,
        }
        self._build_optimizers()
        self._jax_step_key = None

    def _build_optimizers(self):
        for n in self.network_names:
            opt = getattr(self, f"{n}_optimizer", None)
            if opt is not None and not opt.built:
                opt.build(getattr(self, n).trainable_variables)

    @property
    def network_optimizers(self):
        """`{network_name: optimizer}` after `compile()`."""
        return {n: getattr(self, f"{n}_optimizer") for n in self.network_names
                if hasattr(self, f"{n}_optimizer")}

    def get_compile_config(self):
        if self.compiled and hasattr(self, "_gan_compile_config"):
            return dict(self._gan_compile_config)
        return None

    def compile_from_config(self, config):
        optimizers = {n: keras.optimizers.deserialize(c) for n, c in config["optimizers"].items()}
        self.compile(
            optimizers=optimizers,
            jit_compile=config.get("jit_compile", False),
            run_eagerly=config.get("run_eagerly", False),
            steps_per_execution=config.get("steps_per_execution", 1),
        )

    # -- training -------------------------------------------------------------
    def fit(self, x=None, y=None, *args, **kwargs):
        """Train the GAN (Keras `fit` arguments; see the class docstring per backend)."""
        if keras.backend.backend() == "jax":
            return self._jax_fit(x, y, *args, **kwargs)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if keras.backend.backend() == "jax":
            return self._jax_evaluate(x, y, *args, **kwargs)
        return super().evaluate(x, y, *args, **kwargs)

    # -- JAX: a jitted pure step over all variables + a small epoch loop ---------
    def _jax_variables(self):
        seen, out = set(), []
        optimizer_vars = [v for o in self.network_optimizers.values() for v in o.variables]
        for v in list(self.variables) + list(self.metrics_variables) + optimizer_vars:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    def _make_jax_step(self, variables):
        import jax

        index = {id(v): i for i, v in enumerate(variables)}
        gen_ids = [[index[id(v)] for v in getattr(self, n).trainable_variables] for n in self.generator_names]
        disc_ids = [[index[id(v)] for v in getattr(self, n).trainable_variables]
                    for n in self.discriminator_names]
        opt_ids = {n: [index[id(v)] for v in getattr(self, f"{n}_optimizer").variables]
                   for n in self.network_names}
        train_ids = [i for ids in gen_ids + disc_ids for i in ids]

        def losses(train_values, values, x, y):
            values = list(values)
            for i, val in zip(train_ids, train_values):
                values[i] = val
            with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
                g_loss, d_loss, logs = self.compute_losses(x, y, training=True)
                new = [scope.get_current_value(v) for v in variables]
            new = [old if nv is None else nv for old, nv in zip(values, new)]
            return (g_loss, d_loss), (logs, new)

        def step(values, x, y):
            train_values = [values[i] for i in train_ids]
            (g_loss, d_loss), vjp, (logs, values) = jax.vjp(
                lambda tv: losses(tv, values, x, y), train_values, has_aux=True)
            zero = jax.numpy.zeros_like
            (g_grads,) = vjp((jax.numpy.ones_like(g_loss), zero(d_loss)))
            (d_grads,) = vjp((zero(g_loss), jax.numpy.ones_like(d_loss)))
            values = list(values)
            n_gen = sum(len(ids) for ids in gen_ids)
            # g_grads / d_grads are taken w.r.t. [generator weights..., discriminator weights...]
            for names, ids_list, grads, offset in ((self.generator_names, gen_ids, g_grads, 0),
                                                   (self.discriminator_names, disc_ids, d_grads, n_gen)):
                for n, ids in zip(names, ids_list):
                    net_grads = grads[offset:offset + len(ids)]
                    offset += len(ids)
                    opt = getattr(self, f"{n}_optimizer")
                    new_train, new_opt = opt.stateless_apply(
                        [values[i] for i in opt_ids[n]], net_grads, [values[i] for i in ids])
                    for i, val in zip(ids, new_train):
                        values[i] = val
                    for i, val in zip(opt_ids[n], new_opt):
                        values[i] = val
            with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
                results = self._update_trackers(logs)
                new = [scope.get_current_value(v) for v in variables]
            values = [old if nv is None else nv for old, nv in zip(values, new)]
            return values, results

        return jax.jit(step)

    def _make_jax_eval(self, variables):
        import jax

        def evaluate(values, x, y):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                _, _, logs = self.compute_losses(x, y, training=False)
            return logs

        return jax.jit(evaluate)

    def _jax_functions(self):
        if not getattr(self, "compiled", False):
            raise ValueError(f"Call `compile()` before `fit()`. Received: an uncompiled {self.__class__.__name__}")
        variables = self._jax_variables()
        key = hash(tuple(id(v) for v in variables))
        if getattr(self, "_jax_step_key", None) != key:  # trace + compile once per compile()
            self._jax_step_fn = self._make_jax_step(variables)
            self._jax_eval_fn = self._make_jax_eval(variables)
            self._jax_step_key = key
        return variables, self._jax_step_fn, self._jax_eval_fn

    def _jax_check_unsupported(self, method, **options):
        unsupported = sorted(k for k, v in options.items() if v is not None)
        if unsupported:
            raise NotImplementedError(
                f"On the JAX backend {self.__class__.__name__}.{method} does not take {unsupported} "
                f"(it takes arrays, a `keras.utils.PyDataset`, a `tf.data.Dataset` or an iterable of "
                f"`(x, y)` batches, and validation_data). Received: {unsupported}"
            )

    def _jax_run_eval(self, eval_fn, variables, x, y, batch_size, steps):
        values = [v.value for v in variables]
        total, count = {}, 0
        for bx, by in _batches(x, y, batch_size, shuffle=False, steps=steps):
            self.check_training_data(bx, by)
            n = int(np.shape(bx)[0])
            logs = eval_fn(values, bx, by)
            for k, v in logs.items():
                total[k] = total.get(k, 0.0) + float(v) * n
            count += n
        if count == 0:
            raise ValueError("The evaluation data gave no batch. Received: an empty dataset")
        return {k: v / count for k, v in total.items()}

    def _jax_fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
                 validation_split=None, validation_data=None, shuffle=True, class_weight=None,
                 sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
                 validation_batch_size=None, validation_freq=1):
        self._jax_check_unsupported("fit", validation_split=validation_split or None,
                                    class_weight=class_weight, sample_weight=sample_weight)
        if x is None:
            raise ValueError(f"`x` is needed to fit {self.__class__.__name__}. Received: x=None")
        variables, step_fn, eval_fn = self._jax_functions()
        batch_size = batch_size or 32
        steps = steps_per_epoch or _num_batches(x, batch_size)
        if verbose == "auto":
            verbose = 1
        cbs = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                           verbose=verbose, epochs=epochs, steps=steps, model=self)
        val = None
        if validation_data is not None:
            val = validation_data
            if isinstance(val, (tuple, list)):
                vx, vy, _ = keras.utils.unpack_x_y_sample_weight(tuple(val))
                val = (vx, vy)
            else:
                val = (val, None)
        self.stop_training = False
        cbs.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            self.reset_metrics()
            cbs.on_epoch_begin(epoch)
            values = [v.value for v in variables]
            for b, (bx, by) in enumerate(_batches(x, y, batch_size, shuffle=shuffle, steps=steps_per_epoch)):
                if b == 0:
                    self.check_training_data(bx, by)
                cbs.on_train_batch_begin(b)
                values, logs = step_fn(values, bx, by)
                cbs.on_train_batch_end(b, logs)
            for v, val_ in zip(variables, values):
                v.assign(val_)
            logs = {k: float(v) for k, v in logs.items()}
            if val is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self._jax_run_eval(eval_fn, variables, val[0], val[1],
                                              validation_batch_size or batch_size, validation_steps)
                logs.update({f"val_{k}": v for k, v in val_logs.items()})
            cbs.on_epoch_end(epoch, logs)
            if isinstance(x, keras.utils.PyDataset):
                x.on_epoch_end()
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        return self.history

    def _jax_evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                      callbacks=None, return_dict=False, **kwargs):
        self._jax_check_unsupported("evaluate", sample_weight=sample_weight, callbacks=callbacks,
                                    **{k: v for k, v in kwargs.items() if v is not None})
        variables, _, eval_fn = self._jax_functions()
        logs = self._jax_run_eval(eval_fn, variables, x, y, batch_size or 32, steps)
        return logs if return_dict else [logs[n] for n in self._tracker_names]

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        if keras.backend.backend() == "jax":
            self._jax_check_unsupported("train_on_batch", sample_weight=sample_weight, class_weight=class_weight)
            self._jax_fit(x, y, batch_size=int(np.shape(x)[0]), epochs=1, verbose=0, shuffle=False)
            logs = {k: v[-1] for k, v in self.history.history.items()}
            return logs if return_dict else [logs[n] for n in self._tracker_names]
        return super().train_on_batch(x, y, sample_weight=sample_weight, class_weight=class_weight,
                                      return_dict=return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        if keras.backend.backend() == "jax":
            return self._jax_evaluate(x, y, batch_size=int(np.shape(x)[0]), sample_weight=sample_weight,
                                      return_dict=return_dict)
        return super().test_on_batch(x, y, sample_weight=sample_weight, return_dict=return_dict)

    def train_step(self, data):
        """One adversarial step on TensorFlow (`GradientTape`) or torch (`backward`)."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if keras.backend.backend() == "torch":  # torch's train_on_batch passes NumPy x through
            x, y = keras.tree.map_structure(_as_tensor, (x, y))
        self.check_training_data(x, y)
        gen_vars = [getattr(self, n).trainable_variables for n in self.generator_names]
        disc_vars = [getattr(self, n).trainable_variables for n in self.discriminator_names]
        backend = keras.backend.backend()
        if backend == "tensorflow":
            g_grads, d_grads, logs = self._tf_gradients(x, y, gen_vars, disc_vars)
        elif backend == "torch":
            logs = self._torch_step(x, y, gen_vars, disc_vars)
            return self._update_trackers(logs)
        else:
            raise NotImplementedError(
                f"{self.__class__.__name__}.train_step runs on 'tensorflow' and 'torch'; on 'jax' "
                f"`fit` uses its own jitted step. Received: KERAS_BACKEND={backend!r}")
        self._apply_gradients(g_grads, d_grads, gen_vars, disc_vars)
        return self._update_trackers(logs)

    def _apply_gradients(self, g_grads, d_grads, gen_vars, disc_vars):
        names = tuple(self.generator_names) + tuple(self.discriminator_names)
        for n, grads, variables in zip(names, list(g_grads) + list(d_grads), gen_vars + disc_vars):
            getattr(self, f"{n}_optimizer").apply(grads, variables)

    def _tf_gradients(self, x, y, gen_vars, disc_vars):
        import tensorflow as tf  # the TensorFlow trainer calls this step

        with tf.GradientTape(persistent=True) as tape:
            g_loss, d_loss, logs = self.compute_losses(x, y, training=True)
        g_grads = tape.gradient(g_loss, gen_vars)
        d_grads = tape.gradient(d_loss, disc_vars)
        del tape
        return g_grads, d_grads, logs

    def _torch_step(self, x, y, gen_vars, disc_vars):
        # Keras' documented torch pattern (zero_grad, backward, then optimizer.apply under no_grad),
        # once per loss: the generator loss's gradients are read off the generator weights, the
        # discriminator loss's off the discriminator weights, exactly as the two tapes on TensorFlow.
        import torch

        self.zero_grad()
        g_loss, d_loss, logs = self.compute_losses(x, y, training=True)
        g_loss.backward(retain_graph=True)
        g_grads = [[None if v.value.grad is None else v.value.grad.detach().clone() for v in vs]
                   for vs in gen_vars]
        self.zero_grad()
        d_loss.backward()
        d_grads = [[v.value.grad for v in vs] for vs in disc_vars]
        logs = {k: v.detach() for k, v in logs.items()}
        with torch.no_grad():
            self._apply_gradients(g_grads, d_grads, gen_vars, disc_vars)
        return logs

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if keras.backend.backend() == "torch":  # torch's train_on_batch passes NumPy x through
            x, y = keras.tree.map_structure(_as_tensor, (x, y))
        self.check_training_data(x, y)
        _, _, logs = self.compute_losses(x, y, training=False)
        return self._update_trackers(logs)

    def check_training_data(self, x, y):  # pragma: no cover - overridden
        raise NotImplementedError

    def compute_losses(self, x, y, training=False):  # pragma: no cover - overridden
        raise NotImplementedError

    # -- serialisation ----------------------------------------------------------
    def _base_config(self):
        config = {"name": self.name, "trainable": self.trainable,
                  "adversarial_loss": self.adversarial_loss}
        for n in self.network_names:
            config[n] = keras.saving.serialize_keras_object(getattr(self, n))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for n in cls.generator_names + cls.discriminator_names:
            if isinstance(config.get(n), dict):
                config[n] = keras.saving.deserialize_keras_object(config[n])
        return cls(**config)

    @staticmethod
    def _predict_in_batches(network, arrays, batch_size):
        n = int(arrays[0].shape[0])
        outs = []
        for start in range(0, n, batch_size):
            chunk = [a[start:start + batch_size] for a in arrays]
            out = network(chunk if len(chunk) > 1 else chunk[0], training=False)
            outs.append(ops.convert_to_numpy(out))
        return np.concatenate(outs, axis=0)


def _check_image_batch(x, name, spatial_dims, channels, multiple):
    shape = tuple(x.shape)
    if len(shape) != spatial_dims + 2:
        raise ValueError(
            f"`{name}` must be a batch of {spatial_dims}D channels-last images of rank "
            f"{spatial_dims + 2}. Received: {name}.shape={shape}"
        )
    if channels is not None and shape[-1] is not None and shape[-1] != channels:
        raise ValueError(
            f"`{name}` must have {channels} channel(s). Received: {name}.shape={shape}"
        )
    for s in shape[1:-1]:
        if s is not None and s % multiple:
            raise ValueError(
                f"Spatial sizes of `{name}` must be divisible by {multiple}. "
                f"Received: {name}.shape={shape}"
            )


# --------------------------------------------------------------------------
# Conditional GAN
# --------------------------------------------------------------------------
