"""Training the L2G head with the training workflow's pieces (no Ray): a trained model
without the head gains one, which trains alone on the frozen detector in 4-frame clips;
the model file then carries it to `vis segment --method l2g`; the `vis train --method`
options map onto the job. And (slow) the head with its detector overfits two tiny
videos to a YouTube-VIS AP of 0.9, identities kept through each video."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch

from jobs import train as train_job
from jobs.cli import main
from vis_core import masks
from vis_core.data.augment import AugmentConfig
from vis_core.data.clips import Clip
from vis_core.evaluation import evaluate_ytvis
from vis_core.methods import build_segmenter, get_method
from vis_core.modeling.config import LossConfig, ModelConfig
from vis_core.modeling.model_file import DEFAULT_MODEL_FILE, load_model, save_model
from vis_core.modeling.presets import get_preset
from vis_core.modeling.vita_model import VitaModel
from vis_core.storage import open_fs
from vis_core.synth.generate import synthesize_video
from vis_core.synth.splits import preset
from vis_core.synth.writer import generate_split
from vis_core.training.batch import ClipBatch
from vis_core.training.optim import OptimConfig, build_optimizer
from vis_core.training.step import train_step
from workflows.train_config import TrainJobConfig
from workflows.train_worker import build_clip_stream, build_criterion, build_model, validate

TINY = {"width": 64, "height": 48, "frames": (4, 6)}


def small_config() -> ModelConfig:
    """The small preset at the tiny videos' size (inference at 48 pixels: fast)."""
    config = get_preset("vita_small_synth")
    return dataclasses.replace(config, input=dataclasses.replace(config.input, min_size_test=48))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A tiny train and val split, and a model file without an L2G head."""
    root = tmp_path_factory.mktemp("l2g")
    train = generate_split(str(root / "train"), preset("train").replace(**TINY), 2, seed=0)
    val = generate_split(str(root / "val"), preset("val").replace(**TINY), 2, seed=1)
    torch.manual_seed(0)
    model_file = str(root / "vita.vis.pt")
    save_model(model_file, VitaModel(small_config()))
    return train.annotations_uri, val.annotations_uri, model_file


def test_the_head_trains_alone_and_its_model_file_segments(data, tmp_path, capsys) -> None:
    train_uri, val_uri, vita_file = data
    job = TrainJobConfig(
        train_uri=train_uri,
        num_frames=get_method("l2g").clip_frames,
        augment=AugmentConfig(min_sizes=(48,), max_size=64),
        freeze_detector=True,
        method="l2g",
        init_model=vita_file,
        lr=1e-3,
    )
    model_config = get_method("l2g").with_head(small_config())
    model = build_model(job, model_config)
    initial = load_model(vita_file)
    assert initial.l2g is None and model.l2g is not None
    before = {name: value.clone() for name, value in model.state_dict().items()}
    for name, value in initial.state_dict().items():
        assert torch.equal(before[name], value), name  # detector and VITA from the file
    criterion = build_criterion(model_config, job.freeze_detector, job.method)
    optimizer = build_optimizer(model, job.optim_config())
    stream = torch.utils.data.DataLoader(
        build_clip_stream(job, model_config), batch_size=1, collate_fn=ClipBatch.from_clips
    )
    batches = iter(stream)
    for _ in range(2):
        result = train_step(model, criterion, optimizer, next(batches))
        assert all(name.startswith("loss_l2g_") for name in result.terms)
    changed = {n for n, v in model.state_dict().items() if not torch.equal(v, before[n])}
    assert changed and all(name.startswith("l2g.") for name in changed)

    model_file = str(tmp_path / "l2g.vis.pt")
    save_model(model_file, model)
    metrics = validate(load_model(model_file), val_uri, torch.device("cpu"), method="l2g")
    assert -1.0 <= metrics.ap <= 1.0

    results = tmp_path / "results.json"
    args = ["segment", "--data", val_uri, "--out", str(results), "--method", "l2g"]
    assert main([*args, "--model", model_file]) == 0
    fs, path = open_fs(val_uri)
    lengths = {v["id"]: v["length"] for v in json.loads(fs.cat_file(path))["videos"]}
    entries = json.loads(results.read_text())
    assert all(len(entry["segmentations"]) == lengths[entry["video_id"]] for entry in entries)
    assert "l2g" in capsys.readouterr().out
    # A model file without the head: a clear error, exit code 2.
    assert main([*args, "--model", vita_file]) == 2
    assert "has no L2G head" in capsys.readouterr().err


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vis")
    train_job.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["train", *argv])


def test_train_cli_method_option(data, monkeypatch) -> None:
    import workflows.train

    captured = []
    monkeypatch.setattr(workflows.train, "run_training", lambda config: captured.append(config))
    monkeypatch.setattr(train_job, "format_summary", lambda result: "")
    args = _parse(["--train", data[0], "--method", "l2g", "--freeze-detector"])
    assert args.func(args) == 0
    assert captured[-1].method == "l2g" and captured[-1].num_frames == 4
    assert captured[-1].freeze_detector


@pytest.mark.skipif(not DEFAULT_MODEL_FILE.is_file(), reason="no shipped model")
def test_l2g_on_the_shipped_model_segments_or_says_how_to_train_the_head() -> None:
    """The shipped file loads (written before the head existed, or with one); without a
    head, `--method l2g` is a clear error."""
    model = load_model()
    if model.l2g is None:
        with pytest.raises(ValueError, match="vis train --method l2g"):
            build_segmenter("l2g", model)
        return
    _, rendered = synthesize_video(preset("val").replace(**TINY), seed=0, index=0)
    instances = build_segmenter("l2g", model).segment(list(rendered.frames[:3]))
    assert instances.num_frames == 3 and (instances.height, instances.width) == (48, 64)


# ---------------------------------------------------------------------------------------
# Overfitting two tiny videos

SIZE, FRAMES = 96, 4  # at 64 pixels the stride-4 masks cap the video IoU near 0.85


def synth_clip(seed: int) -> Clip:
    """Two objects of one class (the class cannot tell them apart), moving."""
    config = preset("val").replace(
        width=SIZE, height=SIZE, frames=(FRAMES, FRAMES), instances=(2, 2), occluders=(0, 0),
        radius=(0.2, 0.3), noise_sigma=(1.0, 1.0), repeat_category_prob=1.0,
    )  # fmt: skip
    scene, rendered = synthesize_video(config, seed=seed, index=0)
    ids = [k for k in range(1, len(scene.objects) + 1) if (rendered.labels == k).any()]
    return Clip(
        frames=rendered.frames,
        masks=np.stack([rendered.labels == k for k in ids]),
        labels=np.array([scene.objects[k - 1].category.id - 1 for k in ids]),
        track_ids=np.array(ids),
        frame_indices=np.arange(FRAMES),
    )


def ground_truth(clips: list[Clip], num_classes: int) -> dict:
    """The clips as a YouTube-VIS ground truth (video ids 1, 2, ...; category = label + 1)."""
    videos, annotations = [], []
    for video_id, clip in enumerate(clips, start=1):
        videos.append({"id": video_id, "width": SIZE, "height": SIZE, "length": FRAMES})
        for track, label in zip(clip.masks, clip.labels, strict=True):
            frames = [m if m.any() else None for m in track]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "iscrowd": 0,
                    "category_id": int(label) + 1,
                    "segmentations": [None if m is None else masks.encode_one(m) for m in frames],
                    "areas": [None if m is None else float(m.sum()) for m in frames],
                }
            )
    categories = [{"id": k + 1, "name": str(k)} for k in range(num_classes)]
    return {"videos": videos, "annotations": annotations, "categories": categories}


def l2g_ap(model: VitaModel, clips: list[Clip]) -> float:
    segmenter = build_segmenter("l2g", model)
    results = []
    for video_id, clip in enumerate(clips, start=1):
        instances = segmenter.segment(list(clip.frames))
        categories = list(range(1, model.config.num_classes + 1))
        results.extend(instances.to_ytvis_results(video_id, categories))
    return evaluate_ytvis(ground_truth(clips, model.config.num_classes), results).ap


@pytest.mark.slow
def test_the_head_overfits_two_tiny_videos() -> None:
    """Two 4-frame videos of two same-class objects each. A random detector cannot carry
    the head (the head's masks are the frame decoder's), so the detector trains with it,
    the detector's own frame losses included (the paper's phase 2: everything trains).
    Within 200 steps the online head reaches AP 0.9: each object one track through its
    video, a class-correct, confident (query, class) pair with a video IoU near 0.9."""
    torch.manual_seed(0)
    base = get_preset("vita_small_synth")
    config = get_method("l2g").with_head(
        dataclasses.replace(
            base,
            input=dataclasses.replace(base.input, min_size_test=SIZE),
            loss=LossConfig(dense_masks=True),
        )
    )
    model = VitaModel(config)
    clips = [synth_clip(seed=5), synth_clip(seed=8)]
    assert all(len(set(clip.labels.tolist())) == 1 for clip in clips)
    assert l2g_ap(model, clips) < 0.1
    batch = ClipBatch.from_clips(clips)
    criterion = get_method("l2g").criterion(config, False)
    optimizer = build_optimizer(
        model, OptimConfig(lr=1e-3, weight_decay=0.0, backbone_multiplier=1.0)
    )
    ap = 0.0
    for step in range(1, 201):
        train_step(model, criterion, optimizer, batch, clip_grad_norm=1.0)
        if step % 25 == 0:
            ap = l2g_ap(model, clips)
            if ap >= 0.9:
                break
    assert ap >= 0.9, f"AP {ap:.3f} after {step} steps"
