"""`keras-medseg info`: versions, backend, devices and the registered models."""

import platform


def add_parser(subparsers):
    p = subparsers.add_parser("info", help="Show versions, backend, devices and registered models.")
    return p


def run(args):
    import keras

    from keras_medseg import zoo
    from keras_medseg.version import __version__

    lines = [
        f"keras-medseg {__version__}",
        f"python       {platform.python_version()} ({platform.machine()})",
        f"keras        {keras.__version__}",
        f"backend      {keras.backend.backend()}",
    ]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        devices = [d.name for d in tf.config.list_logical_devices()]
        lines.append(f"tensorflow   {tf.__version__}")
    elif backend == "jax":
        import jax

        devices = [str(d) for d in jax.devices()]
        lines.append(f"jax          {jax.__version__}")
    else:
        devices = []
    lines.append(f"devices      {', '.join(devices) or 'unknown'}")
    models = zoo.list()
    lines.append(f"zoo models   {len(models)}")
    for name, desc in models.items():
        lines.append(f"  {name:22s} {desc}")
    print("\n".join(lines))
    return 0
