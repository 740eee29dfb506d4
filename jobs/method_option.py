"""`--method` of `vis segment` and `vis process`: one definition of the option."""

from __future__ import annotations

import argparse

from vis_core.methods import METHODS


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        choices=tuple(METHODS),
        default="vita",
        help="how frame detections become video instances (default vita; an online head "
        "needs a model file that carries it): "
        + "; ".join(f"{name}: {method.summary}" for name, method in METHODS.items()),
    )
