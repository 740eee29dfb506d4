"""`vis segment` then `vis eval`: a dataset's videos to YouTube-VIS results and metrics."""

import json
from pathlib import Path

import pytest
import torch

from jobs.cli import main
from vis_core.modeling.model_file import DEFAULT_MODEL_FILE, ModelFileError, load_model, save_model
from vis_core.modeling.presets import vita_small_synth
from vis_core.modeling.vita_model import VitaModel
from vis_core.synth.splits import preset
from vis_core.synth.writer import generate_split


@pytest.fixture(scope="module")
def split_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    config = preset("val").replace(width=64, height=48, frames=(10, 12))
    generate_split(str(root / "val"), config, num_videos=2, seed=1)
    torch.manual_seed(0)
    model_file = root / "model.vis.pt"
    save_model(str(model_file), VitaModel(vita_small_synth()), weights_dtype=torch.float16)
    return str(root / "val" / "annotations.json"), str(model_file), root


@pytest.mark.parametrize("method", ["vita", "per-frame"])
def test_segment_writes_results_that_vis_eval_reads(split_and_model, method, capsys):
    annotations, model_file, root = split_and_model
    results, metrics = root / f"{method}.json", root / f"{method}_metrics.json"
    args = ["segment", "--data", annotations, "--out", str(results), "--model", model_file]
    assert main([*args, "--method", method]) == 0
    entries = json.loads(results.read_text())
    gt = json.loads(Path(annotations).read_text())
    lengths = {video["id"]: video["length"] for video in gt["videos"]}
    assert {entry["video_id"] for entry in entries} <= set(lengths)
    assert all(len(e["segmentations"]) == lengths[e["video_id"]] for e in entries)
    assert (
        main(["eval", "--gt", annotations, "--results", str(results), "--out", str(metrics)]) == 0
    )
    assert 0.0 <= json.loads(metrics.read_text())["AP"] <= 1.0
    assert "instances from 2 videos" in capsys.readouterr().out


def test_half_precision_model_files_load_as_float32(split_and_model):
    _, model_file, _ = split_and_model
    model = load_model(model_file)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_missing_model_or_data_exit_2(split_and_model, tmp_path):
    annotations, model_file, _ = split_and_model
    out = str(tmp_path / "r.json")
    assert main(["segment", "--data", annotations, "--out", out, "--model", "nope.pt"]) == 2
    missing = str(tmp_path / "none.json")
    assert main(["segment", "--data", missing, "--out", out, "--model", model_file]) == 2


def test_the_shipped_model_loads_when_present():
    if DEFAULT_MODEL_FILE.is_file():
        assert load_model().config.name == "vita_small_synth"
    else:
        with pytest.raises(ModelFileError, match="shipped model is missing"):
            load_model()
