"""`vis eval`: the printed table, the JSON file, and exit code 2 on bad input."""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

import pytest

import jobs.eval

CASE = Path(__file__).parent / "fixtures" / "ytvis_eval" / "case_1"
KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "per_category"]


def _main(argv: list[str]) -> int:
    """`vis ARGV` with the eval subcommand alone (jobs.cli registers it among others)."""
    parser = argparse.ArgumentParser(prog="vis")
    jobs.eval.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def case_files(tmp_path: Path) -> tuple[Path, Path]:
    paths = []
    for name in ("gt", "results"):
        path = tmp_path / f"{name}.json"
        with gzip.open(CASE / f"{name}.json.gz", "rb") as source, path.open("wb") as target:
            shutil.copyfileobj(source, target)
        paths.append(path)
    return paths[0], paths[1]


def test_eval_prints_the_table_and_writes_the_json(case_files, tmp_path, capsys):
    gt, results = case_files
    out = tmp_path / "nested" / "metrics.json"
    assert (
        _main(["eval", "--gt", str(gt), "--results", f"file://{results}", "--out", str(out)]) == 0
    )
    metrics = json.loads(out.read_text())
    assert list(metrics) == KEYS
    expected = json.loads((CASE / "expected.json").read_text())["stats"]
    assert all(metrics[key] == pytest.approx(expected[key], abs=1e-9) for key in KEYS[:-1])
    assert set(metrics["per_category"]) == {"person", "dog", "car", "cat"}
    printed = capsys.readouterr().out
    assert "AP50" in printed and "AP[person]" in printed and "n/a" in printed


def test_eval_exits_2_with_one_line_on_bad_input(case_files, tmp_path, capsys):
    gt, _ = case_files
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps([{"video_id": 999, "category_id": 1, "score": 1, "segmentations": []}])
    )
    assert _main(["eval", "--gt", str(gt), "--results", str(bad)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "video_id 999 is not in the ground truth" in error
    assert _main(["eval", "--gt", str(tmp_path / "nope.json"), "--results", str(bad)]) == 2
    assert "not found" in capsys.readouterr().err


def test_the_vis_command_runs_eval(case_files, tmp_path):
    cli = pytest.importorskip("jobs.cli")
    try:
        cli.build_parser()
    except ModuleNotFoundError as error:  # another stage's module is not written yet
        pytest.skip(f"vis CLI incomplete: {error}")
    gt, results = case_files
    out = tmp_path / "metrics.json"
    assert cli.main(["eval", "--gt", str(gt), "--results", str(results), "--out", str(out)]) == 0
    assert list(json.loads(out.read_text())) == KEYS
