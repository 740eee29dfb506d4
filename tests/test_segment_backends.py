"""`vis segment --backend onnx` and `--backend compile` give the results of `--backend
torch` (the detector run by ONNX Runtime from the cached export or from `--onnx FILE`, or
compiled by torch.compile), and `vis process` takes the same options. The shipped model's
export is cached in the session's cache folder (shared with test_onnx_export.py; the first
of the two files to run exports it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main
from vis_core import masks
from vis_core.export.backend import DetectorBackend
from vis_core.export.onnx_cache import cached_detector_onnx
from vis_core.modeling.model_file import load_model
from vis_core.synth.splits import preset
from vis_core.synth.writer import generate_split

pytest.importorskip("onnxruntime")

SCORE_TOLERANCE = 1e-3
MIN_MASK_IOU = 0.95  # mean over a track's frames


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """Two synthetic videos of 320x240 (the shipped model's size), 10 to 12 frames each."""
    root = tmp_path_factory.mktemp("segment_onnx")
    generate_split(str(root / "val"), preset("val").replace(frames=(10, 12)), 2, seed=0)
    return root / "val" / "annotations.json"


def segment(split: Path, out: Path, *options: str) -> list[dict]:
    assert main(["segment", "--data", str(split), "--out", str(out), *options]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def torch_results(split, tmp_path_factory) -> list[dict]:
    return segment(split, tmp_path_factory.mktemp("torch") / "r.json", "--backend", "torch")


def mean_iou(first: list[dict], second: list[dict]) -> float:
    a, b = masks.decode(first), masks.decode(second)
    union = (a | b).sum(axis=(1, 2))
    iou = np.where(union > 0, (a & b).sum(axis=(1, 2)) / np.maximum(union, 1), 1.0)
    return float(iou.mean())


def assert_same_results(expected: list[dict], actual: list[dict]) -> None:
    """Every instance has a counterpart of the same video and class, score within
    SCORE_TOLERANCE and masks of mean IoU >= MIN_MASK_IOU (the order of near-equal scores
    may differ)."""
    assert len(actual) == len(expected)
    unmatched = list(actual)
    worst_score, worst_iou = 0.0, 1.0
    for want in expected:
        candidates = [
            got
            for got in unmatched
            if (got["video_id"], got["category_id"]) == (want["video_id"], want["category_id"])
        ]
        assert candidates, want["video_id"]
        got = max(candidates, key=lambda c: mean_iou(want["segmentations"], c["segmentations"]))
        unmatched.remove(got)
        worst_score = max(worst_score, abs(got["score"] - want["score"]))
        worst_iou = min(worst_iou, mean_iou(want["segmentations"], got["segmentations"]))
    print(f"worst |score difference| {worst_score:.1e}, worst mean mask IoU {worst_iou:.4f}")
    assert worst_score <= SCORE_TOLERANCE and worst_iou >= MIN_MASK_IOU


def test_onnx_backend_gives_the_torch_results(split, torch_results, tmp_path, capsys):
    cached = segment(split, tmp_path / "cached.json", "--backend", "onnx")
    assert "frames/s, vita, onnx)" in capsys.readouterr().out
    assert_same_results(torch_results, cached)
    onnx_file = cached_detector_onnx(load_model())  # the export the first run made
    from_file = segment(
        split, tmp_path / "file.json", "--backend", "onnx", "--onnx", str(onnx_file)
    )
    assert from_file == cached


def test_compile_backend_compiles_the_detectors_forward_for_inference_only():
    from vis_core.export.backend import apply_detector_backend
    from vis_core.modeling.presets import vita_small_synth
    from vis_core.modeling.vita_model import VitaModel

    model = VitaModel(vita_small_synth())
    with pytest.raises(ValueError, match=r"call model\.eval"):
        apply_detector_backend(model, DetectorBackend("compile"))
    assert apply_detector_backend(model.eval(), DetectorBackend("compile")) is model
    assert model.detector._compiled_call_impl is not None  # what nn.Module.compile sets
    assert model.vita._compiled_call_impl is None


@pytest.mark.slow  # the compilation: about 2 minutes here, 30 s with inductor's disk cache
def test_compile_backend_gives_the_torch_results(split, torch_results, tmp_path, capsys):
    """Two videos of 10 and 12 frames: chunks of several lengths through one compiled
    detector (dynamo's automatic dynamic shapes); worst score difference 8e-6, mask IoU
    0.9999 here."""
    compiled = segment(split, tmp_path / "compiled.json", "--backend", "compile")
    assert "frames/s, vita, compile)" in capsys.readouterr().out
    assert_same_results(torch_results, compiled)


def test_bad_onnx_options_exit_2(split, tmp_path, capsys):
    out = str(tmp_path / "r.json")
    base = ["segment", "--data", str(split), "--out", out]
    assert main([*base, "--onnx", "model.onnx"]) == 2
    assert "--onnx is read only with --backend onnx" in capsys.readouterr().err
    assert main([*base, "--backend", "onnx", "--onnx", str(tmp_path / "none.onnx")]) == 2
    assert "ONNX file not found" in capsys.readouterr().err
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not onnx")
    assert main([*base, "--backend", "onnx", "--onnx", str(garbage)]) == 2
    assert "not a readable ONNX file" in capsys.readouterr().err


def test_process_passes_the_backend_to_the_corpus_job(monkeypatch, tmp_path):
    import workflows.corpus_job

    seen = {}

    def fake_job(config):
        seen["config"] = config
        return workflows.corpus_job.CorpusJobSummary(
            "r", "m", config.output_uri, 0, 0, 0, 0, 0, 0, 1.0
        )

    monkeypatch.setattr(workflows.corpus_job, "run_corpus_job", fake_job)
    argv = ["process", "--input", str(tmp_path), "--output", str(tmp_path / "t"), "--quiet"]
    assert main([*argv, "--backend", "onnx", "--onnx", "d.onnx"]) == 0
    assert seen["config"].detector_backend == DetectorBackend("onnx", "d.onnx")
    assert main(argv) == 0
    assert seen["config"].detector_backend == DetectorBackend("torch")
    assert main([*argv, "--backend", "compile"]) == 0
    assert seen["config"].detector_backend == DetectorBackend("compile")
    assert main([*argv, "--onnx", "d.onnx"]) == 2
