"""The `keras-medseg` command line.

Each sub-command lives in its own module under `keras_medseg/commands/` with
two functions: `add_parser(subparsers)` and `run(args) -> int`. Adding a
command means adding its module name to `COMMANDS`.
"""

import argparse
import importlib
import os
import sys

from keras_medseg.version import __version__

COMMANDS = (
    "info",
    "list",
    "train",
    "evaluate",
    "demo",
    "patches",
    "explain",
    "kernels",
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-medseg",
        description="Keras 3 model zoo for medical image analysis.",
    )
    parser.add_argument("--version", action="version", version=f"keras-medseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"keras_medseg.commands.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on `argv` (default `sys.argv[1:]`); returns the exit status."""
    # Quiet TensorFlow's C++ logging for the command line unless the user asked for it (the library
    # itself leaves the environment alone).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        # User mistakes (bad file, bad argument) get one clear line, not a traceback.
        print(f"keras-medseg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
