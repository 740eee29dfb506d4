"""`vis register-model`: register a model file in MLflow, with the figures it was measured at.

`vis train --register NAME` registers what it trains; this registers a file trained
elsewhere (the shipped model, a GPU sitting's file) as a run of its own in the experiment
(default `vis-models`): the model's config and metadata as params, the `vis eval` metrics
files given with `--metrics SPLIT=FILE` as metrics (`SPLIT/AP`...), the file as an
artifact and a new version of NAME pointed at by the alias. Any job then takes it as
`--model models:/NAME@ALIAS`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register-model",
        help="register a model file in MLflow with its metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help="vis model file (default: the shipped model)")
    parser.add_argument("--name", required=True, help="registered model name")
    parser.add_argument("--alias", default="candidate", help="alias of the new version")
    parser.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="SPLIT=FILE",
        help="a `vis eval` metrics file, logged as SPLIT/AP... (repeatable)",
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the local store)")
    parser.add_argument("--experiment", default="vis-models", help="MLflow experiment")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vis_core.modeling.config import config_to_dict
    from vis_core.modeling.model_file import (
        DEFAULT_MODEL_FILE,
        ModelFileError,
        load_model,
        read_model_metadata,
    )
    from workflows.tracking import TrackingConfig, TrackingError, register_model_file

    try:
        metrics = _read_metrics(args.metrics)
        model = load_model(args.model)
        metadata = read_model_metadata(args.model)
    except (ModelFileError, ValueError, OSError) as error:
        print(f"vis register-model: error: {error}", file=sys.stderr)
        return 2
    model_file = args.model or str(DEFAULT_MODEL_FILE)
    params = {
        "model_file": Path(model_file).name,
        "config": config_to_dict(model.config),
        "metadata": metadata,
    }
    tracking = TrackingConfig(tracking_uri=args.tracking_uri, experiment=args.experiment)
    try:
        version = register_model_file(
            tracking, model_file, args.name, params, metrics, alias=args.alias
        )
    except TrackingError as error:
        print(f"vis register-model: error: {error}", file=sys.stderr)
        return 1
    print(
        f"registered {model_file} as models:/{version.name}/{version.version} "
        f"(models:/{version.name}@{version.alias}) with {len(metrics)} metrics"
    )
    return 0


def _read_metrics(specs: list[str]) -> dict[str, float]:
    """`["val=m.json", ...]` -> `{"val/AP": 0.28, ...}`: the numbers of each file."""
    metrics: dict[str, float] = {}
    for spec in specs:
        split, separator, path = spec.partition("=")
        if not separator or not split or not path:
            raise ValueError(f"--metrics takes SPLIT=FILE, got {spec!r}")
        try:
            values = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not a metrics JSON file: {error}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} is not a metrics JSON file: not an object")
        metrics.update(
            {
                f"{split}/{key}": float(value)
                for key, value in values.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)
            }
        )
    return metrics
