"""Model registry: `register_model`, `build`, `list`, `describe`.

Every model family file under `keras_medseg/zoo/` decorates its builder with
`@register_model(...)`. The builder takes keyword arguments only, each with a
default; `build(name, **kwargs)` checks the user's arguments against those
defaults (unknown name, unknown argument, wrong type) before calling it, so a
typo gives a clear `ValueError` instead of a deep traceback.

The zoo-wide tests iterate over `list()`, so a model is tested the moment it
is registered. `tiny` gives small arguments for those tests; `example(model,
batch_size, seed)` returns one `(x, y)` batch that `model.fit` accepts (the
default draws inputs and targets shaped like the model's inputs and outputs).
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import inspect
import numbers
from typing import Any, Callable, Optional

import keras

from keras_medseg.utils.cpu_speed import warn_if_slow_conv3d_gradients

_REGISTRY = {}

#: What a model does, declared by each model in `@register_model(task=...)`; the command line routes on it
#: (`keras-medseg train` fits segmentation models and patch classifiers, and says where the others train).
TASKS = ("segmentation", "classification", "detection", "generation")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder, description and defaults and the `register_model` arguments."""

    name: str
    builder: Callable
    description: str
    defaults: dict
    spatial_dims: tuple = (2,)
    tiny: dict = dataclasses.field(default_factory=dict)
    example: Optional[Callable] = None
    trainable_with_fit: bool = True
    task: str = "segmentation"


def register_model(name: str | None = None, *, description: str | None = None, spatial_dims: tuple = (2,),
                   tiny: dict | None = None, example: Callable | None = None,
                   trainable_with_fit: bool = True, task: str = "segmentation") -> Callable[[Callable], Callable]:
    """Decorator that adds a builder function to the zoo.

    Args:
        name: registry name (lower snake_case); defaults to the function name.
        description: one-line description; defaults to the docstring's first line.
        spatial_dims: the `spatial_dims` values the model supports.
        tiny: small keyword arguments used by the zoo-wide tests (fast to build).
        example: optional `fn(model, batch_size, seed) -> (x, y)` giving a
            training batch; the default draws random arrays shaped like the
            model's inputs and outputs.
        trainable_with_fit: whether `model.fit(x, y)` is the training path.
        task: what the model does, one of `TASKS`: "segmentation" (default;
            per-voxel classes), "classification" (one probability per image
            or patch), "detection" (boxes) or "generation" (GANs). Every zoo
            model states it (checked by the tests); `keras-medseg train` and
            `list` read it.

    Raises:
        ValueError: an unknown `task`, a name registered twice.
        TypeError: a builder argument without a default.
    """
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {TASKS}. Received: task={task!r}")

    def decorator(fn):
        reg_name = name or fn.__name__
        if reg_name in _REGISTRY:
            raise ValueError(f"A model named {reg_name!r} is already registered.")
        sig = inspect.signature(fn)
        defaults = {}
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.default is inspect.Parameter.empty:
                raise TypeError(f"Builder {fn.__name__} argument {p.name!r} needs a default value.")
            defaults[p.name] = p.default
        doc = inspect.getdoc(fn) or ""
        desc = description or (doc.splitlines()[0] if doc else reg_name)
        _REGISTRY[reg_name] = ModelSpec(
            name=reg_name,
            builder=fn,
            description=desc,
            defaults=defaults,
            spatial_dims=tuple(spatial_dims),
            tiny=dict(tiny or {}),
            example=example,
            trainable_with_fit=trainable_with_fit,
            task=task,
        )
        return fn

    return decorator


def _check_type(model, arg, value, default):
    if default is None or value is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        expected = "a bool"
    elif isinstance(default, numbers.Integral):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        expected = "an int"
        if "size" in arg and isinstance(value, (tuple, builtins.list)):
            # size arguments (input_size, kernel_size) take an int or one int per axis
            ok = all(v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool)) for v in value)
            expected = "an int or a tuple of ints"
    elif isinstance(default, numbers.Real):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        expected = "a number"
    elif isinstance(default, str):
        # string options (e.g. weights="imagenet") may also accept other objects
        # such as paths; builders check those themselves.
        ok = isinstance(value, (str,)) or hasattr(value, "__fspath__")
        expected = "a string"
    elif isinstance(default, (tuple, builtins.list)):
        ok = isinstance(value, (tuple, builtins.list))
        expected = "a tuple or list"
    else:
        ok = True
        expected = ""
    if not ok:
        raise ValueError(
            f"Argument `{arg}` of zoo model {model!r} must be {expected} "
            f"(default {default!r}). Received: {arg}={value!r} of type {type(value).__name__}"
        )


def get_spec(name: str) -> ModelSpec:
    """The `ModelSpec` registered under `name` (raises `ValueError` with suggestions)."""
    if not isinstance(name, str):
        raise TypeError(f"Model `name` must be a string. Received: name={name!r}")
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY.keys(), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"Unknown zoo model: name={name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def build(name: str, /, **kwargs: Any) -> keras.Model:
    """Build a registered model: `keras_medseg.zoo.build("unet", spatial_dims=3)`.

    Args:
        name: registry name (see `keras_medseg.zoo.list()`).
        **kwargs: builder arguments; they override the builder's defaults.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: unknown model name (with the closest names), unknown
            argument (with the valid ones) or an argument of the wrong type.
    """
    spec = get_spec(name)
    if "spatial_dims" in kwargs and "spatial_dims" in spec.defaults:
        if isinstance(kwargs["spatial_dims"], bool) or kwargs["spatial_dims"] not in spec.spatial_dims:
            raise ValueError(
                f"Zoo model {name!r} supports spatial_dims in {spec.spatial_dims}. "
                f"Received: spatial_dims={kwargs['spatial_dims']!r}"
            )
    for arg, value in kwargs.items():
        if arg not in spec.defaults:
            close = difflib.get_close_matches(arg, spec.defaults.keys(), n=2, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"Unknown argument `{arg}` for zoo model {name!r}.{hint} "
                f"Valid arguments: {', '.join(spec.defaults)}"
            )
        _check_type(name, arg, value, spec.defaults[arg])
    merged = {**spec.defaults, **kwargs}
    if merged.get("spatial_dims") == 3:
        warn_if_slow_conv3d_gradients()
    return spec.builder(**merged)


def list() -> dict[str, str]:  # noqa: A001 - mirrors `timm.list_models` / the documented `zoo.list()`
    """Registered models as an ordered `{name: one-line description}` dict."""
    return {n: _REGISTRY[n].description for n in sorted(_REGISTRY)}


def describe(name: str) -> dict[str, Any]:
    """Arguments and defaults of one model.

    Returns:
        dict with keys `name`, `description`, `spatial_dims`, `task`,
        `trainable_with_fit` and `arguments` (an ordered `{argument: default}` dict).
    """
    spec = get_spec(name)
    return {
        "name": spec.name,
        "description": spec.description,
        "spatial_dims": spec.spatial_dims,
        "task": spec.task,
        "trainable_with_fit": spec.trainable_with_fit,
        "arguments": dict(spec.defaults),
    }


def _is_sparse_loss(model):
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else type(loss).__name__ if loss is not None else ""
    return "sparse" in str(name).lower()


def example_batch(name: str, model: keras.Model, batch_size: int = 2, seed: int = 0,
                  free_size: int = 16) -> tuple:
    """One `(x, y)` training batch for `model` (built from zoo model `name`).

    Uses the spec's `example` function when it has one; otherwise draws
    standard-normal inputs shaped like `model.inputs` (free spatial axes get
    `free_size`) and targets shaped like `model.outputs`: integer class ids
    without the channel axis for a sparse categorical loss, 0/1 floats
    otherwise.
    """
    import numpy as np

    spec = get_spec(name)
    if spec.example is not None:
        return spec.example(model, batch_size, seed)
    rng = np.random.default_rng(seed)

    def shape_of(t):
        return (batch_size,) + tuple(free_size if s is None else int(s) for s in t.shape[1:])

    xs = [rng.normal(size=shape_of(t)).astype("float32") for t in model.inputs]
    ys = []
    for t in model.outputs:
        shape = shape_of(t)
        if _is_sparse_loss(model) and len(shape) > 2:
            ys.append(rng.integers(0, shape[-1], size=shape[:-1]).astype("int32"))
        else:
            ys.append(rng.integers(0, 2, size=shape).astype("float32"))
    return (xs[0] if len(xs) == 1 else xs), (ys[0] if len(ys) == 1 else ys)
