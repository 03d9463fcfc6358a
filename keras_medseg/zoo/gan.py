"""Generative adversarial networks: `cgan`, `pix2pix` and `cyclegan`.

Three `keras.Model` subclasses that hold their sub-networks (generators and
discriminators, plain functional models), one optimiser per sub-network, and a
custom `train_step`, so they train with a plain `model.fit(...)`:

* `ConditionalGAN` (`zoo.build("cgan")`): DCGAN-style generator `G(z | y)` and
  discriminator `D(x | y)` conditioned on an integer class label `y`.
  `fit(images, labels)`; `generate(labels)`.
* `Pix2Pix` (`zoo.build("pix2pix")`): paired image-to-image translation, UNet
  (or ResNet) generator, PatchGAN discriminator on (input, output) pairs, loss
  `adversarial + l1_weight * |G(x) - y|_1` (`l1_weight = 100`).
  `fit(source, target)`; `translate(images)`.
* `CycleGAN` (`zoo.build("cyclegan")`): unpaired translation with two
  generators `G_AB`, `G_BA`, two PatchGAN discriminators and the cycle loss
  `cycle_weight * (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1)` (+ an
  optional identity loss). `fit(images_a, images_b)`; `translate(images,
  direction="a2b")`.

The adversarial losses work on discriminator logits. The default generator
loss is the non-saturating `-log D(G(z))` (the seed recommends it over the
minimax `log(1 - D(G(z)))`, whose gradient vanishes when the discriminator
wins); `"minimax"` and `"least_squares"` (LSGAN) are available.

Images live in `[-1, 1]` (generators end in `tanh`); channels-last, 2D
`(batch, H, W, C)` or 3D `(batch, D, H, W, C)` with every spatial size
divisible by 4 (by `2 ** depth` for the UNet generator).

Backends: on TensorFlow `fit`/`evaluate` are Keras' own loops around the
custom `train_step` (tf.GradientTape). On JAX `fit` runs a small epoch loop
around one jitted pure step (`keras.StatelessScope` + `jax.vjp`, every
optimiser's `stateless_apply`) that takes in-memory arrays and the arguments
`batch_size, epochs, verbose, callbacks, shuffle, initial_epoch`; datasets,
validation data and `evaluate` raise a `NotImplementedError` there (and on
torch every training call does). Building, saving/loading, `generate` and
`translate` work on every backend.

Reference: seed `004_762146f54cf05d81` (J. Wolterink, "Deep Learning II:
Interpretability & Adversarial Methods"); Goodfellow et al. 2014 (GAN); Mirza &
Osindero 2014 (cGAN); Radford et al. 2016 (DCGAN); Isola et al. 2017
(pix2pix); Zhu et al. 2017 (CycleGAN).
"""

import keras
import numpy as np
from keras import layers, ops

from keras_medseg.utils.serialization import register
from keras_medseg.utils.validation import (
    check_choice,
    check_positive,
    check_positive_int,
    check_spatial_dims,
)
from keras_medseg.zoo.registry import register_model

ADVERSARIAL_LOSSES = ("non_saturating", "minimax", "least_squares")
NORMS = ("batch", "instance", "none")
DIRECTIONS = ("a2b", "b2a")


def _default_optimizer(learning_rate=2e-4, beta_1=0.5):
    """Adam(2e-4, beta_1=0.5), the DCGAN / pix2pix / CycleGAN setting."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1)


# --------------------------------------------------------------------------
# Adversarial losses on discriminator logits (float32)
# --------------------------------------------------------------------------


def discriminator_loss(real_logits, fake_logits, kind="non_saturating"):
    """Discriminator loss `-(E log D(x) + E log(1 - D(G(z)))) / 2` (or the LSGAN one).

    Args:
        real_logits: discriminator outputs (logits) on real samples, any shape.
        fake_logits: discriminator outputs on generated samples.
        kind: `"non_saturating"` or `"minimax"` (both use the cross-entropy
            discriminator loss) or `"least_squares"`
            (`((D(x) - 1)^2 + D(G(z))^2) / 2`).

    Returns:
        Scalar float32 tensor.
    """
    real = ops.cast(real_logits, "float32")
    fake = ops.cast(fake_logits, "float32")
    if kind == "least_squares":
        return 0.5 * (ops.mean(ops.square(real - 1.0)) + ops.mean(ops.square(fake)))
    # -log sigmoid(l) = softplus(-l), -log(1 - sigmoid(l)) = softplus(l)
    return 0.5 * (ops.mean(ops.softplus(-real)) + ops.mean(ops.softplus(fake)))


def generator_loss(fake_logits, kind="non_saturating"):
    """Generator adversarial loss.

    Args:
        fake_logits: discriminator logits on generated samples.
        kind: `"non_saturating"`: `-E log D(G(z))` (default);
            `"minimax"`: `E log(1 - D(G(z)))`; `"least_squares"`:
            `E (D(G(z)) - 1)^2`.

    Returns:
        Scalar float32 tensor.
    """
    fake = ops.cast(fake_logits, "float32")
    if kind == "least_squares":
        return ops.mean(ops.square(fake - 1.0))
    if kind == "minimax":
        return -ops.mean(ops.softplus(fake))
    return ops.mean(ops.softplus(-fake))


def _accuracy(real_logits, fake_logits, kind):
    threshold = 0.5 if kind == "least_squares" else 0.0
    real = ops.cast(ops.cast(real_logits, "float32") > threshold, "float32")
    fake = ops.cast(ops.cast(fake_logits, "float32") <= threshold, "float32")
    return 0.5 * (ops.mean(real) + ops.mean(fake))


def _l1(a, b):
    return ops.mean(ops.abs(ops.cast(a, "float32") - ops.cast(b, "float32")))


# --------------------------------------------------------------------------
# N-D building blocks (one implementation for 2D and 3D)
# --------------------------------------------------------------------------


def _conv(spatial_dims, *args, **kwargs):
    return (layers.Conv2D if spatial_dims == 2 else layers.Conv3D)(*args, **kwargs)


def _conv_transpose(spatial_dims, *args, **kwargs):
    return (layers.Conv2DTranspose if spatial_dims == 2 else layers.Conv3DTranspose)(*args, **kwargs)


def _norm(norm, name):
    if norm == "batch":
        return layers.BatchNormalization(name=name)
    if norm == "instance":
        # one group per channel = instance normalisation
        return layers.GroupNormalization(groups=-1, name=name)
    return layers.Identity(name=name)


# Keras default initialiser: the DCGAN N(0, 0.02) makes small networks output ~1e-4.
_INIT = "glorot_uniform"


def cgan_generator(image_size=28, channels=1, num_classes=10, latent_dim=64, filters=64,
                   spatial_dims=2, name="cgan_generator"):
    """DCGAN generator `G(z | y)`: (latent vector, class label) -> image in [-1, 1].

    Dense projection of `[z, embed(y)]` to a `(image_size / 4)^d x 2 filters`
    block, then two stride-2 transposed convolutions (batch norm, LeakyReLU),
    `tanh` output.

    Inputs: `z` `(batch, latent_dim)` and `label` `(batch, 1)` int.
    Output: `(batch, S, S, channels)` (2D) or `(batch, S, S, S, channels)` (3D).
    """
    base = image_size // 4
    z = keras.Input((latent_dim,), name=f"{name}_z")
    label = keras.Input((1,), dtype="int32", name=f"{name}_label")
    emb = layers.Embedding(num_classes, latent_dim, name=f"{name}_embedding")(label)
    emb = layers.Flatten(name=f"{name}_embedding_flat")(emb)
    h = layers.Concatenate(name=f"{name}_concat")([z, emb])
    h = layers.Dense(base ** spatial_dims * 2 * filters, use_bias=False, kernel_initializer=_INIT,
                     name=f"{name}_project")(h)
    h = layers.BatchNormalization(name=f"{name}_project_norm")(h)
    h = layers.LeakyReLU(0.2, name=f"{name}_project_act")(h)
    h = layers.Reshape((base,) * spatial_dims + (2 * filters,), name=f"{name}_reshape")(h)
    h = _conv_transpose(spatial_dims, filters, 4, strides=2, padding="same", use_bias=False,
                        kernel_initializer=_INIT, name=f"{name}_stage1_conv")(h)
    h = layers.BatchNormalization(name=f"{name}_stage1_norm")(h)
    h = layers.LeakyReLU(0.2, name=f"{name}_stage1_act")(h)
    h = _conv_transpose(spatial_dims, channels, 4, strides=2, padding="same",
                        kernel_initializer=_INIT, name=f"{name}_stage2_conv")(h)
    out = layers.Activation("tanh", dtype="float32", name=f"{name}_output")(h)
    return keras.Model([z, label], out, name=name)


def cgan_discriminator(image_size=28, channels=1, num_classes=10, filters=64, spatial_dims=2,
                       name="cgan_discriminator"):
    """DCGAN discriminator `D(x | y)`: (image, label) -> one logit.

    The label is embedded as an extra image channel; two stride-2 convolutions
    with LeakyReLU and dropout, then a dense logit.

    Inputs: `image` `(batch, S, S[, S], channels)` and `label` `(batch, 1)` int.
    Output: `(batch, 1)` logits.
    """
    spatial = (image_size,) * spatial_dims
    image = keras.Input(spatial + (channels,), name=f"{name}_image")
    label = keras.Input((1,), dtype="int32", name=f"{name}_label")
    emb = layers.Embedding(num_classes, int(np.prod(spatial)), name=f"{name}_embedding")(label)
    emb = layers.Reshape(spatial + (1,), name=f"{name}_label_map")(emb)
    h = layers.Concatenate(name=f"{name}_concat")([image, emb])
    for i, f in enumerate((filters, 2 * filters), start=1):
        h = _conv(spatial_dims, f, 4, strides=2, padding="same", kernel_initializer=_INIT,
                  name=f"{name}_stage{i}_conv")(h)
        h = layers.LeakyReLU(0.2, name=f"{name}_stage{i}_act")(h)
        h = layers.Dropout(0.3, name=f"{name}_stage{i}_dropout")(h)
    h = layers.Flatten(name=f"{name}_flatten")(h)
    out = layers.Dense(1, dtype="float32", name=f"{name}_logit")(h)
    return keras.Model([image, label], out, name=name)


def patchgan_discriminator(channels=2, filters=64, num_layers=3, norm="batch", spatial_dims=2,
                           name="patchgan"):
    """PatchGAN discriminator: image -> map of per-patch real/fake logits.

    `num_layers` stride-2 4^d convolutions (the first without normalisation),
    one stride-1 convolution and a 1-channel stride-1 logit convolution
    (70x70 receptive field for `num_layers=3` as in pix2pix).

    Input: `(batch, H, W, channels)` or `(batch, D, H, W, channels)`, any
    spatial size. Output: `(batch, H / 2^L, W / 2^L, 1)` logits (3D alike).
    """
    inp = keras.Input((None,) * spatial_dims + (channels,), name=f"{name}_input")
    h = inp
    for i in range(num_layers):
        f = filters * 2 ** min(i, 3)
        h = _conv(spatial_dims, f, 4, strides=2, padding="same", use_bias=(i == 0),
                  kernel_initializer=_INIT, name=f"{name}_stage{i + 1}_conv")(h)
        if i > 0:
            h = _norm(norm, f"{name}_stage{i + 1}_norm")(h)
        h = layers.LeakyReLU(0.2, name=f"{name}_stage{i + 1}_act")(h)
    f = filters * 2 ** min(num_layers, 3)
    h = _conv(spatial_dims, f, 4, padding="same", use_bias=False, kernel_initializer=_INIT,
              name=f"{name}_stage{num_layers + 1}_conv")(h)
    h = _norm(norm, f"{name}_stage{num_layers + 1}_norm")(h)
    h = layers.LeakyReLU(0.2, name=f"{name}_stage{num_layers + 1}_act")(h)
    out = _conv(spatial_dims, 1, 4, padding="same", dtype="float32", kernel_initializer=_INIT,
                name=f"{name}_logits")(h)
    return keras.Model(inp, out, name=name)


def resnet_generator(in_channels=1, out_channels=1, filters=32, num_residual_blocks=6,
                     norm="instance", spatial_dims=2, name="resnet_generator"):
    """CycleGAN ResNet generator: image -> image in [-1, 1] of the same spatial size.

    7^d convolution, two stride-2 downsampling convolutions, residual blocks,
    two stride-2 transposed convolutions, 7^d convolution with `tanh`.

    Input: `(batch, H, W, in_channels)` or `(batch, D, H, W, in_channels)`,
    spatial sizes divisible by 4. Output: same spatial size, `out_channels`.
    """
    inp = keras.Input((None,) * spatial_dims + (in_channels,), name=f"{name}_input")

    def conv_norm_act(h, f, k, stride, tag, transpose=False, act=True):
        make = _conv_transpose if transpose else _conv
        h = make(spatial_dims, f, k, strides=stride, padding="same", use_bias=False,
                 kernel_initializer=_INIT, name=f"{tag}_conv")(h)
        h = _norm(norm, f"{tag}_norm")(h)
        return layers.ReLU(name=f"{tag}_act")(h) if act else h

    h = conv_norm_act(inp, filters, 7, 1, f"{name}_stem")
    h = conv_norm_act(h, 2 * filters, 3, 2, f"{name}_down1")
    h = conv_norm_act(h, 4 * filters, 3, 2, f"{name}_down2")
    for i in range(num_residual_blocks):
        r = conv_norm_act(h, 4 * filters, 3, 1, f"{name}_stage{i + 1}_a")
        r = conv_norm_act(r, 4 * filters, 3, 1, f"{name}_stage{i + 1}_b", act=False)
        h = layers.Add(name=f"{name}_stage{i + 1}_add")([h, r])
    h = conv_norm_act(h, 2 * filters, 3, 2, f"{name}_up1", transpose=True)
    h = conv_norm_act(h, filters, 3, 2, f"{name}_up2", transpose=True)
    h = _conv(spatial_dims, out_channels, 7, padding="same", kernel_initializer=_INIT,
              name=f"{name}_head_conv")(h)
    out = layers.Activation("tanh", dtype="float32", name=f"{name}_output")(h)
    return keras.Model(inp, out, name=name)


def unet_generator(in_channels=1, out_channels=1, filters=32, depth=3, spatial_dims=2,
                   name="unet_generator"):
    """UNet generator with a `tanh` head, built from the zoo's `unet` builder.

    Input/output: `(batch, H, W, C)` or `(batch, D, H, W, C)`, spatial sizes
    divisible by `2 ** depth`.
    """
    from keras_medseg.zoo.unet import unet_backbone

    return unet_backbone(spatial_dims=spatial_dims, input_size=None, in_channels=in_channels,
                         out_channels=out_channels, depth=depth, filters=filters, batch_norm=True,
                         output_activation="tanh", name=name)


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
    def _check_backend(self, what):
        backend = keras.backend.backend()
        if backend != "tensorflow":
            raise NotImplementedError(
                f"{self.__class__.__name__}.{what}() runs on the 'tensorflow' backend ('jax' supports "
                f"`fit` on in-memory arrays; building, saving, loading, generate/translate work "
                f"on every backend). Received: KERAS_BACKEND={backend!r}"
            )

    def fit(self, x=None, y=None, *args, **kwargs):
        if keras.backend.backend() == "jax":
            return self._jax_fit(x, y, *args, **kwargs)
        self._check_backend("fit")
        return super().fit(x, y, *args, **kwargs)

    # -- JAX: a jitted pure step over all variables + a small epoch loop ---------
    _JAX_FIT_ARGS = ("batch_size", "epochs", "verbose", "callbacks", "shuffle", "initial_epoch")

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

    def _jax_fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
                 shuffle=True, initial_epoch=0, **kwargs):
        unsupported = sorted(k for k in kwargs if kwargs[k] is not None)
        if unsupported or x is None or not hasattr(x, "shape"):
            raise NotImplementedError(
                f"On the JAX backend {self.__class__.__name__}.fit takes in-memory arrays `x`, `y` and "
                f"the arguments {list(self._JAX_FIT_ARGS)} (use the TensorFlow backend for datasets, "
                f"validation data and the other `fit` options). Received: x of type "
                f"{type(x).__name__}, extra arguments {unsupported}"
            )
        if not getattr(self, "compiled", False):
            raise ValueError(f"Call `compile()` before `fit()`. Received: an uncompiled {self.__class__.__name__}")
        x = np.asarray(x)
        n = int(x.shape[0])
        if y is not None:
            y = np.asarray(y)
            if int(y.shape[0]) != n:
                raise ValueError(
                    f"`x` and `y` must hold the same number of samples. Received: x.shape={x.shape}, "
                    f"y.shape={y.shape}"
                )
        self.check_training_data(x, y)
        batch_size = batch_size or 32
        steps = -(-n // batch_size)
        variables = self._jax_variables()
        key = hash(tuple(id(v) for v in variables))
        if getattr(self, "_jax_step_key", None) != key:  # trace + compile once per compile()
            self._jax_step_fn = self._make_jax_step(variables)
            self._jax_step_key = key
        step_fn = self._jax_step_fn
        if verbose == "auto":
            verbose = 1
        cbs = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                           verbose=verbose, epochs=epochs, steps=steps, model=self)
        rng = np.random.default_rng()
        self.stop_training = False
        cbs.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            self.reset_metrics()
            cbs.on_epoch_begin(epoch)
            order = rng.permutation(n) if shuffle else np.arange(n)
            values = [v.value for v in variables]
            for b in range(steps):
                cbs.on_train_batch_begin(b)
                idx = order[b * batch_size:(b + 1) * batch_size]
                values, logs = step_fn(values, x[idx], None if y is None else y[idx])
                cbs.on_train_batch_end(b, logs)
            for v, val in zip(variables, values):
                v.assign(val)
            logs = {k: float(v) for k, v in logs.items()}
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        return self.history

    def evaluate(self, *args, **kwargs):
        self._check_backend("evaluate")
        return super().evaluate(*args, **kwargs)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        if keras.backend.backend() == "jax" and sample_weight is None and class_weight is None:
            self._jax_fit(x, y, batch_size=int(np.shape(x)[0]), epochs=1, verbose=0, shuffle=False)
            logs = {k: v[-1] for k, v in self.history.history.items()}
            return logs if return_dict else [logs[n] for n in self._tracker_names]
        self._check_backend("train_on_batch")
        return super().train_on_batch(x, y, sample_weight=sample_weight, class_weight=class_weight,
                                      return_dict=return_dict)

    def test_on_batch(self, *args, **kwargs):
        self._check_backend("test_on_batch")
        return super().test_on_batch(*args, **kwargs)

    def train_step(self, data):
        import tensorflow as tf  # the TensorFlow trainer calls this step

        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.check_training_data(x, y)
        gen_vars = [getattr(self, n).trainable_variables for n in self.generator_names]
        disc_vars = [getattr(self, n).trainable_variables for n in self.discriminator_names]
        with tf.GradientTape(persistent=True) as tape:
            g_loss, d_loss, logs = self.compute_losses(x, y, training=True)
        g_grads = tape.gradient(g_loss, gen_vars)
        d_grads = tape.gradient(d_loss, disc_vars)
        del tape
        for n, grads, variables in zip(self.generator_names, g_grads, gen_vars):
            getattr(self, f"{n}_optimizer").apply(grads, variables)
        for n, grads, variables in zip(self.discriminator_names, d_grads, disc_vars):
            getattr(self, f"{n}_optimizer").apply(grads, variables)
        return self._update_trackers(logs)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
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


@register
class ConditionalGAN(_GANBase):
    """Class-conditional DCGAN: generator `G(z | y)` and discriminator `D(x | y)`.

    Trained by `model.fit(images, labels)`: each step draws `z ~ N(0, I)`,
    updates the discriminator on `(real, y)` vs `(G(z | y), y)` and the
    generator with the non-saturating loss `-log D(G(z | y) | y)`.

    Args:
        generator: `keras.Model` `[z (batch, latent_dim), label (batch, 1)] -> image`
            (see `cgan_generator`).
        discriminator: `keras.Model` `[image, label] -> (batch, 1)` logits.
        latent_dim: size of `z`.
        num_classes: number of class labels.
        adversarial_loss: `"non_saturating"` (default), `"minimax"` or
            `"least_squares"`.
        seed: int seed of the latent sampler. Default None.

    Data: `x` images `(batch, S, S, C)` (2D) or `(batch, S, S, S, C)` (3D) in
    [-1, 1]; `y` int labels `(batch,)` or `(batch, 1)`.

    Raises:
        ValueError: bad `latent_dim`/`num_classes`/`adversarial_loss`;
            `fit` without labels or with images of the wrong shape.

    Example:
    ```python
    model = keras_medseg.zoo.build("cgan", image_size=16, num_classes=3)
    x, y = keras_medseg.data.translation.labelled_shapes(64, image_size=16, num_classes=3)
    model.fit(x, y, batch_size=16, epochs=1)
    samples = model.generate([0, 1, 2])
    ```

    Reference: seed 004 (conditional GAN); Mirza & Osindero 2014; Radford et al. 2016.
    """

    generator_names = ("generator",)
    discriminator_names = ("discriminator",)

    def __init__(self, generator, discriminator, latent_dim=64, num_classes=10,
                 adversarial_loss="non_saturating", seed=None, **kwargs):
        super().__init__(adversarial_loss=adversarial_loss, **kwargs)
        check_positive_int(latent_dim, "latent_dim")
        check_positive_int(num_classes, "num_classes", minimum=1)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.image_shape = tuple(generator.output_shape[1:])
        self._make_trackers(["d_loss", "g_loss", "d_accuracy"])

    def call(self, inputs, training=False):
        """`[z, labels] -> images` (the generator)."""
        return self.generator(inputs, training=training)

    def check_training_data(self, x, y):
        if y is None:
            raise ValueError(
                "ConditionalGAN.fit needs class labels: call `fit(images, labels)`. "
                "Received: y=None"
            )
        _check_image_batch(x, "x", len(self.image_shape) - 1, self.image_shape[-1], 1)
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"Images must have shape (batch,) + {self.image_shape}. Received: x.shape={tuple(x.shape)}"
            )

    def compute_losses(self, x, y, training=False):
        labels = ops.reshape(ops.cast(y, "int32"), (-1, 1))
        batch = ops.shape(x)[0]
        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        fake = self.generator([z, labels], training=training)
        d_real = self.discriminator([x, labels], training=training)
        d_fake = self.discriminator([fake, labels], training=training)
        d_loss = discriminator_loss(d_real, d_fake, self.adversarial_loss)
        g_loss = generator_loss(d_fake, self.adversarial_loss)
        acc = _accuracy(d_real, d_fake, self.adversarial_loss)
        return g_loss, d_loss, {"d_loss": d_loss, "g_loss": g_loss, "d_accuracy": acc}

    def generate(self, labels, z=None, seed=None, batch_size=64):
        """Sample images for the given class labels.

        Args:
            labels: int sequence/array `(n,)` in `[0, num_classes)`.
            z: optional latent vectors `(n, latent_dim)`; drawn from N(0, I)
                with `seed` when None.
            seed: int seed for `z`. Default None.
            batch_size: generator batch size. Default 64.

        Returns:
            NumPy float32 array `(n,) + image_shape` in [-1, 1].

        Raises:
            ValueError: labels out of range or `z` of the wrong shape.
        """
        labels = np.asarray(labels).reshape(-1)
        if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"`labels` must be a non-empty sequence of ints. Received: labels={labels!r}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"`labels` must lie in [0, {self.num_classes}). Received: labels={labels.tolist()}"
            )
        if z is None:
            z = np.random.default_rng(seed).standard_normal((labels.size, self.latent_dim))
        z = np.asarray(z, dtype="float32")
        if z.shape != (labels.size, self.latent_dim):
            raise ValueError(
                f"`z` must have shape ({labels.size}, {self.latent_dim}). Received: z.shape={z.shape}"
            )
        return self._predict_in_batches(self.generator, [z, labels.reshape(-1, 1).astype("int32")],
                                        batch_size)

    def discriminate(self, images, labels):
        """Discriminator probabilities `D(x | y)` as a NumPy array `(n,)`."""
        labels = np.asarray(labels).reshape(-1, 1).astype("int32")
        logits = self._predict_in_batches(self.discriminator, [np.asarray(images, "float32"), labels], 64)
        return 1.0 / (1.0 + np.exp(-logits.reshape(-1)))

    def get_config(self):
        config = self._base_config()
        config.update(latent_dim=self.latent_dim, num_classes=self.num_classes, seed=self.seed)
        return config


# --------------------------------------------------------------------------
# pix2pix
# --------------------------------------------------------------------------


def _translation_shapes(network):
    shape = network.input_shape
    return len(shape) - 2, shape[-1], network.output_shape[-1]


@register
class Pix2Pix(_GANBase):
    """Paired image-to-image translation (pix2pix): `G: source -> target`.

    Loss of the generator: `adversarial(D(x, G(x))) + l1_weight * |G(x) - y|_1`;
    the PatchGAN discriminator sees `(source, target)` pairs concatenated on the
    channel axis.

    Args:
        generator: `keras.Model` source image -> target image in [-1, 1]
            (UNet by default, see `zoo.build("pix2pix")`).
        discriminator: `keras.Model` on `concat([source, target], -1)` ->
            patch logits.
        l1_weight: weight `lambda` of the L1 term (>= 0). Default 100.
        adversarial_loss: `"non_saturating"` (default), `"minimax"`,
            `"least_squares"`.
        size_multiple: spatial sizes must be divisible by this. Default 4.

    Data: `fit(source, target)`, 2D `(batch, H, W, C)` or 3D
    `(batch, D, H, W, C)` in [-1, 1]; same spatial shape.

    Raises:
        ValueError: `l1_weight < 0`; source/target of mismatched spatial shape
            or wrong channel count; `fit` without targets.

    Example:
    ```python
    model = keras_medseg.zoo.build("pix2pix", filters=8, depth=2)
    src, tgt = keras_medseg.data.translation.paired_stains(32, patch_size=32)
    model.fit(src, tgt, batch_size=8, epochs=1)
    fake = model.translate(src[:4])
    ```

    Reference: seed 004 (image-conditioned GAN); Isola et al. 2017.
    """

    generator_names = ("generator",)
    discriminator_names = ("discriminator",)

    def __init__(self, generator, discriminator, l1_weight=100.0, adversarial_loss="non_saturating",
                 size_multiple=4, **kwargs):
        super().__init__(adversarial_loss=adversarial_loss, **kwargs)
        check_positive(l1_weight, "l1_weight", allow_zero=True)
        check_positive_int(size_multiple, "size_multiple")
        self.generator = generator
        self.discriminator = discriminator
        self.l1_weight = float(l1_weight)
        self.size_multiple = size_multiple
        self.spatial_dims, self.source_channels, self.target_channels = _translation_shapes(generator)
        self._make_trackers(["d_loss", "g_loss", "l1_loss", "d_accuracy"])

    def call(self, inputs, training=False):
        """`source -> translated target` (the generator)."""
        return self.generator(inputs, training=training)

    def check_training_data(self, x, y):
        if y is None:
            raise ValueError("Pix2Pix.fit needs paired targets: call `fit(source, target)`. Received: y=None")
        _check_image_batch(x, "source", self.spatial_dims, self.source_channels, self.size_multiple)
        _check_image_batch(y, "target", self.spatial_dims, self.target_channels, self.size_multiple)
        if tuple(x.shape[1:-1]) != tuple(y.shape[1:-1]):
            raise ValueError(
                "Source and target images must have the same spatial shape. "
                f"Received: source.shape={tuple(x.shape)}, target.shape={tuple(y.shape)}"
            )

    def compute_losses(self, x, y, training=False):
        fake = self.generator(x, training=training)
        x32 = ops.cast(x, fake.dtype)
        d_real = self.discriminator(ops.concatenate([x32, ops.cast(y, fake.dtype)], axis=-1),
                                    training=training)
        d_fake = self.discriminator(ops.concatenate([x32, fake], axis=-1), training=training)
        l1 = _l1(fake, y)
        adv = generator_loss(d_fake, self.adversarial_loss)
        g_loss = adv + self.l1_weight * l1
        d_loss = discriminator_loss(d_real, d_fake, self.adversarial_loss)
        acc = _accuracy(d_real, d_fake, self.adversarial_loss)
        return g_loss, d_loss, {"d_loss": d_loss, "g_loss": g_loss, "l1_loss": l1, "d_accuracy": acc}

    def translate(self, images, batch_size=16):
        """Translate source images: NumPy `(n, ...spatial, target_channels)` in [-1, 1].

        Raises:
            ValueError: wrong rank, channel count or spatial size.
        """
        images = np.asarray(images, dtype="float32")
        _check_image_batch(images, "images", self.spatial_dims, self.source_channels, self.size_multiple)
        return self._predict_in_batches(self.generator, [images], batch_size)

    def get_config(self):
        config = self._base_config()
        config.update(l1_weight=self.l1_weight, size_multiple=self.size_multiple)
        return config


# --------------------------------------------------------------------------
# CycleGAN
# --------------------------------------------------------------------------


@register
class CycleGAN(_GANBase):
    """Unpaired image-to-image translation with cycle consistency (CycleGAN).

    Generators `G_AB: A -> B`, `G_BA: B -> A`, discriminators `D_A`, `D_B`.
    Generator loss: `adv(D_B(G_AB(a))) + adv(D_A(G_BA(b))) + cycle_weight *
    (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1) + identity_weight *
    (|G_BA(a) - a|_1 + |G_AB(b) - b|_1)` (the identity term needs equal channel
    counts in both domains).

    Args:
        generator_ab, generator_ba: `keras.Model` image -> image in [-1, 1].
        discriminator_a, discriminator_b: `keras.Model` image -> patch logits.
        cycle_weight: `lambda` of the cycle loss (>= 0). Default 10.
        identity_weight: weight of the identity loss (>= 0). Default 0 (off;
            the CycleGAN paper uses `0.5 * cycle_weight` for photo<->painting).
        adversarial_loss: `"non_saturating"` (default), `"minimax"`,
            `"least_squares"`.
        size_multiple: spatial sizes must be divisible by this. Default 4.

    Data: `fit(images_a, images_b)`, unpaired batches of 2D `(batch, H, W, C_A)`
    / `(batch, H, W, C_B)` or 3D images in [-1, 1].

    Raises:
        ValueError: negative weights; identity loss with different channel
            counts; domain images of the wrong rank/channels/size.

    Example:
    ```python
    model = keras_medseg.zoo.build("cyclegan", filters=8, num_residual_blocks=1)
    a, b = keras_medseg.data.translation.unpaired_stains(32, patch_size=32)
    model.fit(a, b, batch_size=8, epochs=1)
    fake_b = model.translate(a[:4], direction="a2b")
    ```

    Reference: seed 004 (CycleGAN, cycle consistency); Zhu et al. 2017.
    """

    generator_names = ("generator_ab", "generator_ba")
    discriminator_names = ("discriminator_a", "discriminator_b")

    def __init__(self, generator_ab, generator_ba, discriminator_a, discriminator_b, cycle_weight=10.0,
                 identity_weight=0.0, adversarial_loss="non_saturating", size_multiple=4, **kwargs):
        super().__init__(adversarial_loss=adversarial_loss, **kwargs)
        check_positive(cycle_weight, "cycle_weight", allow_zero=True)
        check_positive(identity_weight, "identity_weight", allow_zero=True)
        check_positive_int(size_multiple, "size_multiple")
        self.generator_ab = generator_ab
        self.generator_ba = generator_ba
        self.discriminator_a = discriminator_a
        self.discriminator_b = discriminator_b
        self.cycle_weight = float(cycle_weight)
        self.identity_weight = float(identity_weight)
        self.size_multiple = size_multiple
        self.spatial_dims, self.channels_a, self.channels_b = _translation_shapes(generator_ab)
        dims_ba, in_ba, out_ba = _translation_shapes(generator_ba)
        if (dims_ba, in_ba, out_ba) != (self.spatial_dims, self.channels_b, self.channels_a):
            raise ValueError(
                "generator_ba must map domain B back to domain A: expected "
                f"{self.spatial_dims}D, {self.channels_b} -> {self.channels_a} channels. "
                f"Received: generator_ba {dims_ba}D, {in_ba} -> {out_ba} channels"
            )
        if self.identity_weight > 0 and self.channels_a != self.channels_b:
            raise ValueError(
                "The identity loss needs the same number of channels in both domains. "
                f"Received: identity_weight={identity_weight} with channels_a={self.channels_a}, "
                f"channels_b={self.channels_b}"
            )
        self._make_trackers(["d_loss", "g_loss", "cycle_loss", "identity_loss", "d_accuracy"])

    def call(self, inputs, training=False):
        """`A -> B` translation (`generator_ab`)."""
        return self.generator_ab(inputs, training=training)

    def check_training_data(self, x, y):
        if y is None:
            raise ValueError(
                "CycleGAN.fit needs images of both domains: call `fit(images_a, images_b)`. Received: y=None"
            )
        _check_image_batch(x, "images_a", self.spatial_dims, self.channels_a, self.size_multiple)
        _check_image_batch(y, "images_b", self.spatial_dims, self.channels_b, self.size_multiple)

    def cycle_loss(self, images_a, images_b, training=False):
        """`cycle_weight * (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1)` (mean absolute errors)."""
        cyc_a = self.generator_ba(self.generator_ab(images_a, training=training), training=training)
        cyc_b = self.generator_ab(self.generator_ba(images_b, training=training), training=training)
        return self.cycle_weight * (_l1(cyc_a, images_a) + _l1(cyc_b, images_b))

    def compute_losses(self, x, y, training=False):
        a, b = x, y
        fake_b = self.generator_ab(a, training=training)
        fake_a = self.generator_ba(b, training=training)
        cyc_a = self.generator_ba(fake_b, training=training)
        cyc_b = self.generator_ab(fake_a, training=training)
        cycle = self.cycle_weight * (_l1(cyc_a, a) + _l1(cyc_b, b))
        if self.identity_weight > 0:
            identity = self.identity_weight * (_l1(self.generator_ba(a, training=training), a)
                                               + _l1(self.generator_ab(b, training=training), b))
        else:
            identity = ops.zeros((), "float32")
        da_real = self.discriminator_a(a, training=training)
        da_fake = self.discriminator_a(fake_a, training=training)
        db_real = self.discriminator_b(b, training=training)
        db_fake = self.discriminator_b(fake_b, training=training)
        kind = self.adversarial_loss
        g_loss = generator_loss(db_fake, kind) + generator_loss(da_fake, kind) + cycle + identity
        d_loss = discriminator_loss(da_real, da_fake, kind) + discriminator_loss(db_real, db_fake, kind)
        acc = 0.5 * (_accuracy(da_real, da_fake, kind) + _accuracy(db_real, db_fake, kind))
        logs = {"d_loss": d_loss, "g_loss": g_loss, "cycle_loss": cycle, "identity_loss": identity,
                "d_accuracy": acc}
        return g_loss, d_loss, logs

    def translate(self, images, direction="a2b", batch_size=16):
        """Translate images `A -> B` (`direction="a2b"`) or `B -> A` (`"b2a"`).

        Returns:
            NumPy float32 array in [-1, 1], same spatial shape.

        Raises:
            ValueError: unknown direction; wrong rank, channels or spatial size.
        """
        check_choice(direction, "direction", DIRECTIONS)
        images = np.asarray(images, dtype="float32")
        if direction == "a2b":
            _check_image_batch(images, "images", self.spatial_dims, self.channels_a, self.size_multiple)
            return self._predict_in_batches(self.generator_ab, [images], batch_size)
        _check_image_batch(images, "images", self.spatial_dims, self.channels_b, self.size_multiple)
        return self._predict_in_batches(self.generator_ba, [images], batch_size)

    def get_config(self):
        config = self._base_config()
        config.update(cycle_weight=self.cycle_weight, identity_weight=self.identity_weight,
                      size_multiple=self.size_multiple)
        return config


# --------------------------------------------------------------------------
# Zoo builders
# --------------------------------------------------------------------------


def _check_common(spatial_dims, image_size, multiple, filters, adversarial_loss, learning_rate):
    check_spatial_dims(spatial_dims)
    check_positive_int(image_size, "image_size")
    if image_size % multiple:
        raise ValueError(f"`image_size` must be divisible by {multiple}. Received: image_size={image_size}")
    check_positive_int(filters, "filters")
    check_choice(adversarial_loss, "adversarial_loss", ADVERSARIAL_LOSSES)
    check_positive(learning_rate, "learning_rate")


def _compile(model, learning_rate, beta_1):
    model.compile(optimizers={n: _default_optimizer(learning_rate, beta_1) for n in model.network_names})
    return model


def _cgan_example(model, batch_size, seed):
    from keras_medseg.data.translation import labelled_shapes

    spatial_dims = len(model.image_shape) - 1
    return labelled_shapes(batch_size, image_size=model.image_shape[0], num_classes=model.num_classes,
                           channels=model.image_shape[-1], spatial_dims=spatial_dims, seed=seed)


def _translation_example(model, batch_size, seed):
    from keras_medseg.data.translation import paired_shapes

    size = 16 if model.spatial_dims == 2 else 8
    size = max(size, model.size_multiple)
    src, tgt = paired_shapes(batch_size, image_size=size, spatial_dims=model.spatial_dims, seed=seed)
    cin = getattr(model, "source_channels", getattr(model, "channels_a", 1))
    cout = getattr(model, "target_channels", getattr(model, "channels_b", 1))
    return np.repeat(src, cin, axis=-1), np.repeat(tgt, cout, axis=-1)


@register_model(
    "cgan",
    description="Class-conditional DCGAN (generator G(z|y) + discriminator D(x|y)), trained by fit(images, labels)",
    spatial_dims=(2, 3),
    tiny=dict(image_size=8, filters=4, latent_dim=8, num_classes=3),
    example=_cgan_example,
    trainable_with_fit=True,
)
def cgan(image_size=28, channels=1, num_classes=10, latent_dim=64, filters=64, spatial_dims=2,
         adversarial_loss="non_saturating", learning_rate=2e-4, beta_1=0.5, seed=None, name="cgan"):
    """Class-conditional DCGAN (`ConditionalGAN`), compiled with Adam(2e-4, 0.5) per network.

    Args:
        image_size: side of the (square/cubic) images, divisible by 4. Default 28.
        channels: image channels. Default 1.
        num_classes: number of class labels. Default 10.
        latent_dim: size of `z`. Default 64.
        filters: width of the first discriminator stage / last generator
            stage. Default 64.
        spatial_dims: 2 or 3. Default 2.
        adversarial_loss: `"non_saturating"`, `"minimax"` or `"least_squares"`.
        learning_rate, beta_1: Adam settings of both optimisers.
        seed: seed of the latent sampler. Default None.
        name: model name; sub-networks are `f"{name}_generator"` and
            `f"{name}_discriminator"`.

    Returns:
        A compiled `ConditionalGAN`.
    """
    _check_common(spatial_dims, image_size, 4, filters, adversarial_loss, learning_rate)
    check_positive_int(channels, "channels")
    check_positive_int(num_classes, "num_classes")
    check_positive_int(latent_dim, "latent_dim")
    gen = cgan_generator(image_size, channels, num_classes, latent_dim, filters, spatial_dims,
                         name=f"{name}_generator")
    disc = cgan_discriminator(image_size, channels, num_classes, filters, spatial_dims,
                              name=f"{name}_discriminator")
    model = ConditionalGAN(gen, disc, latent_dim=latent_dim, num_classes=num_classes,
                           adversarial_loss=adversarial_loss, seed=seed, name=name)
    return _compile(model, learning_rate, beta_1)


def _make_generator(kind, in_channels, out_channels, filters, depth, num_residual_blocks, norm,
                    spatial_dims, name):
    if kind == "unet":
        return unet_generator(in_channels, out_channels, filters, depth, spatial_dims, name=name)
    return resnet_generator(in_channels, out_channels, filters, num_residual_blocks, norm,
                            spatial_dims, name=name)


@register_model(
    "pix2pix",
    description="Paired image-to-image GAN: generator + PatchGAN on (input, output) pairs, adversarial + 100 L1",
    spatial_dims=(2, 3),
    tiny=dict(filters=4, depth=2, num_residual_blocks=1, discriminator_filters=4, discriminator_layers=2),
    example=_translation_example,
    trainable_with_fit=True,
)
def pix2pix(in_channels=1, out_channels=1, filters=32, depth=3, generator="unet", num_residual_blocks=6,
            discriminator_filters=32, discriminator_layers=3, norm="batch", l1_weight=100.0,
            spatial_dims=2, adversarial_loss="non_saturating", learning_rate=2e-4, beta_1=0.5,
            name="pix2pix"):
    """pix2pix (`Pix2Pix`): UNet generator with `tanh` head + PatchGAN discriminator.

    Fully convolutional: any input size divisible by `2 ** max(depth, 2)`
    (UNet) / 4 (ResNet) and by `2 ** discriminator_layers`.

    Args:
        in_channels, out_channels: source / target channels. Default 1, 1.
        filters: generator base width. Default 32.
        depth: UNet down-sampling stages (generator="unet"). Default 3.
        generator: `"unet"` (the zoo's `unet`, default) or `"resnet"`.
        num_residual_blocks: residual blocks (generator="resnet"). Default 6.
        discriminator_filters, discriminator_layers: PatchGAN width / stride-2
            layers. Default 32, 3.
        norm: PatchGAN (and ResNet generator) normalisation: `"batch"`
            (default), `"instance"`, `"none"`.
        l1_weight: `lambda` of the L1 term. Default 100.
        spatial_dims: 2 or 3. Default 2.
        adversarial_loss, learning_rate, beta_1, name: as in `cgan`.

    Returns:
        A compiled `Pix2Pix`.
    """
    check_spatial_dims(spatial_dims)
    check_choice(generator, "generator", ("unet", "resnet"))
    check_choice(norm, "norm", NORMS)
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels), ("filters", filters),
                       ("depth", depth), ("discriminator_filters", discriminator_filters),
                       ("discriminator_layers", discriminator_layers),
                       ("num_residual_blocks", num_residual_blocks)):
        check_positive_int(value, arg)
    check_positive(l1_weight, "l1_weight", allow_zero=True)
    check_choice(adversarial_loss, "adversarial_loss", ADVERSARIAL_LOSSES)
    check_positive(learning_rate, "learning_rate")
    gen = _make_generator(generator, in_channels, out_channels, filters, depth, num_residual_blocks, norm,
                          spatial_dims, f"{name}_generator")
    disc = patchgan_discriminator(in_channels + out_channels, discriminator_filters, discriminator_layers,
                                  norm, spatial_dims, name=f"{name}_discriminator")
    multiple = max(2 ** depth if generator == "unet" else 4, 2 ** discriminator_layers)
    model = Pix2Pix(gen, disc, l1_weight=l1_weight, adversarial_loss=adversarial_loss,
                    size_multiple=multiple, name=name)
    return _compile(model, learning_rate, beta_1)


@register_model(
    "cyclegan",
    description="Unpaired translation: two generators, two PatchGANs, adversarial + 10 cycle (+ identity) losses",
    spatial_dims=(2, 3),
    tiny=dict(filters=4, num_residual_blocks=1, discriminator_filters=4, discriminator_layers=2),
    example=_translation_example,
    trainable_with_fit=True,
)
def cyclegan(channels_a=1, channels_b=1, filters=32, generator="resnet", num_residual_blocks=6, depth=3,
             discriminator_filters=32, discriminator_layers=3, norm="instance", cycle_weight=10.0,
             identity_weight=0.0, spatial_dims=2, adversarial_loss="non_saturating", learning_rate=2e-4,
             beta_1=0.5, name="cyclegan"):
    """CycleGAN (`CycleGAN`): two ResNet (or UNet) generators, two PatchGANs.

    Args:
        channels_a, channels_b: channels of domain A / B. Default 1, 1.
        filters: generator base width. Default 32.
        generator: `"resnet"` (default) or `"unet"` (the zoo's `unet`).
        num_residual_blocks: ResNet blocks. Default 6.
        depth: UNet stages (generator="unet"). Default 3.
        discriminator_filters, discriminator_layers: PatchGAN width / depth.
        norm: `"instance"` (default), `"batch"` or `"none"`.
        cycle_weight: `lambda` of the cycle loss. Default 10.
        identity_weight: identity loss weight (0 = off). Default 0.
        spatial_dims: 2 or 3. Default 2.
        adversarial_loss, learning_rate, beta_1, name: as in `cgan`.
        Sub-networks: `f"{name}_generator_ab"`, `..._generator_ba`,
        `..._discriminator_a`, `..._discriminator_b`.

    Returns:
        A compiled `CycleGAN` (four Adam optimisers).
    """
    check_spatial_dims(spatial_dims)
    check_choice(generator, "generator", ("unet", "resnet"))
    check_choice(norm, "norm", NORMS)
    for arg, value in (("channels_a", channels_a), ("channels_b", channels_b), ("filters", filters),
                       ("depth", depth), ("discriminator_filters", discriminator_filters),
                       ("discriminator_layers", discriminator_layers),
                       ("num_residual_blocks", num_residual_blocks)):
        check_positive_int(value, arg)
    check_positive(cycle_weight, "cycle_weight", allow_zero=True)
    check_positive(identity_weight, "identity_weight", allow_zero=True)
    check_choice(adversarial_loss, "adversarial_loss", ADVERSARIAL_LOSSES)
    check_positive(learning_rate, "learning_rate")
    g_ab = _make_generator(generator, channels_a, channels_b, filters, depth, num_residual_blocks, norm,
                           spatial_dims, f"{name}_generator_ab")
    g_ba = _make_generator(generator, channels_b, channels_a, filters, depth, num_residual_blocks, norm,
                           spatial_dims, f"{name}_generator_ba")
    d_a = patchgan_discriminator(channels_a, discriminator_filters, discriminator_layers, norm, spatial_dims,
                                 name=f"{name}_discriminator_a")
    d_b = patchgan_discriminator(channels_b, discriminator_filters, discriminator_layers, norm, spatial_dims,
                                 name=f"{name}_discriminator_b")
    multiple = max(2 ** depth if generator == "unet" else 4, 2 ** discriminator_layers)
    model = CycleGAN(g_ab, g_ba, d_a, d_b, cycle_weight=cycle_weight, identity_weight=identity_weight,
                     adversarial_loss=adversarial_loss, size_multiple=multiple, name=name)
    return _compile(model, learning_rate, beta_1)


__all__ = [
    "ConditionalGAN",
    "CycleGAN",
    "Pix2Pix",
    "cgan",
    "cgan_discriminator",
    "cgan_generator",
    "cyclegan",
    "discriminator_loss",
    "generator_loss",
    "patchgan_discriminator",
    "pix2pix",
    "resnet_generator",
    "unet_generator",
]
