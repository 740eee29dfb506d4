"""The notebooks, executed top to bottom on a tiny run; the library helpers they use.

One tiny run serves every test of the module: tables committed directly (a 6-frame mp4,
two known tracks, one failed video) and an MLflow SQLite store with two trainings.

Kernel: the notebooks name the kernel `python3`. So that it is this interpreter (the
.venv's, with the project and ipykernel) and not whatever `python3` kernelspec the user
or the system has, the tests write a `python3` kernelspec whose argv is `sys.executable`
into a temporary folder and put it first on `JUPYTER_PATH`; the notebooks read their
parameters from the environment the kernel inherits (`VIS_TABLES`, `VIS_TRACKING_URI`,
`VIS_HOME`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from tests.media import smooth_frames
from vis_core import masks
from vis_core.inference.instances import VideoInstances
from vis_core.tables.commit import TableCommitter
from vis_core.tables.rows import VideoRecord, failed_rows, ok_rows
from vis_core.tables.tracks import TrackError, track_frames, track_sheet
from vis_core.video.encode import write_mp4
from workflows.tracking import TrackingConfig, TrainingRun, list_runs, run_history

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
T, H, W = 6, 48, 64
RUN = "run-1"
STEPS = (1, 2, 3, 4)


def _track_masks() -> np.ndarray:
    """`[2, T, H, W]`: a still box (frames 0-5), and a box moving right in frames 1-4."""
    dense = np.zeros((2, T, H, W), bool)
    dense[0, :, 4:20, 4:24] = True
    for t in range(1, 5):
        dense[1, t, 26:42, 10 + 6 * t : 30 + 6 * t] = True
    return dense


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> str:
    """A run with one `ok` video (a cat, track 0, and a dog, track 1) and a failed one."""
    root = tmp_path_factory.mktemp("tables_run")
    video_uri = str(root / "corpus" / "clip.mp4")
    write_mp4(video_uri, smooth_frames(T, H, W), fps=5, crf=10)
    instances = VideoInstances(
        num_frames=T,
        height=H,
        width=W,
        scores=np.array([0.9, 0.6], np.float32),
        labels=np.array([0, 1]),
        masks=tuple(tuple(masks.encode(track)) for track in _track_masks()),
    )
    out = str(root / "tables")
    committer = TableCommitter(out, RUN)
    record = VideoRecord("clips/clip.mp4", video_uri, "tiny", RUN, T, 5.0, W, H)
    committer.commit(ok_rows(record, instances, ["cat", "dog"], np.arange(T) / 5.0))
    broken = VideoRecord("clips/broken.mp4", str(root / "broken.mp4"), "tiny", RUN)
    committer.commit(failed_rows(broken, "NotAVideoError: clips/broken.mp4 holds no video"))
    return out


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> TrackingConfig:
    """Two trainings in experiment `vis-train` of a SQLite store, four steps each."""
    root = tmp_path_factory.mktemp("mlflow")
    config = TrackingConfig(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_root=str(root / "artifacts"),
        experiment="vis-train",
    )
    for name, lr in (("small-a", 3e-4), ("small-b", 1e-4)):
        run = TrainingRun.start_or_resume(config, name)
        run.log_params({"preset": "vita_small_synth", "optim": {"lr": lr, "steps": len(STEPS)}})
        for step in STEPS:
            loss = 4.0 / step + lr
            run.log_metrics(
                {
                    "loss": loss,
                    "loss_ce": loss / 4,
                    "loss_dice": loss / 5,
                    "loss_vita_ce": loss / 3,
                    "loss_vita_dice": loss / 6,
                    "lr": lr * (0.1 if step > 3 else 1.0),
                },
                step=step,
            )
        run.finish()
    return config


@pytest.fixture
def kernel_env(tmp_path, monkeypatch) -> None:
    """A `python3` kernelspec running this interpreter, first on JUPYTER_PATH; the
    notebook's data folder a temporary one; matplotlib's inline backend (the default)."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (vis .venv)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("VIS_HOME", str(tmp_path / "vis_home"))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable


def _execute(name: str) -> nbformat.NotebookNode:
    """Run a notebook top to bottom (a cell that raises fails the test)."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> tuple[int, str]:
    """The number of PNG images a notebook showed, and all its text and HTML output."""
    images, texts = 0, []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            data = output.get("data", {})
            images += "image/png" in data
            texts.append(output.get("text", ""))
            texts.extend(str(data.get(kind, "")) for kind in ("text/plain", "text/html"))
    return images, "\n".join(texts)


def test_notebooks_define_no_functions_or_classes():
    names = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["query_tracklets.ipynb", "training_runs.ipynb"]
    for name in names:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.get("outputs"), f"{name}: commit notebooks without outputs"
                for line in cell.source.splitlines():
                    stripped = line.lstrip()
                    assert not stripped.startswith(("def ", "class ", "async def ")), (name, line)


def test_track_frames_pairs_frames_with_the_track_masks(tables):
    dense = _track_masks()
    shown = track_frames(tables, "clips/clip.mp4", 1)
    assert [item.frame_index for item in shown] == [1, 2, 3, 4]
    source = smooth_frames(T, H, W).astype(np.int16)
    for item in shown:
        assert item.image.shape == (H, W, 3) and item.image.dtype == np.uint8
        assert np.abs(item.image - source[item.frame_index]).mean() < 4  # its own frame
        assert np.array_equal(item.mask, dense[1, item.frame_index])
    # max_frames: evenly spaced over the track, first and last kept.
    spaced = track_frames(tables, "clips/clip.mp4", 0, run_id=RUN, max_frames=3)
    assert [item.frame_index for item in spaced] == [0, 2, 5]  # of 0..5: 0, 2.5 -> 2, 5
    sheet = track_sheet(tables, "clips/clip.mp4", 0, frames=3, columns=2)
    assert sheet.shape == (2 * H + 3 * 4, 2 * W + 3 * 4, 3)
    with pytest.raises(TrackError, match=r"no track 7; its tracks are \[0, 1\]"):
        track_frames(tables, "clips/clip.mp4", 7)
    with pytest.raises(TrackError, match="failed in run 'run-1': NotAVideoError"):
        track_frames(tables, "clips/broken.mp4", 0)
    with pytest.raises(TrackError, match="is not in run"):
        track_frames(tables, "clips/other.mp4", 0)


def test_run_history_reads_back_runs_and_curves(tracking):
    runs = list_runs(tracking)
    assert [run["name"] for run in runs] == ["small-b", "small-a"]  # newest first
    assert runs[0]["params.optim.lr"] == "0.0001" and runs[0]["status"] == "FINISHED"
    assert runs[0]["metrics.lr"] == pytest.approx(1e-5)  # the last value
    history = run_history(tracking, runs[1]["run_id"], ["loss", "lr", "missing"])
    assert [step for step, _ in history["loss"]] == list(STEPS)
    assert history["loss"][0][1] == pytest.approx(4.0 + 3e-4)
    assert history["missing"] == []
    assert list_runs(TrackingConfig(tracking.tracking_uri, experiment="nope")) == []


def test_query_tracklets_notebook(tables, kernel_env, monkeypatch):
    monkeypatch.setenv("VIS_TABLES", tables)
    images, text = _outputs(_execute("query_tracklets.ipynb"))
    assert images == 3  # tracks by category, the track's mask area, its contact sheet
    assert "NotAVideoError: clips/broken.mp4 holds no video" in text  # the failed video
    assert "cat" in text and "dog" in text


def test_training_runs_notebook(tracking, kernel_env, monkeypatch):
    monkeypatch.setenv("VIS_TRACKING_URI", tracking.tracking_uri)
    images, text = _outputs(_execute("training_runs.ipynb"))
    assert images == 1  # the learning curves
    assert "2 runs in experiment 'vis-train'" in text
    assert "small-a" in text and "small-b" in text
