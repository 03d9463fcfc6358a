"""`keras-medseg info`: versions, backend and the registered models (`--devices` also lists devices)."""

import platform


def add_parser(subparsers):
    p = subparsers.add_parser("info", help="Show versions, backend, devices and registered models.")
    p.add_argument("--devices", action="store_true",
                   help="also import the backend and list its devices (slower)")
    return p


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _devices(backend):
    from keras_medseg.utils.quiet_backend import import_backend

    import_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if backend == "torch":
        import torch

        return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []


def run(args):
    from keras_medseg.commands import _catalog as catalog
    from keras_medseg.utils.quiet_backend import configured_backend
    from keras_medseg.version import __version__

    backend = configured_backend()
    package = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend)
    lines = [
        f"keras-medseg {__version__}",
        f"python       {platform.python_version()} ({platform.machine()})",
        f"keras        {_version('keras')}",
        f"backend      {backend}",
        f"{package:12s} {_version(package)}",
    ]
    if args.devices:
        lines.append(f"devices      {', '.join(_devices(backend)) or 'unknown'}")
    else:
        lines.append("devices      (run `keras-medseg info --devices` to list them)")
    models = catalog.list_models()
    lines.append(f"zoo models   {len(models)}")
    for name, desc in models.items():
        lines.append(f"  {name:22s} {desc}")
    print("\n".join(lines))
    return 0
