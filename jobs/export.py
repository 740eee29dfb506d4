"""`vis export`: one run of the output tables as a YouTube-VIS results file for `vis eval`."""

from __future__ import annotations

import argparse
import gzip
import json
import sys

_SHOWN = 10  # unmatched names printed


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="the output tables as YouTube-VIS results (for vis eval)",
        description=(
            "Write one run of the output tables as a YouTube-VIS results JSON with the video "
            "and category ids of a GT file. Table videos match GT videos by file name, "
            "categories by name; every instance gets a mask for every GT frame. Prints "
            "matched and unmatched counts. Exit code 2 on bad input."
        ),
    )
    parser.add_argument("--tables", required=True, help="the corpus job's output prefix")
    parser.add_argument("--gt", required=True, help="GT JSON: path or fsspec URI")
    parser.add_argument(
        "--out", required=True, help="results JSON (.json.gz compresses): path or fsspec URI"
    )
    parser.add_argument("--run-id", help="the run to export (default: the latest)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vis_core.data.ytvis import AnnotationFormatError
    from vis_core.storage import open_output
    from vis_core.tables.export import ExportError, export_ytvis_results

    try:
        export = export_ytvis_results(args.tables, args.gt, run_id=args.run_id)
    except (ExportError, AnnotationFormatError, OSError) as error:
        return _fail(error)
    data = json.dumps(export.results).encode()
    try:
        with open_output(args.out) as file:
            file.write(gzip.compress(data) if args.out.endswith(".gz") else data)
    except OSError as error:
        return _fail(error)
    print(f"matched videos: {export.matched}")
    _print_names("table videos not in the GT", export.unmatched_table_videos)
    _print_names("GT videos without rows", export.gt_videos_without_rows)
    _print_names("failed videos", export.failed_videos)
    if export.dropped_tracklets:
        names = ", ".join(export.dropped_categories)
        print(f"tracklets dropped (categories not in the GT: {names}): {export.dropped_tracklets}")
    print(f"{len(export.results)} results written to {args.out}")
    return 0


def _print_names(label: str, names: tuple[str, ...]) -> None:
    shown = ", ".join(names[:_SHOWN]) + (", ..." if len(names) > _SHOWN else "")
    print(f"{label}: {len(names)}" + (f" ({shown})" if names else ""))


def _fail(error: Exception) -> int:
    message = " ".join(str(error).split())  # one line, whatever the cause
    print(f"vis export: error: {message}", file=sys.stderr)
    return 2
