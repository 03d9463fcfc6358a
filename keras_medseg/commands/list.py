"""`keras-medseg list`: the registered zoo models (or the arguments of one), without importing Keras."""


def add_parser(subparsers):
    p = subparsers.add_parser("list", help="List the zoo models, or show the arguments of one model.")
    p.add_argument("model", nargs="?", help="show this model's arguments and defaults")
    return p


def run(args):
    from keras_medseg.commands import _catalog as catalog

    if args.model:
        info = catalog.describe(args.model)
        print(f"{info['name']}: {info['description']}")
        print(f"spatial_dims: {', '.join(str(d) for d in info['spatial_dims'])}")
        print(f"task: {info['task']}")
        print("arguments:")
        for arg, default in info["arguments"].items():
            print(f"  {arg:24s} = {default!r}")
        return 0
    models = catalog.list_models()
    width = max((len(n) for n in models), default=0)
    for name, desc in models.items():
        print(f"{name:{width}s}  {desc}")
    return 0
