"""The same measurements on two commits of bertfit, alternating on one machine: did a change cost speed or accuracy?

    python scripts/compare_commits.py --old 952aa28 --run runs/demo-ag-news --rounds 2

For each round, OLD then the working tree: a short training run (the demo config cut to 960 rows,
1 epoch; its samples/s and test accuracy on 200 test rows) and `bench/onnx_speed.py` on RUN (which
needs an export: `bertfit export RUN --onnx --int8`), each commit running its own copy of the code
and of onnx_speed.py from a git worktree, with the same .venv. Alternating spreads machine load over
both. Writes bench/out/compare_commits.json and prints one line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bertfit.runtime.cpu import cpu_features

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
TRAIN_FLAGS = ["--config", str(REPO / "configs" / "demo.yaml"), "--data.max_train_rows", "960", "--data.max_eval_rows",
               "200", "--train.epochs", "1", "--train.progress", "false", "--train.tensorboard", "false", "--overwrite"]


def run(tree: Path, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(args[:3])} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def measure(tree: Path, run_dir: Path, out_dir: Path, name: str) -> dict:
    trained = run(tree, ["-m", "bertfit.cli", "train", *TRAIN_FLAGS, "--output_dir", str(out_dir), "--name", name])
    speed = float(re.search(r"training: [\d.]+ s, ([\d.]+) samples/s", trained).group(1))
    accuracy = float(re.search(r"test: accuracy ([\d.]+)", trained).group(1))
    table = run(tree, [str(tree / "bench" / "onnx_speed.py"), str(run_dir), "--rounds", "4"])
    served = {row[0]: float(row[1]) for row in re.findall(r"^\| (torch|onnx-fp32|onnx-int8) \| ([\d.]+)", table, re.M)}
    return {"train_samples_per_second": speed, "test_accuracy_200_rows": accuracy, "predict_texts_per_second": served}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="commit to compare the working tree with")
    parser.add_argument("--run", type=Path, required=True, help="an exported run for onnx_speed.py")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bertfit-compare-"))
    old_tree = scratch / "old"
    subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.old], cwd=REPO, check=True,
                   capture_output=True)
    results: list[dict] = []
    try:
        for round_number in range(1, args.rounds + 1):
            for label, tree in ((args.old, old_tree), ("working tree", REPO)):
                measured = measure(tree, args.run.resolve(), scratch / "runs", f"{label[:7]}-{round_number}")
                results.append({"code": label, "round": round_number, **measured})
                print(json.dumps(results[-1]), flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=REPO, capture_output=True)
    OUT.mkdir(exist_ok=True)
    report = {"cpu": cpu_features(), "results": results}
    (OUT / "compare_commits.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
