"""The `keras-medseg` command line.

Each sub-command lives in its own module under `keras_medseg/commands/` with
two functions: `add_parser(subparsers)` and `run(args) -> int`. Adding a
command means adding its module name to `COMMANDS`.

Start-up: the command modules import nothing heavy at module level, so
`--help`, `--version`, `list` and `info` never import Keras or a backend;
every other command imports Keras (quietly, see
`keras_medseg.utils.quiet_backend`) just before it runs.

Errors: a user mistake or an environment fault (bad argument, missing or
unreadable file, full disk, a store held by another writer, an input the
model cannot take) ends in one line `keras-medseg CMD: error: ...` and exit
code 2; `--debug` shows the traceback instead.
"""

import argparse
import importlib
import sys

from keras_medseg.version import __version__

COMMANDS = (
    "info",
    "list",
    "train",
    "evaluate",
    "predict",
    "demo",
    "patches",
    "slide",
    "explain",
    "kernels",
)

# Commands that run without Keras or a backend.
LIGHT_COMMANDS = ("info", "list")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-medseg",
        description="Keras 3 model zoo for medical image analysis.",
    )
    parser.add_argument("--version", action="version", version=f"keras-medseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--verbose", action="store_true",
                        help="keep the backend's start-up logging (CUDA probing, absl, oneDNN lines)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"keras_medseg.commands.{name}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run, _check=getattr(module, "check", None))
    return parser


def _one_line(exc):
    """The first meaningful line of an exception message (Keras call dumps span dozens of lines)."""
    from keras_medseg.utils.errors import one_line_message

    return one_line_message(exc)


def _is_user_error(exc):
    from keras_medseg.utils.errors import is_user_error

    return is_user_error(exc)


def main(argv: list[str] | None = None) -> int:
    """Run the command line on `argv` (default `sys.argv[1:]`); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        if args._check is not None:  # argument checks that need no backend: fail before the slow import
            args._check(args)
        if args.command not in LIGHT_COMMANDS:
            from keras_medseg.utils.quiet_backend import import_backend

            import_backend(verbose=args.verbose)
            import keras_medseg

            keras_medseg._import_all()
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"keras-medseg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # sorted below: user/environment faults get one line
        if args.debug or not _is_user_error(exc):
            raise
        print(f"keras-medseg {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
