"""bench/out/gpu_check.json from the logs of scripts/gpu_check.sh: steps, tests, demo accuracy, speed, targets.

    python scripts/gpu_check_report.py bench/out/gpu_check     # gpu_check.sh runs it after every step

Reads LOGS/steps.tsv, LOGS/pytest-gpu.xml (junit), LOGS/runs/demo-ag-news/results.json and
bench/out/train_speed.json, whichever exist, and says for each target whether it was met, missed, or
not measured (a step skipped, stopped or failed).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "bench" / "out"
CPU_DEMO_ACCURACY = 0.9017  # `make demo` on CPU (docs/benchmarks.md; runs/demo-ag-news)
DEMO_TOLERANCE_POINTS = 0.5
# What a GPU run of bertfit should reach: speed-ups over Trainer and model FLOPs utilisation on real tokens.
TARGETS = {"bertfit_vs_trainer-maxlen": 3.0, "bertfit_vs_trainer-dynamic": 1.5, "mfu": 0.40}


def main() -> None:
    logs = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT / "gpu_check"
    report = build_report(logs, OUT / "train_speed.json")
    (OUT / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({"targets": report["targets"], "steps": report["steps"]}, indent=2))


def build_report(logs: Path, speed_file: Path) -> dict:
    steps = read_steps(logs / "steps.tsv")
    demo = demo_result(logs / "runs" / "demo-ag-news" / "results.json")
    speed = json.loads(speed_file.read_text()) if speed_file.is_file() and "train-speed" in steps else None
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": os.getloadavg(), "steps": steps,
            "pytest": pytest_summary(logs / "pytest-gpu.xml"), "demo": demo, "train_speed": speed,
            "targets": targets(demo, speed)}


def read_steps(path: Path) -> dict[str, dict]:
    """Each step's exit code (124: stopped by its time limit; skipped: no budget left) and seconds."""
    if not path.is_file():
        return {}
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file, delimiter="\t"))
    return {row["step"]: {"exit_code": int(row["exit_code"]) if row["exit_code"].lstrip("-").isdigit() else row["exit_code"],
                          "seconds": int(row["seconds"]), "limit_seconds": int(row["limit_seconds"])} for row in rows}


def pytest_summary(path: Path) -> dict | None:
    """Counts from pytest's junit XML, and the names of the tests that failed or were skipped (with why)."""
    if not path.is_file():
        return None
    cases = ElementTree.parse(path).getroot().iter("testcase")
    summary: dict = {"passed": 0, "failed": [], "skipped": []}
    for case in cases:
        name = f"{case.get('name')}"
        problem = next((child for child in case if child.tag in ("failure", "error")), None)
        skipped = case.find("skipped")
        if problem is not None:
            summary["failed"].append(f"{name}: {(problem.get('message') or '')[:300]}")
        elif skipped is not None:
            summary["skipped"].append(f"{name}: {skipped.get('message', '')[:200]}")
        else:
            summary["passed"] += 1
    return summary


def demo_result(path: Path) -> dict | None:
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    accuracy = (results.get("test") or {}).get("accuracy")
    if accuracy is None:
        return {"test_accuracy": None}
    return {"test_accuracy": round(accuracy, 4), "cpu_test_accuracy": CPU_DEMO_ACCURACY,
            "difference_points": round(100 * (accuracy - CPU_DEMO_ACCURACY), 2),
            "train_samples_per_second": results.get("train_samples_per_second"), "train_seconds": results.get("train_seconds")}


def targets(demo: dict | None, speed: dict | None) -> dict[str, str]:
    """met / missed / not measured, with the figure, for every target of the check."""
    verdicts = {}
    if demo is None or demo.get("test_accuracy") is None:
        verdicts["demo_within_0.5_points"] = "not measured"
    else:
        within = abs(demo["difference_points"]) <= DEMO_TOLERANCE_POINTS
        verdicts["demo_within_0.5_points"] = f"{'met' if within else 'missed'}: {demo['difference_points']:+.2f} points"
    ratios = (speed or {}).get("ratios", {})
    for key in ("bertfit_vs_trainer-maxlen", "bertfit_vs_trainer-dynamic"):
        value = ratios.get(key)
        verdicts[key] = "not measured" if value is None else \
            f"{'met' if value >= TARGETS[key] else 'missed'}: {value}x (target >= {TARGETS[key]}x)"
    mfu = ((speed or {}).get("results", {}).get("bertfit") or {}).get("mfu")
    verdicts["bertfit_mfu"] = "not measured" if mfu is None else \
        f"{'met' if mfu >= TARGETS['mfu'] else 'missed'}: {100 * mfu:.1f}% (target >= {100 * TARGETS['mfu']:.0f}%)"
    return verdicts


if __name__ == "__main__":
    main()
