"""The ``capscale`` command line: a thin layer over the Python API.

Run ``capscale --help`` for the list of commands and ``capscale COMMAND --help`` for each.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from capscale import __version__

# Command groups, in the order they appear in --help. Each module exposes register(subparsers).
COMMAND_MODULES = [
    "capscale.commands.core",  # validate, analyze, demo
    "capscale.commands.bench",  # bench NAME
    "capscale.commands.evaluation",  # eval, family scan, ingest lm-eval
    "capscale.commands.emergence",  # emergence
    "capscale.commands.mass",  # mass, mass-sim
    "capscale.commands.ladder",  # ladder train|export, synthetic generate
    "capscale.commands.laws",  # fit, predict, backtest, data fetch
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (useful for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="capscale",
        description="Predict the downstream capabilities of language models from scale.",
    )
    parser.add_argument("--version", action="version", version=f"capscale {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``capscale`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
