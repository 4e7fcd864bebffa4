"""A bertfit model folder as Hugging Face sees it: the config and model classes config.json's auto_map names.

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    pipeline("text-classification", model=folder, trust_remote_code=True)

bertfit copies this file into every model folder it saves, so it imports only torch and transformers.
It computes what bertfit's own inference computes: each text cut as the model was trained (max_length,
head+tail truncation or sliding windows, applied here to the whole tokenised text a pipeline passes),
the encoder, mean or [CLS] pooling, the linear head, the windows' logits pooled per text, and the
temperature `bertfit evaluate` fitted. config.json's top-level sizes are ones no stock class can build a
model from, so loading the folder without trust_remote_code fails instead of initialising a stock model
at random, while its tokenizer loads with a plain AutoTokenizer (see bertfit.hf_folder).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class BertfitConfig(PretrainedConfig):
    """The encoder's own config (a dict, under `encoder`) plus how bertfit reads text and pools."""

    model_type = "bertfit"
    # adapter: LoRA runs keep only adapters in the folder, which then needs `bertfit merge` first
    SETTINGS = {"encoder_type": "bert", "pooling": "mean", "dropout": 0.1, "max_length": 512, "keep_head": 1.0,
                "window_stride": 0, "window_pooling": "mean", "temperature": 1.0, "adapter": None}

    def __init__(self, encoder: dict | None = None, **kwargs):
        self.encoder = dict(encoder or {})
        kwargs.pop("model_type", None)  # config.json names the encoder's type (see from_pretrained)
        settings = {name: kwargs.pop(name, default) for name, default in self.SETTINGS.items()}
        super().__init__(**kwargs)
        for name, value in settings.items():  # after: transformers 4 sets a generation `temperature` of its own
            setattr(self, name, value)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "BertfitConfig":
        """config.json names the encoder's model_type (so a plain AutoTokenizer finds a class transformers
        knows and runs no code from the folder); read it as this class without transformers' type warning."""
        config_dict, kwargs = cls.get_config_dict(pretrained_model_name_or_path, **kwargs)
        return cls.from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict:
        """As bertfit writes config.json: model_type is the encoder's, so the saved folder loads the same way."""
        return {**super().to_dict(), "model_type": self.encoder_type}

    def encoder_config(self) -> PretrainedConfig:
        return AutoConfig.for_model(self.encoder_type, **self.encoder)


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per text: the [CLS] token, or the mean of the real (unpadded) tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def cut_text(ids: torch.Tensor, config: BertfitConfig) -> list[torch.Tensor]:
    """A whole tokenised text ([CLS] body [SEP]) -> the windows bertfit reads: one unless window_stride > 0."""
    size = config.max_length
    if len(ids) <= size:
        return [ids]
    budget, first, body, last = size - 2, ids[:1], ids[1:-1], ids[-1:]
    if config.window_stride > 0:  # the last window ends at the end of the text
        starts = [*range(0, len(body) - budget, config.window_stride), len(body) - budget]
        return [torch.cat([first, body[start:start + budget], last]) for start in starts]
    head = round(budget * config.keep_head)
    return [torch.cat([first, body[:head], body[len(body) - (budget - head):], last])]


class BertfitForSequenceClassification(PreTrainedModel):
    """encoder -> pooled text vector -> dropout -> linear head; `encoder.*` and `head.*` are bertfit's weight names."""

    config_class = BertfitConfig
    base_model_prefix = "encoder"

    def __init__(self, config: BertfitConfig):
        if config.adapter:
            raise ValueError(f"this bertfit model keeps LoRA adapters in {config.adapter}/, not a full encoder; "
                             "write a standalone folder with `bertfit merge RUN OUT` and load that")
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder_config())
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # bertfit pools itself; its weights hold no pooler
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.encoder.config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: object) -> SequenceClassifierOutput:
        """Logits divided by the temperature, one row per text. token_type_ids and the like are ignored:
        bertfit reads single texts."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        texts = [cut_text(ids[mask.bool()], self.config) for ids, mask in zip(input_ids, attention_mask)]
        windows = [window for text in texts for window in text]
        width = max(len(window) for window in windows)
        pad_id = self.config.pad_token_id or 0
        batch = torch.full((len(windows), width), pad_id, dtype=input_ids.dtype, device=input_ids.device)
        mask = torch.zeros_like(batch)
        for row, window in enumerate(windows):
            batch[row, :len(window)], mask[row, :len(window)] = window, 1
        hidden = self.encoder(input_ids=batch, attention_mask=mask).last_hidden_state
        logits = self.head(self.dropout(pool_tokens(hidden, mask, self.config.pooling)))
        pooled = [part.max(0).values if self.config.window_pooling == "max" else part.mean(0)
                  for part in logits.split([len(text) for text in texts])]
        return SequenceClassifierOutput(logits=torch.stack(pooled) / self.config.temperature)
