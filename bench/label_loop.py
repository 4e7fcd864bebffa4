"""The labelling loop of `bertfit suggest`: uncertainty + diversity vs random picks, as a learning curve.

    python bench/label_loop.py [--seeds 3] [--start 100] [--step 100] [--stop 1000] [--test-rows 7600]

Pool: the 5,000-row `ag_news` train subset with its labels hidden. Each seed starts from the same
100 random rows for both strategies, then adds 100 per round up to 1,000: `random` draws them at
random, `suggest` takes them with bertfit.curate.suggest.select (k-center greedy over the smallest-
margin candidates), the function `bertfit suggest` uses. The model each round is the fast path's: a
logistic regression on the frozen embedded MiniLM's pooled vectors (computed once, cached), which
also gives the vectors the diversity is measured in; `bertfit suggest` itself uses the fine-tuned
run's model for both. Accuracy on the official AG News test rows after every round.
Target: suggest reaches random's 1,000-label accuracy with <= 700 labels.
Writes bench/out/label_loop.json and bench/out/label_loop.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common
import numpy as np


def learning_curve(strategy: str, first: np.ndarray, pool: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], sizes: list[int], seed: int) -> list[float]:
    from bertfit.curate.folds import logistic_probabilities
    from bertfit.curate.suggest import select

    (train_x, train_y), (test_x, test_y) = pool, test
    classes, rng = int(train_y.max()) + 1, np.random.default_rng(seed + 1000)
    labelled, curve = list(first), []
    for size in sizes:
        fit = np.asarray(labelled)
        curve.append(float((logistic_probabilities(train_x[fit], train_y[fit], test_x, classes).argmax(1) == test_y).mean()))
        if size == sizes[-1]:
            break
        unlabelled = np.setdiff1d(np.arange(len(train_y)), fit)
        count = sizes[sizes.index(size) + 1] - size
        if strategy == "random":
            labelled += rng.choice(unlabelled, count, replace=False).tolist()
        else:
            probabilities = logistic_probabilities(train_x[fit], train_y[fit], train_x[unlabelled], classes)
            labelled += unlabelled[select(probabilities, train_x[unlabelled], count)].tolist()
    return curve


def labels_to_reach(curve: list[float], sizes: list[int], target: float) -> int | None:
    return next((size for size, accuracy in zip(sizes, curve) if accuracy >= target), None)


def plot(sizes: list[int], curves: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for name, runs in curves.items():
        mean, low, high = runs.mean(0), runs.min(0), runs.max(0)
        axis.plot(sizes, mean, marker="o", label=f"{name} (mean of {len(runs)} seeds)")
        axis.fill_between(sizes, low, high, alpha=0.2)
    axis.set_xlabel("labelled rows")
    axis.set_ylabel("AG News test accuracy")
    axis.set_title("Labelling loop on AG News: suggest vs random\n(frozen MiniLM vectors + logistic regression)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--stop", type=int, default=1000)
    parser.add_argument("--test-rows", type=int, default=7600)
    parser.add_argument("--out", type=Path, default=common.OUT / "label_loop.json")
    args = parser.parse_args()
    record = common.provenance()
    rows, train_x, test_x, test_y = common.ag_news_vectors(args.test_rows)
    pool, evaluation = (train_x, rows.labels), (test_x, test_y)
    sizes = list(range(args.start, args.stop + 1, args.step))
    curves: dict[str, list[list[float]]] = {"suggest": [], "random": []}
    for seed in range(args.seeds):
        first = np.random.default_rng(seed).choice(len(rows), args.start, replace=False)
        for strategy in curves:
            curves[strategy].append(learning_curve(strategy, first, pool, evaluation, sizes, seed))
            print(f"seed {seed} {strategy}: " + " ".join(f"{a:.4f}" for a in curves[strategy][-1]), flush=True)
    arrays = {name: np.asarray(runs) for name, runs in curves.items()}
    mean = {name: runs.mean(0).tolist() for name, runs in arrays.items()}
    target = mean["random"][-1]
    needed = labels_to_reach(mean["suggest"], sizes, target)
    png = args.out.with_suffix(".png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(sizes, arrays, png)
    report = {**record, "pool_rows": len(rows), "test_rows": len(test_y), "sizes": sizes,
              "model": "logistic regression on frozen embedded MiniLM mean-pooled vectors (fast path)",
              "curves": curves, "mean": mean, "random_at_max": target, "suggest_labels_to_reach_random_at_max": needed,
              "target_met": needed is not None and needed <= 700, "png": png.name,
              "load_average_after": common.load_average()}
    common.write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("mean", "random_at_max", "suggest_labels_to_reach_random_at_max",
                                              "target_met")}, indent=2))


if __name__ == "__main__":
    main()
