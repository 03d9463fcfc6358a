"""Options shared by several commands: `--data` and its Q-tips/folder settings, `--arg NAME=VALUE` parsing.

Commands import from here, never from each other.
"""

import ast

__all__ = ["add_data_options", "parse_model_args"]


def parse_model_args(items):
    """`["filters=8", "name=seg"]` -> `{"filters": 8, "name": "seg"}` (literals, else strings)."""
    kwargs = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"`--arg` must look like name=value. Received: --arg {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key.isidentifier():
            raise ValueError(f"`--arg` name must be an identifier. Received: --arg {item!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


def add_data_options(p, n_default=1024):
    p.add_argument("--data", default="qtips", help="'qtips' (synthetic, default) or a folder DIR with "
                   "DIR/images/<name>.<ext> and DIR/masks/<name>.<ext> (PNG, TIFF, .npy, NIfTI), or an HDF5 "
                   "patch store FILE.h5 (`keras-medseg patches extract`) for patch classifiers")
    p.add_argument("--size", type=int, default=64, help="Q-tips image size (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--spatial-dims", type=int, default=2, choices=(2, 3),
                   help="2 for images, 3 for volumes in a data folder (default 2)")
