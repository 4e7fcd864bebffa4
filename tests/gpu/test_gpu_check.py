"""scripts/gpu_check.sh and its helpers, on the CPU: the dry run, the report's verdicts, the bundle's size and weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path[:0] = [str(SCRIPTS), str(SCRIPTS.parent / "bench")]  # the GPU check's scripts, and bench/train_speed.py

import gpu_bundle  # noqa: E402
import gpu_check_report  # noqa: E402


def test_dry_run_prints_every_step_within_the_budget_and_runs_nothing():
    done = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["env", "unpack", "pytest-gpu", "demo-cuda", "train-speed"]
    commands = "\n".join(steps)
    for expected in ("gpu_bundle.py unpack", "pytest -m gpu tests/gpu", "configs/demo.yaml --train.device cuda",
                     "train_speed.py --model bert-base-random", "--precision bf16", "trainer-maxlen", "trainer-dynamic"):
        assert expected in commands
    assert "budget 480s" in done.stdout and "timeout --signal=INT" in done.stdout


def test_an_unknown_argument_is_refused():
    done = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), "--fast"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown argument --fast" in done.stderr


def _write_logs(logs: Path, accuracy: float, maxlen_ratio: float) -> Path:
    (logs / "runs" / "demo-ag-news").mkdir(parents=True)
    (logs / "steps.tsv").write_text("step\texit_code\tseconds\tlimit_seconds\npytest-gpu\t0\t95\t190\n"
                                    "demo-cuda\t124\t90\t90\ntrain-speed\t0\t150\t165\n")
    (logs / "runs" / "demo-ag-news" / "results.json").write_text(json.dumps({"test": {"accuracy": accuracy}}))
    (logs / "pytest-gpu.xml").write_text(
        '<testsuites><testsuite><testcase name="test_a[cuda]"/><testcase name="test_b[cuda]"><failure message="boom"/>'
        '</testcase><testcase name="test_c[cuda]"><skipped message="needs a CUDA GPU"/></testcase></testsuite></testsuites>')
    speed = logs / "train_speed.json"
    speed.write_text(json.dumps({"results": {"bertfit": {"mfu": 0.31}},
                                 "ratios": {"bertfit_vs_trainer-maxlen": maxlen_ratio, "bertfit_vs_trainer-dynamic": 1.6}}))
    return speed


def test_report_says_met_missed_or_not_measured(tmp_path):
    report = gpu_check_report.build_report(tmp_path, _write_logs(tmp_path, accuracy=0.8981, maxlen_ratio=3.4))
    assert report["steps"]["demo-cuda"] == {"exit_code": 124, "seconds": 90, "limit_seconds": 90}
    assert report["pytest"]["passed"] == 1 and report["pytest"]["failed"] == ["test_b[cuda]: boom"]
    assert report["pytest"]["skipped"] == ["test_c[cuda]: needs a CUDA GPU"]
    assert report["demo"]["difference_points"] == pytest.approx(-0.36)
    assert report["targets"] == {"demo_within_0.5_points": "met: -0.36 points",
                                 "bertfit_vs_trainer-maxlen": "met: 3.4x (target >= 3.0x)",
                                 "bertfit_vs_trainer-dynamic": "met: 1.6x (target >= 1.5x)",
                                 "bertfit_mfu": "missed: 31.0% (target >= 40%)"}
    empty = gpu_check_report.build_report(tmp_path / "nothing", tmp_path / "missing.json")
    assert set(empty["targets"].values()) == {"not measured"}


def test_report_misses_a_demo_more_than_half_a_point_away(tmp_path):
    report = gpu_check_report.build_report(tmp_path, _write_logs(tmp_path, accuracy=0.8960, maxlen_ratio=2.9))
    assert report["targets"]["demo_within_0.5_points"] == "missed: -0.57 points"
    assert report["targets"]["bertfit_vs_trainer-maxlen"].startswith("missed: 2.9x")


def test_weights_travel_in_fp16_and_come_back_as_float32(tmp_path):
    weights = {"layer.weight": torch.randn(8, 8), "position_ids": torch.arange(8)}
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    gpu_bundle.convert_weights(tmp_path / "model.safetensors", tmp_path / "half.safetensors", "float16")
    gpu_bundle.convert_weights(tmp_path / "half.safetensors", tmp_path / "back.safetensors", "float32")
    half, back = load_file(tmp_path / "half.safetensors"), load_file(tmp_path / "back.safetensors")
    assert half["layer.weight"].dtype == torch.float16 and back["layer.weight"].dtype == torch.float32
    assert torch.equal(back["position_ids"], weights["position_ids"])  # integer tensors pass unchanged
    torch.testing.assert_close(back["layer.weight"], weights["layer.weight"], rtol=2**-11, atol=0)
    save_file({"big": torch.full((2,), 1e5)}, tmp_path / "big.safetensors")
    with pytest.raises(ValueError, match="does not fit float16"):
        gpu_bundle.convert_weights(tmp_path / "big.safetensors", tmp_path / "x.safetensors", "float16")


def test_travel_report_counts_the_tree_git_sends_and_the_bundle(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text(".gpu-bundle/\nbuild/\n")
    (tmp_path / "code.py").write_bytes(b"x" * 2**20)  # untracked, not ignored: travels
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "big.bin").write_bytes(b"x" * 2**21)  # ignored: stays
    bundle = tmp_path / ".gpu-bundle"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "wheels" / "a.whl").write_bytes(b"x" * 3 * 2**20)
    report = gpu_bundle.travel_report(tmp_path, bundle)
    assert report["tree_mib"] == pytest.approx(1.0, abs=0.01) and report["bundle_mib"] == {"wheels": 3.0}
    assert report["fits"]
    (bundle / "wheels" / "b.whl").write_bytes(b"x" * 61 * 2**20)
    assert not gpu_bundle.travel_report(tmp_path, bundle)["fits"]


def test_training_flops_count_weights_per_real_token_and_attention_per_text(tmp_path):
    """bert-base (12 layers, hidden 768, MLP 3072): 85M matmul weights; two texts of 10 and 20 tokens."""
    import train_speed
    from transformers import BertConfig

    BertConfig().save_pretrained(tmp_path)
    weights = 12 * (4 * 768**2 + 2 * 768 * 3072) + 768 * 4
    expected = 6 * weights * 30 + 12 * 12 * 768 * (10**2 + 20**2)
    assert train_speed.training_flops(str(tmp_path), [10, 20]) == pytest.approx(expected)
    assert weights == pytest.approx(85e6, rel=0.01)
    results = {"bertfit": {"samples_per_second": 300.0}, "bertfit-compile": {"samples_per_second": 450.0},
               "trainer-maxlen": {"samples_per_second": 100.0}, "trainer-dynamic": {"samples_per_second": 150.0}}
    assert train_speed.ratios(results) == {"bertfit_vs_trainer-maxlen": 3.0, "bertfit_vs_trainer-dynamic": 2.0,
                                           "bertfit-compile_vs_trainer-maxlen": 4.5, "bertfit-compile_vs_trainer-dynamic": 3.0}
