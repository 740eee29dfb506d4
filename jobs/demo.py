"""`vis demo`: the embedded default, end to end on one machine with no cloud.

Until the corpus job lands, the demo generates a small synthetic corpus in the per-user
data folder and prints its difficulty statistics; segments it with the shipped model,
prints the YouTube-VIS AP; and writes previews (PNG contact sheets) of the ground truth
and of the predictions over the frames.
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
    parser.add_argument("--model", help="vis model file (default: the shipped model)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from vis_core import masks
    from vis_core.data.frames import iter_frames
    from vis_core.data.ytvis import YtvisDataset
    from vis_core.evaluation import evaluate_ytvis
    from vis_core.inference.dataset import segment_dataset
    from vis_core.inference.segmenter import VideoSegmenter
    from vis_core.modeling.model_file import DEFAULT_MODEL_FILE, load_model
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

    results: list[dict] = []
    if args.model or DEFAULT_MODEL_FILE.is_file():
        model = load_model(args.model)
        print(f"\nsegmenting with {args.model or DEFAULT_MODEL_FILE.name} ...", flush=True)
        results = segment_dataset(VideoSegmenter(model), dataset, model.config)
        (out / "results.json").write_text(json.dumps(results))
        print(evaluate_ytvis(summary.annotations_uri, results).format_table())
    else:
        print(f"\nno shipped model at {DEFAULT_MODEL_FILE}: showing the ground truth only")

    for video in dataset.videos[: args.previews]:
        picked = np.linspace(0, video.length - 1, 8).round().astype(int)
        frames = [f for t, f in enumerate(iter_frames(dataset, video)) if t in set(picked)]
        truth = np.stack([track.masks()[picked] for track in dataset.tracks(video.id)], axis=1)
        sheets = {"ground_truth": truth}  # [t, N, H, W]
        confident = [r for r in results if r["video_id"] == video.id and r["score"] >= 0.5]
        if results:
            predicted = [masks.decode([r["segmentations"][t] for t in picked]) for r in confident]
            sheets["predictions"] = (
                np.stack(predicted, axis=1)
                if predicted
                else np.zeros((len(picked), 0, *truth.shape[2:]), bool)
            )
        for kind, frame_masks in sheets.items():
            colors = instance_colors(frame_masks.shape[1])
            tiles = [overlay_masks(f, m, colors) for f, m in zip(frames, frame_masks, strict=True)]
            preview = out / "previews" / f"{video.name}_{kind}.png"
            write_png(str(preview), contact_sheet(tiles, columns=4))
            print(f"preview: {preview} ({frame_masks.shape[1]} instances)")
    print(
        "\nThe corpus job (`vis process`: Parquet tracklet tables from a corpus of videos) "
        "is not built yet; this demo shows the benchmark and the model it will run."
    )
    return 0
