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

import torch

from bertfit.artifacts import LoadedModel, load_model
from bertfit.errors import BertfitError
from bertfit.model import TextClassifier, pool
from bertfit.runtime.device import choose_device


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
    loaded = load_model(Path(run_dir))
    if label is not None and label not in loaded.labels.label2id:
        raise BertfitError(f"label: {label!r} is not a label of this model ({', '.join(loaded.meta.labels)})")
    loaded.model.to(choose_device(device))
    target = None if label is None else loaded.labels.label2id[label]
    return integrated_gradients(loaded, text, target, steps), special_tokens_of(loaded)


def integrated_gradients(loaded: LoadedModel, text: str, target: int | None = None, steps: int = 32) -> Attribution:
    """Attributions of `text`'s tokens to class `target` (default: the predicted class)."""
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    device = next(model.parameters()).device
    encoded = tokenizer(text, truncation=True, max_length=loaded.meta.max_length, return_tensors="pt")
    input_ids = encoded["input_ids"].to(device)
    attention_mask = encoded["attention_mask"].to(device)
    special = torch.tensor(tokenizer.get_special_tokens_mask(input_ids[0].tolist(), already_has_special_tokens=True),
                           device=device, dtype=torch.bool)
    baseline_ids = torch.where(special, input_ids[0], torch.full_like(input_ids[0], tokenizer.pad_token_id))[None]
    embed = model.encoder.get_input_embeddings()
    with torch.no_grad():
        inputs, baseline = embed(input_ids), embed(baseline_ids)
        logits = _logits_from_embeddings(model, inputs, attention_mask)[0].float()
        baseline_logits = _logits_from_embeddings(model, baseline, attention_mask)[0].float()
    target = int(logits.argmax()) if target is None else target
    # Riemann midpoints; all steps in one batch (texts are at most max_length tokens).
    alphas = (torch.arange(steps, device=device, dtype=inputs.dtype) + 0.5) / steps
    path = (baseline + alphas[:, None, None] * (inputs - baseline)).detach().requires_grad_(True)
    with torch.enable_grad():
        out = _logits_from_embeddings(model, path, attention_mask.expand(steps, -1))[:, target]
        gradients, = torch.autograd.grad(out.sum(), path)
    scores = ((inputs - baseline)[0] * gradients.mean(0)).sum(-1).float()
    gap = abs(float(scores.sum()) - float(logits[target] - baseline_logits[target]))
    probabilities = torch.softmax(logits / loaded.meta.temperature, -1)
    tokens = tokenizer.convert_ids_to_tokens(input_ids[0].tolist())
    return Attribution(text, loaded.meta.labels[target], float(probabilities[target]), tokens,
                       scores.detach().cpu().tolist(), gap)


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
