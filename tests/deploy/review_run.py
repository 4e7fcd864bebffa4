"""A tiny run with everything `bertfit review` reads: an audit (with a conflicting duplicate) and a suggestions file."""

from __future__ import annotations

import shutil
from pathlib import Path

from bertfit.cli.main import main
from conftest import tiny_flags, write_csv

NAMES = ["World", "Sports", "Business", "Sci/Tech"]


def make_review_run(root: Path, model_dir: Path, rows: list[tuple[str, str]]) -> tuple[Path, Path]:
    """(run, suggestions file): 120 AG News rows (the 4th repeated with another label), a 60-row test file."""
    train = list(rows[:120])
    text, label = train[3]
    train.append((text, NAMES[(NAMES.index(label) + 1) % 4]))  # a conflict the audit lists
    write_csv(root / "train.csv", train)
    write_csv(root / "test.csv", rows[300:360])
    write_csv(root / "pool.csv", [(text,) for text, _ in rows[200:260]], header=("text",))
    assert main(["train", *tiny_flags(model_dir, root), "--data.train", str(root / "train.csv"),
                 "--data.test", str(root / "test.csv"), "--name", "news", "--quiet"]) == 0
    run = root / "runs" / "news"
    assert main(["audit", str(run), "--folds", "2", "--similarity", "1.0", "--quiet"]) == 0
    suggestions = root / "suggestions.csv"
    assert main(["suggest", str(run), "--pool", str(root / "pool.csv"), "--n", "5", "--out", str(suggestions),
                 "--quiet"]) == 0
    return run, suggestions


def copy_run(source: tuple[Path, Path], root: Path) -> tuple[Path, Path]:
    """A copy of a review run (its data stays where it was) with no review yet: tests decide independently."""
    run, suggestions = source
    copy = root / "runs" / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("review"))
    return copy, shutil.copy(suggestions, root / suggestions.name)
