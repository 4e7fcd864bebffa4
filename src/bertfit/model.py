"""The classifier: a pretrained encoder, pooling, dropout and a linear head; freezing and parameter groups."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertfit.config import LoraConfig, ModelConfig
from bertfit.errors import BertfitError, brief
from bertfit.hf_folder import HF_CONFIG_FILE, encoder_settings
from bertfit.modeling_bertfit import pool_tokens as pool
from bertfit.registry.catalog import resolve

log = logging.getLogger(__name__)


class TextClassifier(nn.Module):
    """encoder -> pooled text vector -> dropout -> linear logits."""

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # BERT's pooler is unused by our pooling; dropping it saves compute and DDP trouble
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from tokens, or from `features` (pooled vectors computed earlier by `encode`).

        Passing features skips the encoder: with a frozen encoder the loop trains the head on
        cached vectors (see bertfit.training.features) while the model, its weights and saving stay the same.
        Not keyword-only: the TorchScript ONNX exporter passes every parameter by position.
        """
        if features is None:
            features = self.encode(input_ids, attention_mask)
        return self.head(self.dropout(features))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled text vectors the head reads (before dropout)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)


def resolve_model_name(name: str) -> str:
    """A registry name ('minilm-l6' or 'embedded', 'mpnet-base', 'minilm-l3') -> its installed folder;
    folders and hub names unchanged. An uninstalled registry name says how to install it."""
    return resolve(name) or name


def load_encoder(name: str) -> nn.Module:
    """Pretrained weights from a folder or the hub (hub needs a connection or a filled cache)."""
    from transformers import AutoModel

    source = resolve_model_name(name)
    if _bertfit_folder(Path(source)) is not None:  # its weights are a classifier's; loading them as an encoder fails
        raise BertfitError(f"model.name: {source} is a bertfit run or model folder; set model.name to the encoder it "
                           "was trained from and model.init_from to the run, to start from its weights")
    try:
        return AutoModel.from_pretrained(source, **float32_weights())
    except (OSError, ValueError) as error:
        where = "folder" if Path(source).exists() else "hub name"
        raise BertfitError(f"model.name: cannot load {where} {source!r}: {error}") from None


def float32_weights() -> dict[str, torch.dtype]:
    """The keyword that builds a transformers model in float32 whatever dtype its config.json names.

    transformers 5 builds (from_pretrained and from_config) in the checkpoint's dtype, so a model saved
    in bf16 or fp16 would train with half-precision weights and optimizer state; bertfit keeps weights
    in float32 and leaves half precision to autocast. transformers before 4.56 called the keyword torch_dtype.
    """
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float32}


def encoder_from_settings(settings: dict[str, Any]) -> nn.Module:
    """An encoder of the architecture `settings` (a config dict) describes, its weights left uninitialised:
    the caller loads them from a file next, so the random initialisation would be seconds thrown away."""
    from transformers import AutoConfig, AutoModel

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights

    settings = dict(settings)
    with no_init_weights():
        return AutoModel.from_config(AutoConfig.for_model(settings.pop("model_type"), **settings), **float32_weights())


def load_tokenizer(name: str):
    """The fast tokenizer of a registry name, a folder (a bertfit run or model folder too) or a hub name.

    A bertfit model folder's tokenizer is read with the encoder's config built here from its config.json,
    so transformers never looks at the folder's auto_map: no prompt, no code from the folder runs.
    """
    from transformers import AutoConfig, AutoTokenizer

    source = resolve_model_name(name)
    folder = _bertfit_folder(Path(source))
    options = {"config": AutoConfig.for_model(**encoder_settings(folder))} if folder is not None else {}
    source = str(folder) if folder is not None else source
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except (OSError, ValueError) as error:
        raise BertfitError(f"model.name: cannot load the tokenizer of {source!r}: {error}") from None
    if not tokenizer.is_fast:
        raise BertfitError(f"model.name: {source!r} has no fast tokenizer; bertfit needs one (tokenizer.json)")
    return tokenizer


def _bertfit_folder(path: Path) -> Path | None:
    """The model folder when `path` is a bertfit run directory or model folder (bertfit.json beside config.json)."""
    for folder in (path, path / "model"):
        if (folder / "bertfit.json").is_file() and (folder / HF_CONFIG_FILE).is_file():
            return folder
    return None


def build_classifier(config: ModelConfig, num_labels: int, seed: int, lora: LoraConfig | None = None,
                     initial: dict[str, torch.Tensor] | None = None, label_rows: list[int] | None = None) -> TextClassifier:
    """Encoder + head; `initial` (a previous classifier's state) replaces the pretrained weights, and its
    head row `label_rows[i]` becomes row i (-1: a new label, which keeps its fresh initialisation)."""
    encoder = load_encoder(config.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the head's and adapters' initial weights depend on the seed alone
        model = TextClassifier(encoder, num_labels, config.pooling, config.dropout)
        if initial is not None:
            load_initial_weights(model, initial, label_rows or [])
        if lora is not None and lora.r > 0:  # the config refuses LoRA with model.freeze
            apply_lora(model, lora)
    apply_freeze(model, config.freeze)
    return model


def load_initial_weights(model: TextClassifier, state: dict[str, torch.Tensor], label_rows: list[int]) -> None:
    """Encoder weights from `state`; head rows copied by label (see build_classifier), the rest left as built."""
    encoder_state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    try:
        model.encoder.load_state_dict(encoder_state)
    except RuntimeError as error:
        raise BertfitError(f"model.init_from: its encoder does not fit model.name's architecture ({brief(error)}); "
                           "set model.name to the base model the run was trained from") from None
    with torch.no_grad():
        for new_row, old_row in enumerate(label_rows):
            if old_row >= 0:
                model.head.weight[new_row] = state["head.weight"][old_row]
                model.head.bias[new_row] = state["head.bias"][old_row]


def apply_lora(model: TextClassifier, lora: LoraConfig) -> None:
    """Wrap the encoder in PEFT LoRA adapters: the encoder's own weights freeze, adapters and head train."""
    import peft

    settings = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                               target_modules=list(lora.target_modules), bias="none")
    try:
        model.encoder = peft.get_peft_model(model.encoder, settings)
    except ValueError as error:  # PEFT's message for target modules that match nothing
        raise BertfitError(f"lora.target_modules: {error}; name Linear layers of the encoder "
                           "(BERT: query, key, value, dense)") from None
    trainable, total = count_parameters(model)
    log.info("LoRA r=%d on %s: %s of %s parameters train", lora.r, ",".join(lora.target_modules),
             f"{trainable:,}", f"{total:,}")


def is_lora(model: TextClassifier) -> bool:
    return hasattr(model.encoder, "peft_config")


def merge_lora(model: TextClassifier) -> TextClassifier:
    """Fold the adapters into the encoder weights (in place) so the model is a plain encoder + head again.

    Export and serving call this: the merged model runs at full speed with no PEFT import.
    """
    if is_lora(model):
        model.encoder = model.encoder.merge_and_unload()
    return model


def head_state(model: TextClassifier) -> dict[str, torch.Tensor]:
    """The weights outside the encoder (the classification head), saved beside a LoRA adapter."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}


def apply_freeze(model: TextClassifier, freeze: str) -> None:
    """none | embeddings | encoder | N (embeddings plus the first N transformer layers)."""
    if freeze == "none":
        return
    encoder = model.encoder
    if freeze == "encoder":
        modules = [encoder]
    else:
        layers = _layers(encoder)
        count = 0 if freeze == "embeddings" else int(freeze)
        if count > len(layers):
            raise BertfitError(f"model.freeze: {count} layers asked, the encoder has {len(layers)}")
        modules = [encoder.get_input_embeddings() if not hasattr(encoder, "embeddings") else encoder.embeddings,
                   *layers[:count]]
    for module in modules:
        module.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("freeze=%s: %s of %s parameters train", freeze, f"{trainable:,}",
             f"{sum(p.numel() for p in model.parameters()):,}")


def _layers(encoder: nn.Module) -> nn.ModuleList:
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        module = encoder
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise BertfitError(f"model.freeze: cannot find the transformer layers of {type(encoder).__name__}")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in model.parameters()))
