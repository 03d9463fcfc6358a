"""The zoo's catalogue read from source, without importing Keras (for `keras-medseg list`, `info` and `train`).

`keras_medseg.zoo.list()` / `describe()` need every model family imported, which
imports Keras and its backend (seconds to tens of seconds). The command line
only needs names, descriptions, spatial dims, tasks and argument defaults, and
those are all written in the `@register_model(...)` decorators and builder
signatures, so this module reads them with `ast` from the files under
`keras_medseg/zoo/`. `tests/reliability/test_faults.py` checks it against the
live registry, so the two cannot drift apart. The task is what each model
declares (`@register_model(task=...)`, `keras_medseg.zoo.registry.TASKS`);
nothing here guesses it from a name.

Private to the commands (`list`, `info`, `train` import it).
"""

import ast
import difflib
import functools
import inspect
import os

__all__ = ["describe", "list_models", "training_route", "untrainable_reason"]

_ZOO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zoo")
_DEFAULT_TASK = "segmentation"  # `register_model`'s default


class _Unparsed:
    """A default that is an expression, shown as its source text."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _value(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return _Unparsed(ast.unparse(node))


def _register_call(fn):
    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and getattr(dec.func, "id", getattr(dec.func, "attr", None)) == "register_model":
            return dec
    return None


def _spec(fn, dec):
    name = fn.name
    if dec.args:
        name = _value(dec.args[0])
    kw = {k.arg: k.value for k in dec.keywords if k.arg}
    if "name" in kw:
        name = _value(kw["name"])
    doc = inspect.cleandoc(ast.get_docstring(fn) or "")
    desc = _value(kw["description"]) if "description" in kw else (doc.splitlines()[0] if doc else name)
    dims = _value(kw["spatial_dims"]) if "spatial_dims" in kw else (2,)
    args = fn.args
    defaults = {}
    positional = args.posonlyargs + args.args
    for a, d in zip(positional[len(positional) - len(args.defaults):], args.defaults):
        defaults[a.arg] = _value(d)
    for a, d in zip(args.kwonlyargs, args.kw_defaults):
        if d is not None:
            defaults[a.arg] = _value(d)
    fit = _value(kw["trainable_with_fit"]) if "trainable_with_fit" in kw else True
    task = _value(kw["task"]) if "task" in kw else _DEFAULT_TASK
    return {"name": name, "description": desc, "spatial_dims": tuple(dims), "task": task,
            "trainable_with_fit": fit, "arguments": defaults, "declares_task": "task" in kw}


@functools.lru_cache(maxsize=1)
def _catalog():
    specs = {}
    for root, _, files in os.walk(_ZOO):
        for fname in sorted(files):
            if not fname.endswith(".py"):
                continue
            with open(os.path.join(root, fname), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    dec = _register_call(node)
                    if dec is not None:
                        spec = _spec(node, dec)
                        specs[spec["name"]] = spec
    return {n: specs[n] for n in sorted(specs)}


def list_models():
    """`{name: one-line description}` of every zoo model, read from source (no Keras import)."""
    return {n: s["description"] for n, s in _catalog().items()}


def describe(name):
    """Name, description, spatial dims, task, `trainable_with_fit` and `{argument: default}` of one model.

    Read from source (no Keras import); `declares_task` says whether the decorator states the task.

    Raises:
        ValueError: unknown model name (with the closest names).
    """
    cat = _catalog()
    if name not in cat:
        close = difflib.get_close_matches(str(name), list(cat), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown zoo model {name!r}.{hint} Run `keras-medseg list` to see all models.")
    return dict(cat[name])


# What `keras-medseg train` does with each task: None = it trains it, else the line that says where to go.
_GAN_ROUTE = ("{name} is a GAN: `train` fits segmentation models and patch classifiers only. Train it with its own "
              "`fit` (`model = keras_medseg.zoo.build({name!r}); model.compile(); model.fit(...)`), as in "
              "tutorials/03_gans.ipynb")
_NO_TRAINING = ("{name} has no training (its kernels are the fixed finite-difference stencils): it is applied as "
                "it is, by `keras-medseg predict`/`evaluate` on a saved model or `keras_medseg.zoo.build({name!r})` "
                "in Python, as in tutorials/01_level_sets_and_imexnet.ipynb")
_DETECTOR = ("{name} is a detector trained on boxes, not masks: `train` fits segmentation models and patch "
             "classifiers only. Use `keras_medseg.zoo.build({name!r})` with `model.fit` on boxes (see the "
             "tutorials/02_patches_attention_and_detection.ipynb)")
_CLASSIFIER = ("{name} is a patch classifier: train it on an HDF5 patch store, "
               "`keras-medseg train {name} --data patches.h5` (`keras-medseg patches extract` makes one)")
_SEGMENTER_ON_STORE = ("{name} is a segmentation model and {data} is a patch store of labelled patches: train a "
                       "patch classifier on it (e.g. `keras-medseg train vgg16_classifier --data {data}`), or "
                       "{name} on an image/mask folder or Q-tips")


def untrainable_reason(name):
    """The one line saying why `keras-medseg train NAME` never fits this model (on any data), else `None`."""
    spec = describe(name)
    if spec["task"] == "generation":
        return _GAN_ROUTE.format(name=name).strip()
    if spec["task"] == "detection":
        return _DETECTOR.format(name=name)
    if spec["trainable_with_fit"] is False:
        return _NO_TRAINING.format(name=name)
    return None


_COHORT = ("{data} is a folder of whole slides: cut them into a patch store first (`keras-medseg patches extract "
           "SLIDE --annotations ... --out patches.h5`), then `keras-medseg train {name} --data patches.h5`")


def training_route(name, patch_store=False, data=None, source=None):
    """`None` when `keras-medseg train NAME` trains this model on this data, else the one line saying why not.

    Segmentation models train on Q-tips, image/mask folders and volumes;
    patch classifiers on HDF5 patch stores; GANs with their own `fit`;
    models without trainable weights (`lse`) are applied by `evaluate`.
    `source` is the typed data source (`keras_medseg.data.sources`); without
    it, `patch_store` says whether the data is a patch store.
    """
    refusal = untrainable_reason(name)
    if refusal:
        return refusal
    task = describe(name)["task"]
    source_kind = getattr(source, "kind", "patch_store" if patch_store else None)
    if source_kind == "cohort_folder":
        return _COHORT.format(name=name, data=data)
    if task == "classification" and source_kind != "patch_store":
        return _CLASSIFIER.format(name=name)
    if task == "segmentation" and source_kind == "patch_store":
        return _SEGMENTER_ON_STORE.format(name=name, data=data)
    return None
