"""`vis compact`: rewrite a corpus job's tables into few large files (packs).

A job commits one Parquet file per video in each table; `vis compact --tables OUT`
rewrites each run's committed videos into packs of up to --videos-per-file videos, so a
table of N videos has at most max(3, N / 100) files. Safe while jobs write to the same
output and readers read it (each video is read exactly once throughout), and killed at any
moment it loses nothing: run it again to finish. See vis_core/tables/compact.py.

Exit status: 0 when every run is compacted (a group whose sources a concurrent job or
compaction changed is left for the next run, and said so); 2 when there is nothing to
compact (no tables, an unknown run) or bad options.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compact",
        help="rewrite committed tables into few large files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tables", required=True, help="output prefix of `vis process`")
    parser.add_argument(
        "--run-id",
        action="append",
        dest="run_ids",
        help="compact only this run (repeatable; default: every run)",
    )
    parser.add_argument(
        "--videos-per-file",
        type=int,
        default=1000,
        help="videos per pack (default 1000; 100 or more keeps the N / 100 file bound)",
    )
    parser.add_argument("--s3-endpoint", help="S3-compatible endpoint URL (default: env)")


def run(args: argparse.Namespace) -> int:
    from vis_core.tables.compact import CompactionOptions, compact_tables, output_runs
    from vis_core.tables.read import TablesNotFoundError

    if args.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
    if args.videos_per_file < 1:
        print("vis compact: error: --videos-per-file must be positive", file=sys.stderr)
        return 2
    try:
        runs = output_runs(args.tables)
        unknown = sorted(set(args.run_ids or ()) - set(runs))
        if unknown:
            print(
                f"vis compact: error: no run {', '.join(unknown)} under {args.tables}; "
                f"its runs are {', '.join(runs)}",
                file=sys.stderr,
            )
            return 2
        options = CompactionOptions(videos_per_file=args.videos_per_file)
        summaries = compact_tables(args.tables, run_ids=args.run_ids or runs, options=options)
    except (TablesNotFoundError, FileNotFoundError, PermissionError) as error:
        print(f"vis compact: error: {error}", file=sys.stderr)
        return 2
    for summary in summaries:
        print(summary.describe())
    return 0
