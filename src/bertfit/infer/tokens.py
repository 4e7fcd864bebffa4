"""Texts into token rows as the model was trained, and a tokenizer that needs only the `tokenizers` package.

`TokenizerFile` reads a folder's tokenizer.json directly and gives the ids transformers' AutoTokenizer
gives: the ONNX path of `bertfit predict` and `serve` then starts without importing transformers or
torch (seconds on a small CPU).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bertfit.data.batching import TokenizedSplit, tokenize
from bertfit.errors import BertfitError
from bertfit.meta import ModelMeta


def tokenize_like_training(meta: ModelMeta, tokenizer: Any, texts: list[str], labels: Any = None) -> TokenizedSplit:
    """Tokens cut as the model was trained: max_length, head+tail share and sliding windows from its
    meta; with windows, pass the rows' logits through split.document_logits."""
    labels = np.zeros(len(texts), dtype=np.int64) if labels is None else labels
    return tokenize(list(texts), labels, tokenizer, meta.cut)


class TokenizerFile:
    """The calls bertfit makes of a fast tokenizer (batch encode with or without truncation, special-token
    count, pad id), served by the `tokenizers` library from tokenizer.json and tokenizer_config.json."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise BertfitError(f"{folder}: no tokenizer.json; export the run again (`bertfit export RUN --onnx`)")
        self.backend = Tokenizer.from_file(str(path))
        self.backend.no_padding()  # the saved file may carry padding and truncation settings of its last use
        settings_file = Path(folder) / "tokenizer_config.json"
        settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
        self.truncation_side = settings.get("truncation_side", "right")
        pad = settings.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        self.pad_token_id = self.backend.token_to_id(pad) if pad else None

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self.backend.num_special_tokens_to_add(pair)

    def __call__(self, texts: list[str], truncation: bool = False, max_length: int | None = None,
                 **_: Any) -> dict[str, list[list[int]]]:
        # Changed only when it differs (as transformers does): the server's threads share this tokenizer.
        wanted = {"max_length": max_length, "stride": 0, "strategy": "longest_first", "direction": self.truncation_side} \
            if truncation and max_length else None
        current = self.backend.truncation
        if wanted is None and current is not None:
            self.backend.no_truncation()
        elif wanted is not None and (current is None or any(current.get(k) != v for k, v in wanted.items())):
            self.backend.enable_truncation(**wanted)
        return {"input_ids": [encoding.ids for encoding in self.backend.encode_batch(texts, add_special_tokens=True)]}
