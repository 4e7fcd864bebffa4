"""The evaluation figures as PNG files: confusion matrices, training curves, reliability diagram, per-label scores.

Matplotlib runs on the Agg backend (no display needed); every function takes plain data, writes
one file and closes its figure, so long evaluations do not pile up open figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bertfit.atomic import atomic_file

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window, even where a display exists
    import matplotlib.pyplot as plt
    return plt


def confusion_png(counts: np.ndarray, names: tuple[str, ...], path: Path) -> Path:
    """Counts (left) and rows normalised to recall (right), true class down, predicted across."""
    plt = _pyplot()
    counts = np.asarray(counts)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    size = max(4.5, 0.55 * len(names) + 2.5)
    figure, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for axis, values, title, text in ((axes[0], counts, "counts", "{:d}"),
                                      (axes[1], normalised, "normalised by true class", "{:.2f}")):
        image = axis.imshow(values, cmap="Blues", vmin=0)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        axis.set_title(f"Confusion matrix ({title})")
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
        axis.set_yticks(range(len(names)), names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        if len(names) <= 20:  # beyond that the numbers would overlap; the colour still reads
            threshold = values.max() / 2 if values.max() > 0 else 1
            for (i, j), value in np.ndenumerate(values):
                axis.text(j, i, text.format(value.item()), ha="center", va="center", fontsize=9,
                          color="white" if value > threshold else "black")
    figure.tight_layout()
    return _save(plt, figure, path)


def curves_png(history: list[dict], path: Path, warning: str | None = None) -> Path:
    """Loss and accuracy, train vs validation, plus validation macro-F1, per evaluation.

    Train values are running means over the steps since the previous evaluation (dropout on, weights
    moving), as the loop records them; validation values are measured at the evaluation itself.
    """
    plt = _pyplot()
    by_epoch = len({r.get("epoch") for r in history}) == len(history)
    x_key, x_label = ("epoch", "epoch") if by_epoch else ("step", "optimizer step")
    x = [r[x_key] for r in history]
    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 4.2))

    def plot(axis: Any, key: str, **style: Any) -> None:  # a series some records lack (a run without validation)
        points = [(xi, r[key]) for xi, r in zip(x, history) if key in r]
        if points:
            axis.plot(*zip(*points), **style)

    plot(loss_axis, "train/loss", marker="o", label="train (mean since previous evaluation)")
    plot(loss_axis, "eval/loss", marker="o", label="validation")
    loss_axis.set_title("Loss")
    plot(score_axis, "train/accuracy", marker="o", linestyle="--", label="train accuracy (running)")
    plot(score_axis, "eval/accuracy", marker="o", label="validation accuracy")
    plot(score_axis, "eval/f1_macro", marker="s", label="validation F1 (macro)")
    score_axis.set_title("Accuracy and F1")
    from matplotlib.ticker import MaxNLocator

    for axis in (loss_axis, score_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel(x_label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=9)
    if warning:
        figure.suptitle("Warning: validation loss rises while training loss falls (overfitting)", color="#b00020")
    figure.tight_layout()
    return _save(plt, figure, path)


def reliability_png(before: dict[str, np.ndarray], after: dict[str, np.ndarray] | None, path: Path,
                    ece_before: float, ece_after: float | None) -> Path:
    """Accuracy per confidence bin against the diagonal (perfect calibration), before and after scaling."""
    plt = _pyplot()
    panels = [("uncalibrated", before, ece_before)] + ([("temperature-scaled", after, ece_after)] if after else [])
    figure, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.2), squeeze=False)
    for axis, (title, table, ece) in zip(axes[0], panels):
        edges = table["edges"]
        width = np.diff(edges)
        filled = table["count"] > 0
        axis.bar(edges[:-1][filled], table["accuracy"][filled], width=width[filled], align="edge",
                 edgecolor="black", color="#4c72b0", label="accuracy")
        # Hatched, unfilled: the gap stays readable whether it lies above (over-confident) or below the bar.
        axis.bar(edges[:-1][filled], (table["confidence"] - table["accuracy"])[filled], bottom=table["accuracy"][filled],
                 width=width[filled], align="edge", fill=False, hatch="//", edgecolor="#c44e52", label="gap to mean confidence")
        axis.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_title(f"Reliability ({title}), ECE {ece:.3f}")
        # Below the axes: bars can fill any corner of the plot, the legend must not hide them.
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8, frameon=False)
    figure.tight_layout()
    return _save(plt, figure, path)


def per_label_png(per_label: dict[str, dict[str, Any]], path: Path) -> Path:
    """Multi-label runs: precision, recall and F1 of each label side by side, its support in the tick label."""
    plt = _pyplot()
    names = list(per_label)
    y = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(8, max(3.0, 0.45 * len(names) + 1.5)))
    for offset, key, colour in ((-0.27, "precision", "#4c72b0"), (0.0, "recall", "#dd8452"), (0.27, "f1", "#55a868")):
        axis.barh(y + offset, [per_label[n][key] for n in names], height=0.26, color=colour, label=key)
    axis.set_yticks(y, [f"{n} ({per_label[n]['support']})" for n in names])
    axis.invert_yaxis()  # the first label on top, as in the tables
    axis.set_xlim(0, 1)
    axis.set_xlabel("score at the label's threshold")
    axis.set_title("Per label (support in brackets)")
    axis.grid(alpha=0.3, axis="x")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=9, frameon=False)
    figure.tight_layout()
    return _save(plt, figure, path)


def compare_curves_png(histories: dict[str, list[dict]], path: Path) -> Path:
    """Validation loss and macro-F1 of several runs on shared axes (by optimizer step)."""
    plt = _pyplot()
    figure, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, history in histories.items():
        steps = [r["step"] for r in history]
        loss_axis.plot(steps, [r["eval/loss"] for r in history], marker="o", label=name)
        score_axis.plot(steps, [r["eval/f1_macro"] for r in history], marker="o", label=name)
    for axis, title in ((loss_axis, "Validation loss"), (score_axis, "Validation F1 (macro)")):
        axis.set_title(title)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=9)
    figure.tight_layout()
    return _save(plt, figure, path)


def _save(plt, figure, path: Path) -> Path:
    path = Path(path)
    with atomic_file(path, "wb") as file:  # atomic and confined to the run like every other write
        figure.savefig(file, format=path.suffix.lstrip(".") or "png", dpi=DPI)
    plt.close(figure)
    return path
