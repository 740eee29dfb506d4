"""The `vis` command line: one subcommand per stage, each defined in its own `jobs` module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines `register(subparsers)`, which adds its parser and sets `func`.
# Heavy imports live inside the subcommands, so `vis --help` stays fast.
SUBCOMMAND_MODULES = (
    "jobs.synth",
    "jobs.eval",
    "jobs.convert_checkpoint",
    "jobs.demo",
    "jobs.pretrain",
    "jobs.train",
    "jobs.register_model",
    "jobs.segment",
    "jobs.process",
    "jobs.compact",
    "jobs.export",
    "jobs.export_model",
    "jobs.render",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vis", description="Video instance segmentation: data, training, corpus jobs."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
