"""The labelling loop of `bertfit suggest`: uncertainty + diversity vs random picks, as a learning curve.

    python bench/label_loop.py [--seeds 3] [--start 100] [--step 100] [--stop 1000] [--test-rows 7600]

Pool: the 5,000-row `ag_news` train subset with its labels hidden. Each seed starts from the same
100 random rows for both strategies, then adds 100 per round up to 1,000: `random` draws them at
random, `suggest` takes them with bertfit.curate.suggest.select (k-center greedy over the smallest-
margin candidates), the function `bertfit suggest` uses. The model each round is the fast path's: a
logistic regression on the frozen embedded MiniLM's pooled vectors (computed once, cached), which
also gives the vectors the diversity is measured in; `bertfit suggest` itself uses the fine-tuned
run's model for both. Accuracy on the official AG News test rows after every round.
Every pick is labelled by a simulated reviewer through `bertfit review`'s HTTP API (the page's own
routes, on a live server): it reads each item as the page does, accepts the model's guess where it is right and
picks the true label where not; the labels trained on are the ones read back from the review folder's journal.
Target: suggest reaches random's 1,000-label accuracy with <= 700 labels.
Writes bench/out/label_loop.json and bench/out/label_loop.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import common
import numpy as np


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """`app` on a live uvicorn server (a thread, a port the OS picks); its base URL."""
    import uvicorn

    listener = socket.socket()
    listener.bind((common.HOST, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://{common.HOST}:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def reviewed(picked: np.ndarray, probabilities: np.ndarray, texts: list[str], truth: np.ndarray, names: list[str],
             tally: dict[str, float]) -> dict[int, int]:
    """pool row -> label id for `picked`, as a reviewer gave them through the review page's HTTP routes and as
    the review folder's journal holds them afterwards (a fresh ReviewState reads it back)."""
    import httpx

    from bertfit.deploy.review import create_review_app
    from bertfit.deploy.review_state import ReviewState, item_record
    from bertfit.deploy.serve import ServeSettings

    items = [item_record("label", f"label-{row}", texts[row], names[int(p.argmax())], row=int(row) + 1,
                         suggested=names[int(p.argmax())], score=None, reason="suggested",
                         probabilities={n: float(v) for n, v in zip(names, p)}) for row, p in zip(picked, probabilities)]
    with tempfile.TemporaryDirectory() as folder:
        state = ReviewState(Path(folder), names, items)
        started = time.perf_counter()
        with served(create_review_app(state, ServeSettings())) as base, httpx.Client(base_url=base) as http:
            item = http.get("/api/next", params={"queue": "label"}).json()["item"]
            while item is not None:  # what the page does: show the next item, send the decision, show the answer's
                answer = names[int(truth[int(item["row"]) - 1])]
                tally["accepted"] += answer == item["prefill"]  # Enter on the model's guess, else a digit then Enter
                decision = http.post("/api/decide", json={"queue": "label", "item": item["id"], "label": answer})
                decision.raise_for_status()
                item = decision.json()["item"]
        tally["seconds"] += time.perf_counter() - started
        tally["decisions"] += len(items)
        saved = ReviewState(Path(folder), names, items).labelled("label")
    return {int(item_id.split("-")[1]): names.index(label) for item_id, label in saved.items()}


def learning_curve(strategy: str, first: np.ndarray, pool: tuple[np.ndarray, np.ndarray, list[str]],
                   test: tuple[np.ndarray, np.ndarray], sizes: list[int], seed: int, tally: dict[str, float]) -> list[float]:
    from bertfit.curate.folds import logistic_probabilities
    from bertfit.curate.suggest import select

    (train_x, truth, texts), (test_x, test_y) = pool, test
    classes, rng = int(truth.max()) + 1, np.random.default_rng(seed + 1000)
    names = [str(k) for k in range(classes)]
    given = {int(row): int(truth[row]) for row in first}  # the starting rows arrive labelled
    curve = []
    for size in sizes:
        fit = np.asarray(list(given))
        labels = np.asarray([given[row] for row in fit])
        curve.append(float((logistic_probabilities(train_x[fit], labels, test_x, classes).argmax(1) == test_y).mean()))
        if size == sizes[-1]:
            break
        unlabelled = np.setdiff1d(np.arange(len(truth)), fit)
        count = sizes[sizes.index(size) + 1] - size
        probabilities = logistic_probabilities(train_x[fit], labels, train_x[unlabelled], classes)
        chosen = rng.choice(len(unlabelled), count, replace=False) if strategy == "random" else \
            select(probabilities, train_x[unlabelled], count)
        given.update(reviewed(unlabelled[chosen], probabilities[chosen], texts, truth, names, tally))
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
    pool, evaluation = (train_x, np.asarray(rows.labels), rows.texts), (test_x, test_y)
    sizes = list(range(args.start, args.stop + 1, args.step))
    curves: dict[str, list[list[float]]] = {"suggest": [], "random": []}
    tally = {"decisions": 0, "accepted": 0, "seconds": 0.0}
    for seed in range(args.seeds):
        first = np.random.default_rng(seed).choice(len(rows), args.start, replace=False)
        for strategy in curves:
            curves[strategy].append(learning_curve(strategy, first, pool, evaluation, sizes, seed, tally))
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
              "review": {"decisions": tally["decisions"], "model_guess_accepted": tally["accepted"] / max(1, tally["decisions"]),
                         "ms_per_decision": round(1000 * tally["seconds"] / max(1, tally["decisions"]), 2),
                         "how": "each pick labelled through bertfit review's HTTP routes, read back from its journal"},
              "load_average_after": common.load_average()}
    common.write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("mean", "random_at_max", "suggest_labels_to_reach_random_at_max",
                                              "target_met", "review")}, indent=2))


if __name__ == "__main__":
    main()
