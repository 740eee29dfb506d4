"""`vis process`: segment every video under an input prefix into Parquet tracklet tables.

With --frame-queries, each frame's detector outputs also go to the `frame_queries` table;
`--from-frame-queries URI --method M` then re-associates that output's videos with another
temporal head (vita, per-frame, querytrack, hitf; not l2g) without decoding or the detector.

With --compact, the run's tables are rewritten into few large files when the job ends
(as `vis compact`; off by default: a job's own commits are one file per video).

Also a Ray job entrypoint: `ray job submit -- python -m jobs.process --input ... --output ...`
connects to the cluster the job runs on. Exits 0 when the job completes, even when some
videos failed (the summary counts them); 2 when it cannot run (bad arguments, unreachable
storage, a missing model).
"""

from __future__ import annotations

import argparse
import logging
import sys

from jobs import detector_backend, method_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "process",
        help="segment a corpus of videos into tracklet tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="folder or prefix of videos (path, s3://)")
    parser.add_argument("--output", required=True, help="prefix of the tables (path, s3://)")
    parser.add_argument(
        "--model",
        help="vis model file, URI or models:/NAME/VERSION|@ALIAS (default: the shipped model)",
    )
    method_option.add_argument(parser)
    parser.add_argument(
        "--frame-queries",
        nargs="?",
        const="float16",
        choices=("float16", "float32"),
        help="also write each frame's detector outputs to the frame_queries table (float16 "
        "unless given float32), so another temporal head can re-associate the corpus later",
    )
    parser.add_argument(
        "--from-frame-queries",
        metavar="URI",
        help="instead of --input: re-associate the videos of an earlier output's frame_queries "
        "table with --method, without running the detector",
    )
    parser.add_argument(
        "--source-run",
        help="with --from-frame-queries: the run whose frame queries to read (default: the "
        "only one there)",
    )
    parser.add_argument("--gpu", action="store_true", help="one worker per GPU, bf16")
    parser.add_argument(
        "--workers", type=int, help="segmentation workers (default: fill the cluster)"
    )
    parser.add_argument("--cpus-per-worker", type=int, help="CPUs and threads of each worker")
    parser.add_argument(
        "--pipeline",
        choices=("auto", "single", "staged"),
        default="auto",
        help="single: one actor per device does all of a video; staged: decoding, the device "
        "and the masks in separate stages (VITA); auto (default): staged with --gpu",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="process again the videos that failed"
    )
    parser.add_argument("--max-frames", type=int, help="fail videos with more frames than this")
    parser.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="fail a video that takes longer than this plus 0.5 s per frame (default 600; "
        "0: no limit)",
    )
    parser.add_argument(
        "--compact",
        action="store_true",
        help="at the end, rewrite the run's tables into few large files (as `vis compact`)",
    )
    parser.add_argument(
        "--s3-endpoint",
        help="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL; credentials always come "
        "from the environment, never from options)",
    )
    parser.add_argument("--ray-address", help="Ray cluster (default: RAY_ADDRESS or a local one)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the local store)")
    parser.add_argument("--no-tracking", action="store_true", help="do not record in MLflow")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    detector_backend.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from vis_core.corpus.listing import CorpusNotFoundError
    from vis_core.corpus.time_limit import TimeLimit
    from vis_core.modeling.model_file import ModelFileError
    from vis_core.video.decode import DecodeLimits
    from workflows.corpus_job import CorpusJobConfig, StorageFailure, run_corpus_job

    if args.s3_endpoint:
        # Before Ray starts, so a local cluster's workers inherit it (on a remote cluster,
        # set it in the runtime_env env_vars of the job).
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint
    try:
        backend = detector_backend.backend_from_args(args)
        time_limit = TimeLimit()
        if args.time_limit is not None:
            time_limit = TimeLimit(base_s=args.time_limit or None)
        limits = DecodeLimits()
        if args.max_frames is not None:
            limits = dataclasses.replace(limits, max_frames=args.max_frames)
        config = CorpusJobConfig(
            input_uri=args.input or "",
            output_uri=args.output,
            model_uri=args.model,
            use_gpu=args.gpu,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            retry_failed=args.retry_failed,
            limits=limits,
            time_limit=time_limit,
            ray_address=args.ray_address,
            track=not args.no_tracking,
            tracking_uri=args.tracking_uri,
            progress=not args.quiet,
            detector_backend=backend,
            method=args.method,
            pipeline=args.pipeline,
            frame_queries=args.frame_queries,
            from_frame_queries=args.from_frame_queries,
            source_run=args.source_run,
        )
    except ValueError as error:  # a bad backend or time limit, a pipeline the method has not
        print(f"vis process: error: {error}", file=sys.stderr)
        return 2
    try:
        summary = run_corpus_job(config)
    except (
        CorpusNotFoundError,
        ModelFileError,
        FileNotFoundError,
        PermissionError,
        ValueError,  # a method the model has no head for
    ) as error:
        print(f"vis process: error: {error}", file=sys.stderr)
        return 2
    except StorageFailure as error:  # the store failed past its retries: committed videos stay
        print(f"vis process: error: the job stopped: {error}", file=sys.stderr)
        return 1
    print(summary.describe())
    if args.compact:
        from vis_core.tables.compact import TableCompactor

        print(TableCompactor(args.output, summary.run_id).compact().describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.process", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
