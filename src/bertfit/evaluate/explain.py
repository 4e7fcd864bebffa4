"""Token attributions by integrated gradients on the input embeddings (pure torch, no captum).

For the predicted class c, attribution_i = (x_i - x'_i) . mean over alpha of d logit_c / d x at
x' + alpha (x - x'), where x are the word embeddings of the text and x' the embeddings of an
all-[PAD] text of the same length with [CLS]/[SEP] kept (Sundararajan et al. 2017). Summed over
the embedding width, one signed number per token: positive pushed towards c, negative away.
`completeness` (sum of attributions vs logit(x) - logit(x')) says how well the steps approximate
the integral.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertfit.artifacts import LoadedModel, load_model
from bertfit.data.batching import pad_rows
from bertfit.data.windows import window_starts
from bertfit.errors import BertfitError
from bertfit.infer.tokens import tokenize_like_training
from bertfit.model import TextClassifier, pool
from bertfit.runtime.device import choose_device

PATH_ROWS = 64  # rows (windows x integration steps) run through the model at once


@dataclass(frozen=True)
class Attribution:
    text: str
    label: str  # the class explained (predicted unless asked otherwise)
    confidence: float
    tokens: list[str]
    scores: list[float]  # one per token, same order
    completeness_gap: float  # |sum(scores) - (logit(x) - logit(baseline))|; small means the steps sufficed


def _logits_from_embeddings(model: TextClassifier, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    hidden = model.encoder(inputs_embeds=embeddings, attention_mask=attention_mask).last_hidden_state
    return model.head(model.dropout(pool(hidden, attention_mask, model.pooling)))


def explain_text(run_dir: str | Path, text: str, label: str | None = None, steps: int = 32,
                 device: str = "auto") -> tuple[Attribution, list[str]]:
    """`text`'s token attributions to `label` (default: the predicted one), and the tokenizer's special tokens."""
    if steps < 1:
        raise BertfitError(f"steps: must be >= 1 (integration steps), got {steps}")
    loaded = load_model(Path(run_dir))
    if label is not None and label not in loaded.labels.label2id:
        raise BertfitError(f"label: {label!r} is not a label of this model ({', '.join(loaded.meta.labels)})")
    loaded.model.to(choose_device(device))
    target = None if label is None else loaded.labels.label2id[label]
    return integrated_gradients(loaded, text, target, steps), special_tokens_of(loaded)


def integrated_gradients(loaded: LoadedModel, text: str, target: int | None = None, steps: int = 32) -> Attribution:
    """Attributions to class `target` (default: the predicted class) of the tokens the model reads of `text`: cut as
    predict cuts it (head and tail, or every window, pooled as predict pools them; a token in two windows sums both)."""
    model, tokenizer, meta = loaded.model.eval(), loaded.tokenizer, loaded.meta
    device = next(model.parameters()).device
    split = tokenize_like_training(meta, tokenizer, [text])
    rows = pad_rows(split, np.arange(len(split)), tokenizer.pad_token_id)
    input_ids, attention_mask = (torch.from_numpy(np.asarray(a)).to(device).long() for a in rows)
    special = torch.tensor([tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
                            for row in input_ids.tolist()], device=device, dtype=torch.bool) | (attention_mask == 0)
    baseline_ids = torch.where(special, input_ids, torch.full_like(input_ids, tokenizer.pad_token_id))
    embed, pooling = model.encoder.get_input_embeddings(), meta.window_pooling if split.windows is not None else "mean"
    with torch.no_grad():
        inputs, baseline = embed(input_ids), embed(baseline_ids)
        logits, baseline_logits = _pooled_logits(model, torch.stack([inputs, baseline]), attention_mask, pooling).float()
    target = int(logits.argmax()) if target is None else target
    gradients = torch.zeros_like(inputs)
    alphas = (torch.arange(steps, device=device, dtype=inputs.dtype) + 0.5) / steps  # Riemann midpoints
    for chunk in alphas.split(max(1, PATH_ROWS // len(input_ids))):
        path = (baseline[None] + chunk[:, None, None, None] * (inputs - baseline)[None]).detach().requires_grad_(True)
        with torch.enable_grad():
            out = _pooled_logits(model, path, attention_mask, pooling)[:, target]
            gradients += torch.autograd.grad(out.sum(), path)[0].sum(0)
    scores = ((inputs - baseline) * gradients / steps).sum(-1).float()
    gap = abs(float(scores[attention_mask.bool()].sum()) - float(logits[target] - baseline_logits[target]))
    probabilities = torch.softmax(logits / meta.temperature, -1)
    tokens, token_scores = _document_tokens(tokenizer, meta, text, input_ids, attention_mask, scores)
    return Attribution(text, meta.labels[target], float(probabilities[target]), tokens, token_scores, gap)


def _pooled_logits(model: TextClassifier, embeddings: torch.Tensor, attention_mask: torch.Tensor,
                   pooling: str) -> torch.Tensor:
    """The text's logits at each of P points (embeddings: P x rows x tokens x width), its rows' logits pooled as predict
    pools a text's windows (one row: its own)."""
    points, count = embeddings.shape[:2]
    rows = _logits_from_embeddings(model, embeddings.flatten(0, 1), attention_mask.repeat(points, 1))
    rows = rows.view(points, count, -1)
    return rows.max(1).values if pooling == "max" else rows.mean(1)


def _document_tokens(tokenizer: Any, meta: Any, text: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     scores: torch.Tensor) -> tuple[list[str], list[float]]:
    """The tokens read, in text order, with their scores: one row's as they are; windows' joined back into the text
    (the body positions each window covers, its [CLS] and [SEP] summed into the text's own)."""
    rows = [(ids[mask.bool()].tolist(), row[mask.bool()].tolist()) for ids, mask, row in zip(input_ids, attention_mask, scores)]
    if len(rows) == 1:
        return tokenizer.convert_ids_to_tokens(rows[0][0]), rows[0][1]
    whole = tokenizer([text], truncation=False)["input_ids"][0]
    body, budget = whole[1:-1], meta.max_length - 2
    starts = window_starts(len(body), budget, meta.window_stride)
    summed, ends = np.zeros(len(body)), [0.0, 0.0]
    for start, (ids, row) in zip(starts, rows):
        summed[start:start + len(ids) - 2] += row[1:-1]
        ends = [ends[0] + row[0], ends[1] + row[-1]]
    return tokenizer.convert_ids_to_tokens(whole), [ends[0], *summed.tolist(), ends[1]]


def merge_word_pieces(tokens: list[str], scores: list[float], special: set[str]) -> list[tuple[str, float]]:
    """Join '##' continuation pieces into words (scores summed) and drop special tokens, for reading."""
    words: list[tuple[str, float]] = []
    for token, score in zip(tokens, scores):
        if token in special:
            continue
        if token.startswith("##") and words:
            words[-1] = (words[-1][0] + token[2:], words[-1][1] + score)
        else:
            words.append((token, score))
    return words


def attribution_html(attribution: Attribution, special_tokens: list[str]) -> str:
    """The text as coloured spans: green pushed towards the label, red away; opacity = |score| / max."""
    words = merge_word_pieces(attribution.tokens, attribution.scores, set(special_tokens))
    peak = max((abs(s) for _, s in words), default=0.0) or 1.0
    spans = []
    for word, score in words:
        colour = "22,160,70" if score >= 0 else "210,40,40"
        spans.append(f'<span title="{score:+.3f}" style="background: rgba({colour},{abs(score) / peak:.2f}); '
                     f'padding: 1px 2px; border-radius: 3px">{html.escape(word)}</span>')
    header = (f"<div><b>{html.escape(attribution.label)}</b> ({attribution.confidence:.1%}); "
              "green pushed towards this label, red away</div>")
    return f'<div class="attribution">{header}<div style="line-height: 1.9">{" ".join(spans)}</div></div>'


def explain_page(attribution: Attribution, special_tokens: list[str]) -> str:
    """A small standalone HTML page for `bertfit explain`."""
    body = attribution_html(attribution, special_tokens)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>bertfit explain</title></head>"
            f"<body style='font-family: sans-serif; max-width: 900px; margin: 2em auto'><h2>Token attributions "
            f"(integrated gradients)</h2>{body}<p style='color:#666'>completeness gap "
            f"{attribution.completeness_gap:.4f} (sum of attributions vs logit difference to the all-[PAD] baseline)"
            "</p></body></html>")


def top_tokens(attribution: Attribution, special_tokens: list[str], count: int = 5) -> list[tuple[str, float]]:
    words = merge_word_pieces(attribution.tokens, attribution.scores, set(special_tokens))
    return sorted(words, key=lambda pair: -pair[1])[:count]


def special_tokens_of(loaded: LoadedModel) -> list[str]:
    return list(loaded.tokenizer.all_special_tokens)
