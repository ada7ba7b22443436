"""Entry point of the ``ctxsim`` command line; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

from ctxsim.spec.errors import SpecError

# Modules that define ``add_parsers(subparsers)``; each parser sets ``func(args) -> exit code``.
SUBCOMMAND_MODULES = [
    "ctxsim.cli.models",
    "ctxsim.cli.estimate",
    "ctxsim.cli.dashboard",
    "ctxsim.cli.hardware",
    "ctxsim.cli.size",
    "ctxsim.cli.verify",
    "ctxsim.cli.sweep",
    "ctxsim.cli.plot",
    "ctxsim.cli.calibrate",
]


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}; see '{self.prog} --help'\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ctxsim", description="What a long-context LLM costs: FLOPs, bytes, KV memory, time.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpecError as err:
        sys.stderr.write(f"ctxsim {args.command}: error: {err}\n")
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
