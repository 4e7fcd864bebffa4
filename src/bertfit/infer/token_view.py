"""How a model reads one text: its tokens, ids and attention mask, cut as in training (`bertfit tokenize`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertfit import artifacts
from bertfit.errors import BertfitError
from bertfit.infer.tokens import tokenize_like_training
from bertfit.meta import ModelMeta
from bertfit.model import load_tokenizer

DEFAULT_MAX_LENGTH = 128  # model.max_length's default, for a model that is not a trained run


@dataclass(frozen=True)
class TokenView:
    """One text as the model gets it: one row per window (a single row unless sliding windows are on)."""

    tokens: tuple[tuple[str, ...], ...]
    ids: tuple[tuple[int, ...], ...]
    attention_mask: tuple[tuple[int, ...], ...]  # 1 for every token here; padding in a batch gets 0
    text_tokens: int  # the whole text's length in tokens, special tokens included, before any cut
    max_length: int
    source: str  # the run or model whose tokenizer and settings were used

    @property
    def cut_tokens(self) -> int:
        """Tokens of the text the model never reads (0 with windows: they cover it all)."""
        return 0 if len(self.ids) > 1 else max(0, self.text_tokens - len(self.ids[0]))


def view_tokens(source: str | Path, text: str, max_length: int | None = None) -> TokenView:
    """`text` tokenised by a trained run or model folder (its max_length, head+tail and windows), or by any
    tokenizer `model.name` accepts ('embedded', a folder, a hub name) at `max_length` (default 128)."""
    if not text:
        raise BertfitError("text: give a non-empty text to tokenise")
    trained = _trained_folder(Path(source))
    if trained is not None:
        if max_length is not None:
            raise BertfitError(f"max_length: {source} is a trained model, which reads texts at its own max_length; "
                               "leave max_length out")
        meta, tokenizer = artifacts.read_model_meta(trained), load_tokenizer(str(trained))
    else:
        tokenizer = load_tokenizer(str(source))
        meta = ModelMeta(labels=(), base_model=str(source), max_length=max_length or DEFAULT_MAX_LENGTH)
    split = tokenize_like_training(meta, tokenizer, [text])
    rows = [np.asarray(split.ids[split.offsets[i]:split.offsets[i + 1]]).tolist() for i in range(len(split))]
    whole = len(tokenizer(text, truncation=False, verbose=False)["input_ids"])
    return TokenView(tuple(tuple(tokenizer.convert_ids_to_tokens(row)) for row in rows), tuple(map(tuple, rows)),
                     tuple((1,) * len(row) for row in rows), whole, meta.max_length, str(source))


def _trained_folder(path: Path) -> Path | None:
    try:
        return artifacts.model_folder(path)
    except BertfitError:
        return None
