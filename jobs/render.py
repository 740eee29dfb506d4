"""`vis render`: draw one video's tracklets from the output tables into an mp4.

Each tracklet's mask is blended over the frames in its own colour, with its outline and a
label `#<track_id> <category> <score>`, for the tracks scoring at least --min-score (said in
a legend at the bottom-left corner); a PNG contact sheet of evenly spaced frames goes
next to the mp4 (FILE.png) unless --sheet names another place. Exit code 2 when the video
is unknown, failed in the run, or cannot be read.
"""

from __future__ import annotations

import argparse
import sys

from vis_core.render import DEFAULT_MIN_SCORE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "render",
        help="draw a video's tracklets from the output tables into an mp4",
        description=__doc__,
    )
    parser.add_argument("--tables", required=True, help="output prefix of the tables (or URI)")
    parser.add_argument("--video", required=True, help="video_id, as in the videos table")
    parser.add_argument("--out", required=True, help="mp4 to write (path or fsspec URI)")
    parser.add_argument("--sheet", help="contact sheet PNG to write (default: next to --out)")
    parser.add_argument("--run-id", help="run to show (default: the latest)")
    parser.add_argument(
        "--sheet-frames", type=int, default=8, help="frames on the contact sheet (8)"
    )
    parser.add_argument(
        "--min-score",
        type=float,
        default=DEFAULT_MIN_SCORE,
        help=f"draw only tracks scoring at least this ({DEFAULT_MIN_SCORE}; 0 draws all)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vis_core.render.tracklets import RenderError, render_tracklets
    from vis_core.video.errors import VideoDecodeError

    sheet = args.sheet or default_sheet_uri(args.out)
    try:
        summary = render_tracklets(
            args.tables,
            args.video,
            args.out,
            sheet_uri=sheet,
            run_id=args.run_id,
            sheet_frames=args.sheet_frames,
            min_score=args.min_score,
        )
    except (RenderError, VideoDecodeError, OSError, ValueError) as error:
        message = " ".join(str(error).split())  # one line, whatever the cause
        print(f"vis render: error: {message}", file=sys.stderr)
        return 2
    print(
        f"{summary.frames_written} frames, {summary.tracklets_drawn} tracklets of "
        f"{summary.video_id} (run {summary.run_id}; {summary.tracklets_hidden} below score "
        f"{summary.min_score:.2f} not drawn) -> {summary.out_uri}"
    )
    print(f"contact sheet -> {summary.sheet_uri}")
    return 0


def default_sheet_uri(out_uri: str) -> str:
    """The contact sheet's place next to the mp4: `clip.mp4` -> `clip.png`."""
    stem = out_uri[: -len(".mp4")] if out_uri.lower().endswith(".mp4") else out_uri
    return f"{stem}.png"
