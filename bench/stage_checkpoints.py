"""The contrastive stage's checkpoints on real data: what they cost, and a run stopped in the stage then resumed.

    python bench/stage_checkpoints.py --dataset emotion --size 16 --seed 0 --stop-step 100 --threads 1

On the rows bench/few_shot.py draws (n texts a class, seed), three bertfit runs with no settings but the named
ones: as it is (the stage checkpoints every train.checkpoint_every_steps, 200, and at its end), with
train.checkpoint_every_steps 0 (no checkpoints in the stage), and one sent Ctrl-C (SIGINT) at stage step
--stop-step and then resumed with train(resume=...). Each is scored on the full test split. Writes
bench/out/stage_checkpoints.json (or --out): macro-F1, train seconds, wall seconds, each checkpoint's seconds, and
the CPU's flags. The three macro-F1 must be equal: checkpoints change nothing, and a resumed stage ends where an
unbroken one does.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from few_shot import OUT, sample  # noqa: E402

from bertfit.config import load_config  # noqa: E402
from bertfit.data.splits import load_dataset  # noqa: E402
from bertfit.runtime.cpu import cpu_features  # noqa: E402
from bertfit.training import contrastive  # noqa: E402
from bertfit.training.recipe import train  # noqa: E402

SAVES: list[float] = []  # seconds of each checkpoint the stage writes


def _timed_save(*args, real=contrastive.save_checkpoint, **kwargs) -> None:
    started = time.perf_counter()
    real(*args, **kwargs)
    SAVES.append(time.perf_counter() - started)


def _interrupt_at(step: int) -> None:
    real, calls = contrastive.group_loss, [0]

    def interrupting(*args, **kwargs):
        calls[0] += 1
        loss = real(*args, **kwargs)
        if calls[0] == step:
            os.kill(os.getpid(), signal.SIGINT)  # as a first Ctrl-C: the stage checkpoints after this step and stops
        return loss
    contrastive.group_loss = interrupting


def write_rows(path: Path, texts: list[str], labels: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([("text", "label"), *zip(texts, labels)])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="emotion")
    parser.add_argument("--size", type=int, default=16, help="texts a class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-step", type=int, default=100, help="the stage step Ctrl-C follows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--out", type=Path, default=OUT / "stage_checkpoints.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    contrastive.save_checkpoint = _timed_save
    dataset = load_dataset(load_config(None, ["--data.train", args.dataset]).data, seed=0)
    names, train_split, test = dataset.labels.names, dataset.splits["train"], dataset.splits["test"]
    rows = sample(train_split.labels, args.size, args.seed)
    results: dict = {"command": " ".join(sys.argv), "cpu": cpu_features(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        test_csv = write_rows(folder / "test.csv", test.texts, [names[label] for label in test.labels])
        train_csv = write_rows(folder / "train.csv", [train_split.texts[i] for i in rows],
                               [names[train_split.labels[i]] for i in rows])

        def config(name: str, *flags: str):
            return load_config(None, ["--data.train", str(train_csv), "--data.test", str(test_csv), "--output_dir", tmp,
                                      "--name", name, "--train.seed", str(args.seed), "--train.progress", "false",
                                      "--train.tensorboard", "false", *flags])
        for name, flags in (("as_is", ()), ("no_stage_checkpoints", ("--train.checkpoint_every_steps", "0"))):
            SAVES.clear()
            started = time.perf_counter()
            result = train(config(name, *flags))
            results["runs"][name] = {"f1_macro": result.test["f1_macro"], "train_seconds": round(result.train_seconds, 2),
                                     "wall_seconds": round(time.perf_counter() - started, 2), "saves": SAVES[:]}
            print(name, results["runs"][name], flush=True)
        SAVES.clear()
        real_loss = contrastive.group_loss
        _interrupt_at(args.stop_step)
        stopped = train(config("stopped"))
        contrastive.group_loss = real_loss
        resumed = train(resume=folder / "stopped")
        results["runs"]["stopped_then_resumed"] = {"stopped": stopped.interrupted, "f1_macro": resumed.test["f1_macro"],
                                                   "train_seconds": round(resumed.train_seconds, 2), "saves": SAVES[:]}
        print("stopped_then_resumed", results["runs"]["stopped_then_resumed"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
