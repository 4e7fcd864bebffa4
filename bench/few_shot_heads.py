"""Whose head: bertfit's, or SetFit's logistic regression, on the same tuned encoder.

    python bench/few_shot_heads.py --datasets sst2 --sizes 8 --seeds 5 --threads 1

For each cell (data set, n texts a class, seed: the rows bench/few_shot.py draws) bertfit trains with no settings
(the contrastive method below its thresholds); its run's tuned encoder then gives fp32 pooled vectors of the same
training texts and of the full test split, and scikit-learn's LogisticRegression (its defaults: L2, C 1) is fitted
on them as they are, and on their unit vectors (what SetFit's head sees: its body normalises); a fourth head
averages the class probabilities of bertfit's head and the unit-vector regression. All four heads are
scored on the same test rows. Writes bench/out/few_shot_heads.json (or --out): macro-F1 a seed, each head's mean top
probability on the test rows (confidence), bertfit's head scored again from the saved run (bertfit_head_again: a
check that the fourth head averages the head the run was scored with), and the CPU's flags.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import common
import numpy as np

from bertfit.metrics import probability_metrics, softmax

HEADS = ("bertfit_head", "regression", "regression_unit", "mean_of_heads")


def regression_probabilities(train: np.ndarray, labels: list[int], test: np.ndarray) -> np.ndarray:
    """Class probabilities of scikit-learn's LogisticRegression (its defaults: L2, C 1); every label is in `labels`,
    so its columns are the label ids in order."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000).fit(train, labels).predict_proba(test)


def f1(probabilities: np.ndarray, test_labels: np.ndarray, names: tuple[str, ...]) -> float:
    return probability_metrics(probabilities, test_labels, names)["f1_macro"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "emotion"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--out", type=Path, default=common.OUT / "few_shot_heads.json")
    args = parser.parse_args()
    common.limit_threads(args.threads)
    results: dict = {**common.provenance(), "cells": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            dataset, test_csv = common.preset_with_test_csv(name, Path(tmp))
            names, train_split, test = dataset.labels.names, dataset.splits["train"], dataset.splits["test"]
            test_labels = np.asarray(test.labels)
            for size in args.sizes:
                runs = [score_seed(train_split, (test.texts, test_labels), names, size, seed, test_csv, Path(tmp))
                        for seed in range(args.seeds)]
                print(name, size, runs, flush=True)
                means = {k: round(statistics.mean(r[k] for r in runs), 4) for k in HEADS}
                results["cells"].append({"dataset": name, "per_class": size, "means": means, "runs": runs})
                common.write_json(args.out, results)


def score_seed(train_split, test: tuple[list[str], np.ndarray], names: tuple[str, ...], size: int, seed: int,
               test_csv: Path, folder: Path) -> dict:
    """bertfit's run on the seed's rows, then the two regressions on its tuned encoder's vectors and the mean of
    bertfit's head and the unit-vector one."""
    from bertfit.artifacts import load_model
    from bertfit.infer.engine import InferenceContext, encode, split_logits
    from bertfit.infer.tokens import tokenize_like_training

    rows = common.sample(train_split.labels, size, seed)
    texts, labels = [train_split.texts[i] for i in rows], [train_split.labels[i] for i in rows]
    run = common.few_shot_run(texts, [names[label] for label in labels], test_csv, seed, folder, [])
    loaded = load_model(folder / f"run-{seed}")
    context = InferenceContext.create(loaded.tokenizer.pad_token_id, 64, "cpu", "fp32")
    features = [encode(loaded.model, tokenize_like_training(loaded.meta, loaded.tokenizer, part), context)
                for part in (texts, test[0])]
    head = softmax(split_logits(loaded.model, features[1], context))
    vectors = [f.features for f in features]
    units = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in vectors]
    unit = regression_probabilities(units[0], labels, units[1])
    return {"seed": seed, "bertfit_head": run["f1_macro"], "bertfit_head_again": f1(head, test[1], names),
            "regression": f1(regression_probabilities(vectors[0], labels, vectors[1]), test[1], names),
            "regression_unit": f1(unit, test[1], names), "mean_of_heads": f1((head + unit) / 2, test[1], names),
            "confidence": {"bertfit_head": float(head.max(1).mean()), "regression_unit": float(unit.max(1).mean())}}


if __name__ == "__main__":
    main()
