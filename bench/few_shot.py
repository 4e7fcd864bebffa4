"""Few labels: bertfit with no training settings vs SetFit 1.2.0 with its defaults, same body (the embedded MiniLM-L6).

    python bench/few_shot.py                                         # full scale: emotion + SST-2, 8/16/64 a class, 5 seeds
    python bench/few_shot.py --sizes 8 16 --seeds 1                  # a scaled-down run on a busy CPU
    python bench/few_shot.py --systems bertfit --sizes 64            # one side only
    python bench/few_shot.py --datasets emotion --sizes 8 --seeds 3 --first-seed 2   # seeds 2-4: adds to a cut-short cell
    python bench/few_shot.py --setfit-body mpnet-base --bertfit-settings "--train.time_budget 10m"   # auto vs SetFit-MPNet

For each data set, size n and seed, n labelled texts per class are drawn (seeded) from the preset's train
split; both systems train on exactly those rows and are scored on the preset's full test split (emotion
2,000 rows, 6 classes; SST-2 1,821 rows, 2 classes): macro-F1, accuracy, train seconds. bertfit gets the
rows as a CSV and nothing else (it chooses its encoder (model.name auto, within train.time_budget), its method,
its settings and whether to hold rows out; each run records the encoder and the plan's estimate beside the time);
SetFit (bench only: `pip install setfit==1.2.0`) loads the embedded model folder as its sentence-transformers
body and trains with TrainingArguments(seed=...) only. `--setfit-max-steps` caps its contrastive steps (its
default pair sampling makes ~7,700 steps at 64 a class on emotion); a capped run is marked in the JSON.
Writes bench/out/few_shot.json (or --out) with the CPU flags and load average, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import tempfile
import time
from pathlib import Path

import common
import numpy as np

# The hand-tuned run (epochs 10-20, lr 1e-4, batch 16), what the adapted defaults are held against at 64 a class;
# it keeps its best checkpoint, as a hand-tuned run would (train.keep best).
TUNED = ["--train.method", "standard", "--train.epochs", "15", "--train.lr", "1e-4", "--train.batch_size", "16",
         "--train.keep", "best"]


def run_setfit(texts: list[str], labels: list[int], test: tuple[list[str], np.ndarray], names: tuple[str, ...],
               seed: int, folder: Path, options: argparse.Namespace) -> dict:
    """SetFit on the same rows: its body options.setfit_body, its steps capped at options.setfit_max_steps (> 0)."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from bertfit.metrics import classification_metrics
    from bertfit.model import resolve_model_name

    body, max_steps = options.setfit_body, options.setfit_max_steps
    model = SetFitModel.from_pretrained(resolve_model_name(body))
    # report_to none: its default "all" starts any installed tracker (wandb asks for an API key and stops).
    settings = {"seed": seed, "report_to": "none", "output_dir": str(folder / f"setfit-{seed}"),
                **({"max_steps": max_steps} if max_steps > 0 else {})}
    args = TrainingArguments(**settings)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts, "label": labels}))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    test_texts, test_labels = test
    predicted = np.asarray(model.predict(test_texts, batch_size=128))
    logits = np.full((len(test_texts), len(names)), -10.0)
    logits[np.arange(len(predicted)), predicted.astype(int)] = 10.0  # one-hot: metrics read the argmax
    metrics = classification_metrics(logits, test_labels, names)
    return {"f1_macro": metrics["f1_macro"], "accuracy": metrics["accuracy"], "train_seconds": round(seconds, 1),
            "model": body, **({"max_steps": max_steps} if max_steps > 0 else {})}


def summary(runs: list[dict]) -> dict:
    out = {"seeds": len(runs)}
    for key in ("f1_macro", "accuracy", "train_seconds", "estimate_train_seconds"):
        values = [r[key] for r in runs if r.get(key) is not None]
        if not values:
            continue
        out[key] = {"mean": round(statistics.mean(values), 4),
                    "spread": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["emotion", "sst2"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 64])
    parser.add_argument("--seeds", type=int, default=5, help="seeded samples per cell")
    parser.add_argument("--first-seed", type=int, default=0, help="the cell's seeds are first-seed .. first-seed+seeds-1")
    parser.add_argument("--systems", nargs="+", default=["bertfit", "setfit", "tuned"], choices=["bertfit", "setfit", "tuned"],
                        help="tuned: bertfit with the hand-tuned settings (standard method, epochs 15, lr 1e-4, batch 16, "
                             "best checkpoint)")
    parser.add_argument("--tuned-sizes", nargs="+", type=int, default=[64], help="sizes the tuned system runs at")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--bertfit-settings", nargs="*", default=[],
                        help="extra flags for the bertfit system's runs (e.g. --train.epochs 5): not 'no settings' any more; "
                             "several in one quoted value: '--bertfit-settings=--train.method=contrastive --train.lr=1e-4'")
    parser.add_argument("--setfit-max-steps", type=int, default=-1)
    parser.add_argument("--setfit-body", default="embedded", help="SetFit's body, a registry name: embedded (MiniLM-L6) "
                                                                  "or mpnet-base (`bertfit models install mpnet-base`)")
    parser.add_argument("--out", type=Path, default=common.OUT / "few_shot.json")
    args = parser.parse_args()
    common.limit_threads(args.threads)
    settings = [flag for value in args.bertfit_settings for flag in shlex.split(value)]
    results: dict = {**common.provenance(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            dataset, test_csv = common.preset_with_test_csv(name, Path(tmp))
            names, train_split, test = dataset.labels.names, dataset.splits["train"], dataset.splits["test"]
            for size in args.sizes:
                for system in args.systems:
                    if system == "tuned" and size not in args.tuned_sizes:
                        continue
                    runs = []
                    for seed in range(args.first_seed, args.first_seed + args.seeds):
                        rows = common.sample(train_split.labels, size, seed)
                        texts, labels = [train_split.texts[i] for i in rows], [train_split.labels[i] for i in rows]
                        if system != "setfit":
                            run = common.few_shot_run(texts, [names[label] for label in labels], test_csv, seed, Path(tmp),
                                              TUNED if system == "tuned" else settings)
                        else:
                            run = run_setfit(texts, labels, (test.texts, np.asarray(test.labels)), names, seed,
                                             Path(tmp), args)
                        print(name, size, system, seed, run, flush=True)
                        runs.append({"seed": seed, **run})
                    results["rows"].append({"dataset": name, "per_class": size, "system": system, "test_rows": len(test),
                                            **summary(runs), "runs": runs})
                    # after every cell: a cut-short run keeps what it measured
                    common.write_json(args.out, {**results, "load_after": common.load_average()})
    print("| data | per class | system | body, method | macro-F1 | accuracy | train s | estimated s |\n"
          "|---|---|---|---|---|---|---|---|")
    for row in results["rows"]:
        f1, acc, sec = row["f1_macro"], row["accuracy"], row["train_seconds"]
        bodies = ", ".join(sorted({f"{r['model']} {r.get('method', 'contrastive')}" for r in row["runs"]}))
        estimate = f"{row['estimate_train_seconds']['mean']:.0f}" if "estimate_train_seconds" in row else "-"
        print(f"| {row['dataset']} | {row['per_class']} | {row['system']} | {bodies} | {100 * f1['mean']:.1f} ± "
              f"{100 * f1['spread']:.1f} | {100 * acc['mean']:.1f} ± {100 * acc['spread']:.1f} | {sec['mean']:.0f} "
              f"| {estimate} |")


if __name__ == "__main__":
    main()
