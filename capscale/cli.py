"""The ``capscale`` command line: a thin layer over the Python API.

Run ``capscale --help`` for the list of commands and ``capscale COMMAND --help`` for each.

:func:`main` runs every command the same way. It catches what the command raises, once, and maps it to the
exit status with :func:`capscale.errors.exit_code`: 0 success, 1 invalid input, 2 usage (argparse's own errors
included), 130 interrupted. An expected failure (a :class:`~capscale.errors.CapscaleError`, a missing or
unreadable file) prints ``capscale COMMAND: error: MESSAGE`` on stderr, without a traceback; with the global
``--debug`` flag (before or after the command) it is re-raised instead, traceback and all. Any other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator

from capscale import __version__
from capscale.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, exit_code

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

# Command groups, in the order they appear in --help. Each module exposes register(subparsers).
COMMAND_MODULES = [
    "capscale.commands.core",  # demo, report, analyze, validate
    "capscale.commands.bench",  # bench NAME
    "capscale.commands.evaluation",  # eval, family scan, ingest lm-eval
    "capscale.commands.emergence",  # emergence
    "capscale.commands.mass",  # mass, mass-sim
    "capscale.commands.ladder",  # ladder train|export|check, synthetic generate
    "capscale.commands.laws",  # fit, predict, backtest, data fetch
]

_DEBUG_HELP = "on an error, re-raise it with its full traceback instead of printing one line"


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` (commands and their sub-commands), depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield sub
                yield from _subparsers(sub)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (useful for docs and tests).

    Every command's parser also accepts ``--debug`` and records itself (``_cli_parser``) so that :func:`main`
    can name the command in error messages.
    """
    parser = argparse.ArgumentParser(
        prog="capscale",
        description="Predict the downstream capabilities of language models from scale.",
        epilog="Exit status: 0 success, 1 invalid input, 2 usage error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"capscale {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in _subparsers(parser):
        # SUPPRESS: a command's parser sets debug only when the flag is given after the command
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
        p.set_defaults(_cli_parser=p)
    return parser


def _status(exc: SystemExit) -> int:
    """The exit status of argparse's ``SystemExit`` (``--help``/``--version``: 0, a usage error: 2)."""
    if exc.code is None:
        return EXIT_OK
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``capscale`` console script; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success, 1 invalid input, 2 usage, 130 interrupted (:func:`capscale.errors.exit_code`).

    Raises
    ------
    Exception
        An unexpected exception (a bug), with its traceback; with ``--debug``, every exception.
    """
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        command: argparse.ArgumentParser = getattr(args, "_cli_parser", parser)
        if extras:  # as parse_args, but the usage and the message are the command's, not capscale's
            command.error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as exc:  # argparse printed the usage and the error (or the help) already
        return _status(exc)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(func(args) or EXIT_OK)
    except (Exception, KeyboardInterrupt) as exc:
        code = exit_code(exc)
        if code is None or args.debug:
            raise
        if code == EXIT_INTERRUPTED:
            print(f"{command.prog}: interrupted", file=sys.stderr)
        else:
            if code == EXIT_USAGE:
                command.print_usage(sys.stderr)
            print(f"{command.prog}: error: {str(exc).strip() or type(exc).__name__}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
