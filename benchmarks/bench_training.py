"""Training throughput: frames per second of the full training step, next to a bare
forward and backward of the same model on the same batches, measured side by side.

CPU, one process at the machine's thread count, the small preset's recipe (2 clips of 3
frames from the synthetic training split). Two architectures: the shipped preset and the
earlier one (deformable pixel decoder, point-sampled losses), so the table shows what the
cheaper preset gains. "step" is what training does (clip sampling and augmentation, the
criterion with matching, backward, clipping, the optimiser); "bare" is forward, a sum of
the outputs, and backward, on batches made beforehand.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from vis_core.modeling.config import ModelConfig
from vis_core.modeling.presets import vita_small_synth

STEPS = 6


def _earlier_preset() -> ModelConfig:
    """The small preset as shipped before the fixed-budget trials (stated in the README)."""
    from benchmarks.convergence import baseline

    return baseline(vita_small_synth())


def measure(config: ModelConfig, train_uri: str) -> tuple[float, float]:
    """(training-step frames/s, bare forward+backward frames/s) of `config`."""
    from vis_core.modeling.vita_model import VitaModel
    from vis_core.training.batch import ClipBatch
    from vis_core.training.step import train_step
    from workflows.recipes import recipe
    from workflows.train_config import TrainJobConfig
    from workflows.train_worker import build_clip_stream, build_criterion

    job = TrainJobConfig(train_uri=train_uri, **recipe("vita_small_synth"))
    torch.manual_seed(0)
    model = VitaModel(config)
    criterion = build_criterion(config, frozen_detector=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clips = iter(build_clip_stream(job, config))
    frames_per_step = job.batch_size * job.num_frames
    piloting = config.frame_decoder.mask_piloting

    def step() -> None:
        batch = ClipBatch.from_clips([next(clips) for _ in range(job.batch_size)])
        train_step(model, criterion, optimizer, batch, job.clip_grad_norm, mask_piloting=piloting)

    batches = [
        ClipBatch.from_clips([next(clips) for _ in range(job.batch_size)]) for _ in range(STEPS)
    ]

    def bare(batch: ClipBatch) -> None:
        images, _ = batch.model_inputs(model.detector.preprocess)
        prediction = model(images)
        total = prediction.frames.pred_masks.sum() + prediction.video.pred_logits.sum()
        total = total + sum(aux.pred_masks.sum() for aux in prediction.frames.aux_outputs)
        model.zero_grad(set_to_none=True)
        total.backward()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(STEPS):
        step()
    step_fps = STEPS * frames_per_step / (time.perf_counter() - start)
    bare(batches[0])
    start = time.perf_counter()
    for batch in batches:
        bare(batch)
    bare_fps = STEPS * frames_per_step / (time.perf_counter() - start)
    return step_fps, bare_fps


def run() -> None:
    from vis_core.synth.splits import preset
    from vis_core.synth.writer import generate_split

    with tempfile.TemporaryDirectory() as folder:
        generate_split(folder, preset("train"), 6, seed=0)
        train_uri = str(Path(folder) / "annotations.json")
        rows = [("shipped", vita_small_synth()), ("earlier", _earlier_preset())]
        results = {name: measure(config, train_uri) for name, config in rows}
    print(f"{'vita_small_synth':<18} {'step frames/s':>14} {'bare fwd+bwd':>13} {'step/bare':>10}")
    for name, (step_fps, bare_fps) in results.items():
        print(f"{name:<18} {step_fps:>14.1f} {bare_fps:>13.1f} {step_fps / bare_fps:>10.2f}")
    shipped, earlier = results["shipped"][0], results["earlier"][0]
    print(f"training frames/s, shipped over earlier preset: {shipped / earlier:.2f}x")
