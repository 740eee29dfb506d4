"""The corpus job end to end against the model alone, side by side in one run.

- end to end: `run_corpus_job` on a local folder of videos (listing, reading, decoding,
  inference, masks, RLE, writing the tables), local Ray, one model actor: on both
  pipelines (`single`: the actor has every CPU and does all of a video; `staged`: it has
  every CPU but one, left to the decoders and finishers);
- model alone: the same model on the same frames already decoded in memory (inference,
  masks and RLE), one process, the same thread count.

The ratio of the two frames-per-second figures is the pipeline's efficiency (goal on CPU:
0.8 or more). CPU: the shipped `vita_small_synth` on synthetic val videos (320x240). With
CUDA: also `vita_r50_ytvis19` (random weights) on the same videos resized to 640x360.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CPU_VIDEOS = 40  # enough that starting the workers (a few seconds) is amortised


def _decoded(video_uri: str) -> list[np.ndarray]:
    from vis_core.video.decode import open_video

    with open_video(video_uri) as reader:
        return [frame.image for frame in reader.frames()]


def _model_alone(model_file: str | None, videos: list[list[np.ndarray]], device: str) -> float:
    """Frames per second of the segmenter over in-memory frames (the job's own settings)."""
    from vis_core.inference.segmenter import VideoSegmenter
    from vis_core.modeling.model_file import load_model

    model = load_model(model_file, device=device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    segmenter = VideoSegmenter(model, device=device, dtype=dtype)
    segmenter.segment(videos[0][:2])  # warm-up
    start = time.perf_counter()
    frames = 0
    for video in videos:
        instances = segmenter.segment(video)
        frames += instances.num_frames
    return frames / (time.perf_counter() - start)


def _end_to_end(
    model_file: str | None, corpus: Path, output: Path, use_gpu: bool, pipeline: str
) -> float:
    from workflows.corpus_job import CorpusJobConfig, run_corpus_job

    summary = run_corpus_job(
        CorpusJobConfig(
            input_uri=str(corpus),
            output_uri=str(output),
            model_uri=model_file,
            use_gpu=use_gpu,
            workers=1,
            pipeline=pipeline,
            track=False,
            progress=False,
        )
    )
    if summary.failed:
        raise RuntimeError(f"the benchmark corpus had failures: {summary.failures}")
    return summary.frames_per_second


def _resized_corpus(source: Path, target: Path, height: int, width: int) -> None:
    """The source videos resized to height x width (for the 360p GPU row)."""
    from torch.nn import functional as F

    from vis_core.video.encode import write_mp4

    target.mkdir(parents=True)
    for video in sorted(source.glob("*.mp4")):
        frames = torch.from_numpy(np.stack(_decoded(str(video)))).permute(0, 3, 1, 2).float()
        resized = F.interpolate(frames, size=(height, width), mode="bilinear")
        write_mp4(str(target / video.name), resized.round().byte().permute(0, 2, 3, 1).numpy())


def run() -> None:
    import ray

    from vis_core.modeling.model_file import save_model
    from vis_core.modeling.presets import vita_r50_ytvis19
    from vis_core.modeling.vita_model import VitaModel
    from vis_core.synth.splits import preset
    from vis_core.synth.writer import generate_split

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_split(str(root / "synth"), preset("val"), CPU_VIDEOS, seed=0)
        corpus = root / "synth" / "videos"
        cases = [("vita_small_synth (shipped)", None, corpus, "cpu")]
        if torch.cuda.is_available():
            r50 = str(root / "r50.vis.pt")
            save_model(r50, VitaModel(vita_r50_ytvis19()))
            _resized_corpus(corpus, root / "360p", 360, 640)
            cases.append(("vita_r50_ytvis19 (random)", r50, root / "360p", "cuda"))
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        try:
            for index, (name, model_file, videos_dir, device) in enumerate(cases):
                videos = [_decoded(str(p)) for p in sorted(videos_dir.glob("*.mp4"))]
                alone = _model_alone(model_file, videos, device)
                frames = sum(len(v) for v in videos)
                size = f"{videos[0][0].shape[1]}x{videos[0][0].shape[0]}"
                for pipeline in ("single", "staged"):
                    output = root / f"tables_{index}_{pipeline}"
                    job = _end_to_end(model_file, videos_dir, output, device == "cuda", pipeline)
                    row = (name, device, pipeline, size, len(videos), frames, job, alone)
                    rows.append(row)
        finally:
            ray.shutdown()
    threads = torch.get_num_threads()
    print(f"end to end: the corpus job; alone: the model on decoded frames ({threads} threads)")
    header = ("model", "device", "pipeline", "size", "videos", "frames", "job fps")
    header += ("alone fps", "ratio")
    print("  ".join(f"{h:>13}" for h in header))
    for name, device, pipeline, size, count, frames, job, alone in rows:
        print(
            f"{name:>13}  {device:>13}  {pipeline:>13}  {size:>13}  {count:>13}  {frames:>13}  "
            f"{job:13.1f}  {alone:13.1f}  {job / alone:13.2f}"
        )
