"""The prepared GPU check (benchmarks/gpu_check.py): its smoke mode on the CPU writes every
part's figures, and a part that fails leaves its error while the others go on. The full
check runs on a lent GPU (`bash infra/gpu_check.sh`, README "GPU check"); the `gpu` test
runs its model part there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

REPOSITORY = Path(__file__).resolve().parent.parent


def _check(out: Path, *args: str) -> dict:
    subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out), *args],
        cwd=REPOSITORY,
        check=True,
        timeout=300,
    )
    return json.loads((out / "gpu_check.json").read_text())


def test_smoke_check_writes_every_figure(tmp_path):
    result = _check(tmp_path, "--smoke")
    assert result["smoke"] is True
    assert set(result["parts"]) == set(gpu_check.PARTS)
    assert all(part["status"] == "ok" for part in result["parts"].values()), result["parts"]
    model = result["parts"]["model"]
    assert {row["batch"] for row in model["rows"]} >= set(gpu_check.SMOKE_PLAN.batches)
    assert model["model_fps"] > 0 and model["vita"]["fps"] > 0
    assert model["compile"]["status"] == "not run"
    corpus = result["parts"]["corpus"]
    frames = gpu_check.SMOKE_PLAN.clips * gpu_check.SMOKE_PLAN.clip_frames
    assert corpus["frames"] == corpus["job_frames"] == frames
    assert corpus["alone_fps"] > 0 and corpus["job_fps"] > 0 and corpus["ratio"] > 0
    long_video = result["parts"]["long_video"]
    assert [row["frames"] for row in long_video["rows"]] == list(gpu_check.SMOKE_PLAN.lengths)
    assert long_video["longest_frames"] == gpu_check.SMOKE_PLAN.lengths[-1]
    figures = result["figures"]
    assert figures["model_fps"] == model["model_fps"]
    assert figures["corpus_ratio"] == corpus["ratio"]
    assert figures["long_video_frames"] == long_video["longest_frames"]
    for name in gpu_check.PARTS:
        assert json.loads((tmp_path / f"gpu_check_{name}.json").read_text())["part"] == name


def test_a_failing_part_leaves_its_error_and_the_others_go_on(tmp_path, monkeypatch):
    # A source video that cannot be decoded: the corpus part fails, the model part after
    # it still runs.
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(b"not a video")
    monkeypatch.setenv("VIS_GPU_CHECK_VIDEOS", str(videos))
    result = _check(tmp_path / "out", "--smoke", "--parts", "corpus", "model")
    corpus = result["parts"]["corpus"]
    assert corpus["status"] == "error" and corpus["error"] and corpus["traceback"]
    assert corpus["sources"] == ["broken.mp4"]
    assert result["parts"]["model"]["status"] == "ok"
    assert result["figures"]["corpus_ratio"] is None


def test_videos_are_found_beside_or_inside_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("VIS_GPU_CHECK_VIDEOS", raising=False)
    inside = tmp_path / "repo" / "shared" / "videos"
    inside.mkdir(parents=True)
    (inside / "a.mp4").write_bytes(b"")
    monkeypatch.setattr(gpu_check, "REPOSITORY", tmp_path / "repo")
    assert gpu_check.find_videos() == [inside / "a.mp4"]
    (inside / "a.mp4").unlink()
    beside = tmp_path / "shared" / "videos"
    beside.mkdir(parents=True)
    (beside / "b.mp4").write_bytes(b"")
    assert gpu_check.find_videos() == [beside / "b.mp4"]


@pytest.mark.gpu
def test_model_part_on_the_gpu(tmp_path):
    """On a lent GPU: the R-50 model part alone, at its full size (about a minute)."""
    result = _check(tmp_path, "--parts", "model")
    model = result["parts"]["model"]
    assert model["status"] in ("ok", "timeout") and model["model_fps"] > 0
