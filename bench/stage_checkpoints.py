"""The contrastive stage's checkpoints on real data: what they cost, and a run stopped in the stage then resumed.

    python bench/stage_checkpoints.py --dataset emotion --size 16 --seed 0 --stop-step 100 --threads 1

On the rows the few-shot benchmarks draw (n texts a class, seed), three bertfit runs with no settings but the named
ones: as it is (the stage checkpoints every train.checkpoint_every_steps, 200, and at its end), with
train.checkpoint_every_steps 0 (no checkpoints in the stage), and one sent Ctrl-C (SIGINT) at stage step
--stop-step and then resumed with train(resume=...). Each is scored on the full test split. Writes
bench/out/stage_checkpoints.json (or --out): macro-F1, train seconds, wall seconds, each checkpoint's seconds, and
the CPU's flags. The three macro-F1 must be equal: checkpoints change nothing, and a resumed stage ends where an
unbroken one does.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

import common

SAVES: list[float] = []  # seconds of each checkpoint the stage writes


def _time_saves() -> None:
    """The stage's checkpoint writes, each timed into SAVES."""
    from bertfit.training import contrastive

    real = contrastive.save_checkpoint

    def timed_save(*args, **kwargs) -> None:
        started = time.perf_counter()
        real(*args, **kwargs)
        SAVES.append(time.perf_counter() - started)
    contrastive.save_checkpoint = timed_save


def _interrupt_at(step: int) -> None:
    from bertfit.training import contrastive

    real, calls = contrastive.group_loss, [0]

    def interrupting(*args, **kwargs):
        calls[0] += 1
        loss = real(*args, **kwargs)
        if calls[0] == step:
            os.kill(os.getpid(), signal.SIGINT)  # as a first Ctrl-C: the stage checkpoints after this step and stops
        return loss
    contrastive.group_loss = interrupting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="emotion")
    parser.add_argument("--size", type=int, default=16, help="texts a class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-step", type=int, default=100, help="the stage step Ctrl-C follows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--out", type=Path, default=common.OUT / "stage_checkpoints.json")
    args = parser.parse_args()
    from bertfit.training import contrastive
    from bertfit.training.recipe import train

    common.limit_threads(args.threads)
    _time_saves()
    results: dict = {**common.provenance(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dataset, test_csv = common.preset_with_test_csv(args.dataset, folder)
        names, train_split = dataset.labels.names, dataset.splits["train"]
        rows = common.sample(train_split.labels, args.size, args.seed)
        train_csv = common.write_csv(folder / "train.csv", [train_split.texts[i] for i in rows],
                                     [names[train_split.labels[i]] for i in rows])

        def run(name: str, *flags: str):
            return common.train_on_rows(train_csv, folder, name, args.seed, ["--data.test", str(test_csv), *flags])
        for name, flags in (("as_is", ()), ("no_stage_checkpoints", ("--train.checkpoint_every_steps", "0"))):
            SAVES.clear()
            started = time.perf_counter()
            result = run(name, *flags)
            results["runs"][name] = {"f1_macro": result.test["f1_macro"], "train_seconds": round(result.train_seconds, 2),
                                     "wall_seconds": round(time.perf_counter() - started, 2), "saves": SAVES[:]}
            print(name, results["runs"][name], flush=True)
        SAVES.clear()
        real_loss = contrastive.group_loss
        _interrupt_at(args.stop_step)
        stopped = run("stopped")
        contrastive.group_loss = real_loss
        resumed = train(resume=folder / "stopped")
        results["runs"]["stopped_then_resumed"] = {"stopped": stopped.interrupted, "f1_macro": resumed.test["f1_macro"],
                                                   "train_seconds": round(resumed.train_seconds, 2), "saves": SAVES[:]}
        print("stopped_then_resumed", results["runs"]["stopped_then_resumed"], flush=True)
    common.write_json(args.out, results)


if __name__ == "__main__":
    main()
