"""The timed GPU sitting script (`infra/device_train.py`) on CPU: it trains for its
budget, saves a loadable model that differs from its start, and reports its curve and
the validation AP."""

from __future__ import annotations

import dataclasses
import json

import torch

from infra import device_train
from vis_core.modeling.model_file import load_model, save_model
from vis_core.modeling.presets import get_preset
from vis_core.modeling.vita_model import VitaModel
from vis_core.synth.splits import preset
from vis_core.synth.writer import generate_split

TINY = {"width": 64, "height": 48, "frames": (4, 6)}


def test_a_sitting_trains_for_its_budget_and_reports(tmp_path) -> None:
    train = generate_split(str(tmp_path / "train"), preset("train").replace(**TINY), 2, seed=0)
    val = generate_split(str(tmp_path / "val"), preset("val").replace(**TINY), 2, seed=1)
    long_preset = preset("val-long").replace(width=64, height=48, frames=(12, 12))
    long = generate_split(str(tmp_path / "long"), long_preset, 1, seed=2)
    config = get_preset("vita_small_synth")
    config = dataclasses.replace(config, input=dataclasses.replace(config.input, min_size_test=48))
    torch.manual_seed(0)
    start = VitaModel(config)
    save_model(str(tmp_path / "start.vis.pt"), start)
    out = tmp_path / "out"
    device_train.main(
        ["--init-model", str(tmp_path / "start.vis.pt"), "--train", train.annotations_uri,
         "--long", long.annotations_uri, "--long-sampling-range", "8",
         "--val", val.annotations_uri, "--out", str(out), "--seconds", "4",
         "--batch-size", "1", "--num-frames", "2", "--loader-workers", "0", "--warmup", "1",
         "--log-every", "1"]
    )  # fmt: skip
    summary = json.loads((out / "sitting.json").read_text())
    assert (summary["long_split"], summary["long_sampling_range"]) == (long.annotations_uri, 8)
    assert summary["steps"] >= 1 and summary["clips"] == summary["steps"]
    assert len(summary["curve"]) == summary["steps"]
    assert summary["curve"][0]["lr"] in (5e-4, 5e-5)  # warmed up in 1 step (decayed if slow)
    assert 0.0 <= summary["val_vita_ap"] <= 100.0 and "val_per-frame_ap" in summary
    trained = load_model(str(out / "model.vis.pt"))
    assert trained.config == config
    changed = [
        name
        for name, value in trained.state_dict().items()
        if not torch.equal(value, start.state_dict()[name])
    ]
    assert changed


def test_a_head_sitting_trains_the_head_alone(tmp_path) -> None:
    """`--method hitf --freeze-detector`: the head is added and learns, the detector and
    VITA stay as they were, and the head's AP is measured."""
    train = generate_split(str(tmp_path / "train"), preset("train").replace(**TINY), 2, seed=0)
    val = generate_split(str(tmp_path / "val"), preset("val").replace(**TINY), 1, seed=1)
    config = get_preset("vita_small_synth")
    config = dataclasses.replace(config, input=dataclasses.replace(config.input, min_size_test=48))
    torch.manual_seed(0)
    start = VitaModel(config)
    save_model(str(tmp_path / "start.vis.pt"), start)
    out = tmp_path / "out"
    device_train.main(
        ["--init-model", str(tmp_path / "start.vis.pt"), "--train", train.annotations_uri,
         "--val", val.annotations_uri, "--out", str(out), "--seconds", "3", "--method", "hitf",
         "--freeze-detector", "--batch-size", "1", "--num-frames", "3", "--sampling-range", "5",
         "--loader-workers", "0", "--warmup", "1", "--log-every", "1", "--threads", "1"]
    )  # fmt: skip
    summary = json.loads((out / "sitting.json").read_text())
    assert summary["method"] == "hitf" and summary["num_frames"] == 3
    assert summary["sampling_range"] == 5
    assert "loss_hitf_mask_id" in summary["curve"][0]
    assert set(k for k in summary if k.startswith("val_")) == {"val_hitf_ap", "val_hitf_ap50"}
    trained = load_model(str(out / "model.vis.pt"))
    assert trained.config.hitf is not None
    before = start.state_dict()
    changed = {
        name.split(".")[0]
        for name, value in trained.state_dict().items()
        if name not in before or not torch.equal(value, before[name])
    }
    assert changed == {"hitf"}
