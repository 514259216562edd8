"""``python -m training`` end to end: the summary, the files, the same metrics for the same seed, the errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model import load_checkpoint
from training.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def metrics_without_timing(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    metrics.pop("timing")
    return metrics


def run_dir_from(summary: str) -> Path:
    line = next(line for line in summary.splitlines() if line.startswith("run folder:"))
    return Path(line.split()[2])


def test_cli_trains_reports_and_gives_the_same_metrics_for_the_same_seed(tiny_split, tmp_path, capsys):
    args = ["--data", str(tiny_split), "--weights", "none", "--epochs", "4", "-K", "1", "--seed", "5"]
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "a" / "model.pt"))
    assert code == 0, err
    assert f"checkpoint:  {tmp_path / 'a' / 'model.pt'}" in out
    assert "test accuracy:" in out and "precision" in out and "recall" in out
    assert "checks" in out and "stripes" in out and "features computed" in out
    checkpoint = load_checkpoint(tmp_path / "a" / "model.pt")
    assert checkpoint.class_names == ["checks", "stripes"] and checkpoint.training["seed"] == 5
    # The OpenVINO export beside it (model/export.py), for this very checkpoint.
    manifest = json.loads((tmp_path / "a" / "model.openvino" / "manifest.json").read_text())
    assert f"export:      {tmp_path / 'a' / 'model.openvino'}" in out
    assert manifest["checkpoint"]["sha256"] == checkpoint.sha256 and manifest["class_names"] == ["checks", "stripes"]
    args.append("--no-export")  # the runs below compare metrics; one export is enough

    # A second cold run elsewhere (features computed again), then a warm one (features from the cache).
    code, out_b, err = run_cli(capsys, *args, "--out", str(tmp_path / "b" / "model.pt"))
    assert code == 0, err and "features computed" in out_b
    code, out_warm, err = run_cli(capsys, *args, "--out", str(tmp_path / "a" / "model.pt"))
    assert code == 0, err
    assert "features from cache" in out_warm
    first = metrics_without_timing(run_dir_from(out))
    assert metrics_without_timing(run_dir_from(out_b)) == first
    assert metrics_without_timing(run_dir_from(out_warm)) == first


def test_bad_data_is_one_line_and_exit_status_2(tmp_path, capsys):
    (tmp_path / "only").mkdir()
    code, out, err = run_cli(capsys, "--data", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--weights", "none")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "at least two class" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


def test_missing_weights_file_is_one_line_and_exit_status_2(tiny_split, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--data", str(tiny_split), "--out", str(tmp_path / "m.pt"), "--weights", str(tmp_path / "nope.pth"))
    assert code == 2
    assert "nope.pth not found" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--test-fraction", "1.5"], ["--unfreeze", "all"]])
def test_bad_options_are_usage_errors(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path), *bad])
    assert exit_info.value.code == 2


def test_python_dash_m_training_runs_as_a_module(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "training", "--data", str(tmp_path / "missing"), "--weights", "none"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [f"error: data folder {tmp_path / 'missing'} does not exist"]
