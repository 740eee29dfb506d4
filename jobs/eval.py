"""`vis eval`: YouTube-VIS video mask AP/AR of a results file against a GT file."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="YouTube-VIS video mask AP/AR (exact to the official evaluator)",
        description=(
            "Evaluate YouTube-VIS results against ground truth. Prints AP, AP50, AP75, APs, "
            "APm, APl, AR1, AR10, AR100 and AP per category; writes them as fractions "
            "(-1 where undefined) to --out. Exit code 2 on bad input."
        ),
    )
    parser.add_argument("--gt", required=True, help="GT JSON (or .json.gz): path or fsspec URI")
    parser.add_argument(
        "--results", required=True, help="results JSON (or .json.gz): path or fsspec URI"
    )
    parser.add_argument("--out", help="write the metrics JSON here (path or fsspec URI)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vis_core.evaluation import EvaluationInputError, evaluate_ytvis
    from vis_core.storage import open_output

    try:
        metrics = evaluate_ytvis(args.gt, args.results)
    except (EvaluationInputError, OSError) as error:
        return _fail(error)
    print(metrics.format_table())
    if args.out:
        try:
            text = json.dumps(metrics.to_json_dict(), indent=2) + "\n"
            with open_output(args.out) as file:
                file.write(text.encode())
        except OSError as error:
            return _fail(error)
        print(f"metrics written to {args.out}")
    return 0


def _fail(error: Exception) -> int:
    message = " ".join(str(error).split())  # one line, whatever the cause
    print(f"vis eval: error: {message}", file=sys.stderr)
    return 2
