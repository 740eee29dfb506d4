"""`vis demo`: the embedded default, end to end on one machine with no cloud.

Until the corpus job lands, the demo generates a small synthetic corpus in the per-user
data folder, prints its difficulty statistics, decodes it back, and writes previews of
the ground-truth masks over the frames (PNG contact sheets a person can open).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the embedded default demo on a small synthetic corpus",
        description=__doc__,
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: <per-user data folder>/demo)"
    )
    parser.add_argument("--videos", type=int, default=6, help="synthetic videos (6)")
    parser.add_argument("--previews", type=int, default=3, help="videos to preview (3)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from vis_core.data.frames import iter_frames
    from vis_core.data.ytvis import YtvisDataset
    from vis_core.paths import data_dir
    from vis_core.render.overlay import contact_sheet, instance_colors, overlay_masks, write_png
    from vis_core.synth.splits import preset
    from vis_core.synth.writer import generate_split

    out = Path(args.out) if args.out else data_dir() / "demo"
    corpus = out / "corpus"
    print(f"generating {args.videos} synthetic val videos in {corpus} ...", flush=True)
    summary = generate_split(str(corpus), preset("val"), args.videos, seed=0, workers=2)
    print(summary.stats.table())

    dataset = YtvisDataset.load(summary.annotations_uri)
    for video in dataset.videos[: args.previews]:
        tracks = dataset.tracks(video.id)
        masks = np.stack([track.masks() for track in tracks], axis=1)  # [T, N, H, W]
        colors = instance_colors(len(tracks))
        picked = set(np.linspace(0, video.length - 1, 8).round().astype(int).tolist())
        tiles = [
            overlay_masks(frame, masks[t], colors)
            for t, frame in enumerate(iter_frames(dataset, video))
            if t in picked
        ]
        preview = out / "previews" / f"{video.name}_ground_truth.png"
        write_png(str(preview), contact_sheet(tiles, columns=4))
        print(f"preview: {preview} ({len(tracks)} instances, {video.length} frames)")
    print(
        "\nThe corpus job (`vis process`: tracklet tables from a trained model) is not built "
        "yet; this demo shows the benchmark it will run on."
    )
    return 0
