"""Where an evaluation's files go: RUN/eval/<name>/ and RUN/eval/<name>.json, the name saying which data was scored.

Only the run's own data of a split (data.test, or a preset's or hub dataset's own test split) writes under
that split's name (eval/test/), so evaluating other data never overwrites the run's own results. Other data
is named after itself: a preset or hub dataset by its name and split (eval/ag_news-test/, eval/user_news-test/
for user/news), a file by its stem (eval/holdout/ for holdout.csv; eval/test-csv/ for a file named like a split).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertfit import artifacts
from bertfit.config import FILE_FORMATS, RunConfig
from bertfit.data.presets import PRESETS
from bertfit.errors import BertfitError

EVAL_DIR = "eval"
SPLITS = ("train", "validation", "test")
OUTPUT_FILES = ("metrics.json", "errors.csv", "confusion.png", "curves.png", "reliability.png", "per_label.png")


@dataclass(frozen=True)
class Scored:
    """What an evaluation's files are written from: texts, their true labels (ids, or 0/1 rows) and raw logits."""

    texts: list[str]
    labels: np.ndarray
    logits: np.ndarray
    names: tuple[str, ...]


def own_data(config: RunConfig, split: str) -> str | None:
    """The run's own data of `split`: data.<split>, else the split of the preset or hub dataset it trained on;
    None where it has none (a file's validation rows split off data.train, no data.test)."""
    given = getattr(config.data, split, None) if split in SPLITS else None
    if given:
        return given
    train = config.data.train
    if split == "train":
        return train
    if train in PRESETS:
        return train if split in PRESETS[train].files else None
    return None if _is_file(train) else train  # a hub dataset has its own splits


def is_own_data(config: RunConfig, data: Any, split: str) -> bool:
    """Whether `data` (None: the run's own) is the run's own data of `split`, as written or as the same file."""
    if data is None:
        return True
    own = own_data(config, split)
    if not isinstance(data, str):  # an in-memory table (data.tables) is never the run's own saved data
        return False
    if data == own:
        return True
    if own is None or not (_is_file(data) and _is_file(own)):
        return False
    return Path(data).expanduser().resolve() == Path(own).expanduser().resolve()


def evaluation_name(config: RunConfig, data: Any, split: str) -> str:
    """The folder name of an evaluation of `data` (see the module's text; an in-memory table is named by its type)."""
    if is_own_data(config, data, split):
        return split
    if not isinstance(data, str):
        return _clean(type(data).__name__)
    if _is_file(data):
        path = Path(data)
        name = _clean(path.stem)
        return f"{name}-{_clean(path.suffix.lstrip('.')) or 'file'}" if name in SPLITS else name
    return f"{_clean(data)}-{_clean(split)}"


def find_evaluation(run_dir: Path, data: str | None, split: str) -> str:
    """The evaluation `report --data` means: an evaluation's name as evaluate printed it, or the data as given to
    evaluate (with its --split)."""
    if data is not None and re.fullmatch(r"[\w.-]+", data) and (Path(run_dir) / EVAL_DIR / data / "metrics.json").is_file():
        return data
    return evaluation_name(artifacts.read_run_config(Path(run_dir)), data, split)


def evaluation_folder(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / EVAL_DIR / name


def evaluations(run_dir: Path) -> list[str]:
    """The names of the run's evaluations, most recent first."""
    folder = Path(run_dir) / EVAL_DIR
    found = [path.parent for path in folder.glob("*/metrics.json")] if folder.is_dir() else []
    return [path.name for path in sorted(found, key=lambda path: (path / "metrics.json").stat().st_mtime, reverse=True)]


def missing_evaluation(run_dir: Path, name: str) -> BertfitError:
    """The error for an evaluation that is not there, naming the command that writes it and those that exist."""
    others = [other for other in evaluations(run_dir) if other != name]
    found = f"; evaluations found: {', '.join(others)} (`bertfit report {run_dir} --data NAME`)" if others else ""
    command = f"bertfit evaluate {run_dir}" + ("" if name == "test" else
                                               f" --split {name}" if name in SPLITS else " --data DATA")
    return BertfitError(f"{run_dir}: no evaluation {name!r} found ({evaluation_folder(run_dir, name) / 'metrics.json'} "
                        f"is missing); run `{command}` first{found}")


def drop_stale(folder: Path, written: list[str]) -> None:
    """Remove the files an earlier evaluation left in `folder` that this one did not write (figures turned off, a
    multi-label run's other files), so a report never mixes two evaluations."""
    for name in OUTPUT_FILES:
        if name not in written:
            (folder / name).unlink(missing_ok=True)


def _is_file(spec: str) -> bool:
    """Whether a data spec names a file (as data.read does): it exists, or it has a file's suffix."""
    path = Path(spec).expanduser()
    return path.is_file() or path.suffix.lower() in FILE_FORMATS


def _clean(text: str) -> str:
    """`text` as one safe folder name: anything but letters, digits, '.', '-' and '_' becomes '_'."""
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "data"
