"""`vis demo`: the embedded default, end to end on one machine with no cloud.

It generates a small synthetic corpus (with its ground truth) and puts it, with the real
videos of `../shared/videos/` when that folder is there, into a local folder that stands
in for the bucket; runs the corpus job on local Ray with the shipped model; prints the
summary and the AP on the synthetic part (`vis export` + `vis eval`); and renders
previews (mp4 and PNG contact sheets) of a few videos.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from vis_core.render import DEFAULT_MIN_SCORE

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the corpus job on a small synthetic (and real) corpus",
        description=__doc__,
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: <per-user data folder>/demo)"
    )
    parser.add_argument("--videos", type=int, default=8, help="synthetic videos (8)")
    parser.add_argument("--real-videos", default=str(SHARED_VIDEOS), help="real videos to add")
    parser.add_argument("--previews", type=int, default=2, help="videos to render per part")
    parser.add_argument("--model", help="vis model file (default: the shipped model)")
    parser.add_argument(
        "--min-score",
        type=float,
        default=DEFAULT_MIN_SCORE,
        help=f"previews draw tracks scoring at least this ({DEFAULT_MIN_SCORE})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vis_core.corpus.listing import is_video_file
    from vis_core.evaluation import evaluate_ytvis
    from vis_core.paths import data_dir
    from vis_core.render.tracklets import render_tracklets
    from vis_core.synth.splits import preset
    from vis_core.synth.writer import generate_split
    from vis_core.tables.export import export_ytvis_results
    from vis_core.tables.read import read_table
    from workflows.corpus_job import CorpusJobConfig, run_corpus_job

    out = Path(args.out) if args.out else data_dir() / "demo"
    bucket, tables = out / "bucket", out / "tables"
    truth = out / "ground_truth"
    if not (truth / "annotations.json").is_file():
        print(f"generating {args.videos} synthetic val videos ...", flush=True)
        summary = generate_split(str(truth), preset("val"), args.videos, seed=0, workers=2)
        print(summary.stats.table())
    synthetic = bucket / "synthetic"
    synthetic.mkdir(parents=True, exist_ok=True)
    for video in sorted((truth / "videos").glob("*.mp4")):
        _copy_once(video, synthetic / video.name)
    real = Path(args.real_videos)
    if real.is_dir():
        for video in sorted(p for p in real.iterdir() if is_video_file(p.name)):
            _copy_once(video, bucket / "real" / video.name)
    print(f"\ncorpus (the stand-in bucket): {bucket}", flush=True)

    summary = run_corpus_job(
        CorpusJobConfig(input_uri=str(bucket), output_uri=str(tables), model_uri=args.model)
    )
    print(f"\n{summary.describe()}")

    exported = export_ytvis_results(str(tables), str(truth / "annotations.json"))
    metrics = evaluate_ytvis(str(truth / "annotations.json"), exported.results)
    print(f"\nAP on the synthetic part ({exported.matched} videos):")
    print(metrics.format_table())

    videos = read_table(str(tables), "videos", run_id=summary.run_id).to_pylist()
    videos.sort(key=lambda video: video["video_id"])
    print(f"\npreviews (tracks scoring >= {args.min_score:.2f}; the tables keep every track):")
    for part in ("synthetic/", "real/"):
        chosen = [v for v in videos if v["video_id"].startswith(part) and v["status"] == "ok"]
        for video in chosen[: args.previews]:
            name = video["video_id"].replace("/", "_").rsplit(".", 1)[0]
            target = out / "previews" / f"{name}.mp4"
            rendered = render_tracklets(
                str(tables),
                video["video_id"],
                str(target),
                sheet_uri=str(target.with_suffix(".png")),
                run_id=summary.run_id,
                min_score=args.min_score,
            )
            print(f"  {rendered.out_uri}\n  {rendered.sheet_uri}")
    print(
        f"\ntables: {tables}/{{videos,tracklets,tracklet_frames}} "
        "(open with pyarrow.dataset or DuckDB read_parquet)"
    )
    if args.model is None:
        print(
            "\nnote: the shipped model is a small one trained on this project's synthetic "
            "shapes only (circle, square, triangle, star, ring, cross, crescent, heart): on "
            "real videos its labels mean nothing. For real videos convert an official VITA "
            "checkpoint (vis convert-checkpoint) and pass it with --model."
        )
    return 0


def _copy_once(source: Path, target: Path) -> None:
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
