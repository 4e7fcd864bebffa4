"""The run plan: every setting of a run and what it will cost on this machine, decided before its first step.

`make_plan` is the one place a run's unset settings are chosen (through the rules in training.defaults) and
its cost estimated: from the data's facts (texts, windows, tokens, classes) and a probe that times the
encoder's forward and backward pass on a few real training texts here. The plan is logged before training,
saved as RUN/plan.json, read again on resume, and returned in the TrainResult; everything after it runs it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertfit.atomic import write_json_atomic
from bertfit.config import RunConfig, TrainConfig, build_config, config_to_dict
from bertfit.data.batching import FeatureSplit, PaddedBatches, TokenizedSplit, padded_width, train_batches
from bertfit.errors import BertfitError
from bertfit.infer.engine import InferenceContext
from bertfit.runtime.device import autocast, wait_for_device
from bertfit.training import defaults
from bertfit.training.contrastive import draw_groups
from bertfit.training.steps import steps_per_epoch, total_steps

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
PROBE_TEXTS = 8  # texts a probe step reads: a contrastive step's group, and enough to time a batch
SLOWER_THAN_STANDARD = 10  # a plan this many times the standard method's time says so before it starts
SCORING = "scoring the held-out texts"  # the one stage that is not training (evaluations and the test split)
WINDOW_WORK = 3  # windows that multiply the tokens read by more than this are named with the settings that bound them
_MEASURED: dict[tuple, TokenCost] = {}  # measure_cost's results in this process


@dataclass(frozen=True)
class TokenCost:
    """Seconds a token costs the encoder on this machine: trained (forward and backward) and scored (forward)."""

    train: float
    score: float


@dataclass(frozen=True)
class Stage:
    """One stage of a run: what it does, its optimizer steps and its estimated seconds."""

    name: str
    steps: int
    seconds: float


@dataclass(frozen=True)
class RunPlan:
    """A run decided in full: the config with no unset field, the data it reads, its stages and their cost."""

    config: RunConfig
    texts: dict[str, int]  # per split
    windows: dict[str, int]  # rows the model reads per split: windows, or one a text
    classes: int
    parameters: int  # the encoder's
    stages: tuple[Stage, ...]
    standard_seconds: float | None  # the standard method on one cut of each text, for comparison (None: unknown)
    notes: tuple[str, ...] = ()  # what the user should know before it starts
    texts_per_second: float | None = None  # the encoder's scoring speed here on training texts (None: not measured)
    encoder: tuple[str, ...] = ()  # how model.name auto chose the encoder (training.encoders), when it did

    @property
    def seconds(self) -> float | None:
        """The estimated seconds of the whole run (None: streamed, its rows are not counted up front)."""
        return None if any(math.isnan(s.seconds) for s in self.stages) else sum(s.seconds for s in self.stages)

    @property
    def training_seconds(self) -> float | None:
        """The estimated seconds of training alone: what the run records as its train_seconds (None: unknown)."""
        stages = [s.seconds for s in self.stages if s.name != SCORING]
        return None if any(math.isnan(s) for s in stages) else sum(stages)

    def lines(self) -> list[str]:
        """The plan as a reader wants it before the run starts."""
        config, reads = self.config, ", ".join(f"{name} {self._rows(name)}" for name in self.texts)
        lines = [f"plan: {config.train.method} method, {self.classes} classes, {self.parameters / 1e6:.1f}M-parameter "
                 f"encoder {config.model.name}; {reads}", *self.encoder]
        for stage in self.stages:
            steps = f"{stage.steps:,} steps, " if stage.name != SCORING else ""
            lines.append(f"  {stage.name}: {steps}about {_duration(stage.seconds)}")
        settings = config.train
        lines.append(f"  settings: batch {settings.batch_size}, epochs {settings.epochs}, lr {settings.lr:g}, "
                     f"warm-up {settings.warmup_ratio:g}, keep {settings.keep}, max_length {config.model.max_length}"
                     + (f", windows every {config.model.window_stride} tokens" if config.model.window_stride else ""))
        if self.seconds is not None and self.standard_seconds is not None:
            compared = config.train.method != "standard" or bool(config.model.window_stride)
            against = f" (the standard method on truncated texts: {_duration(self.standard_seconds)})" if compared else ""
            lines.append(f"  estimate: {_duration(self.seconds)} here{against}; any setting can be set to override")
        if self.texts_per_second:
            lines.append(f"  prediction: about {self.texts_per_second:,.0f} texts/s here with PyTorch (an export serves "
                         "faster: bertfit export RUN --target auto)")
        return lines

    def _rows(self, split: str) -> str:
        texts, windows = self.texts[split], self.windows[split]
        return f"{texts:,} texts" + (f" ({windows:,} windows)" if windows != texts else "")

    def to_dict(self) -> dict[str, Any]:
        plain = asdict(self) | {"config": config_to_dict(self.config), "seconds": self.seconds,
                                "training_seconds": self.training_seconds}
        return plain | {"stages": [asdict(s) for s in self.stages]}


def make_plan(config: RunConfig, facts: defaults.DataFacts, splits: dict[str, Any], cost: TokenCost | None,
              validation_fraction: float | None) -> RunPlan:
    """The run's plan: `config` with every unset field chosen from `facts` (training.defaults), its stages and their
    cost from `cost` (None: a streamed run, whose rows are not known up front)."""
    resolved = defaults.fill_defaults(config, facts, validation_fraction)
    texts = {name: _texts(split) for name, split in splits.items()}
    windows = {name: len(split) for name, split in splits.items()}
    stages = _stages(resolved, splits, cost)
    standard = _standard_seconds(resolved, splits, cost) if cost is not None and "train" in texts else None
    speed = 1 / (cost.score * max(1.0, _tokens(splits["train"]) / max(1, len(splits["train"])))) \
        if cost is not None and "train" in texts and cost.score > 0 else None
    plan = RunPlan(resolved, texts, windows, facts.classes, facts.parameters, stages, standard, texts_per_second=speed)
    return dataclasses.replace(plan, notes=_notes(config, plan, splits))


def _texts(split: Any) -> int:
    return split.documents if isinstance(split, (TokenizedSplit, FeatureSplit)) else len(split)


def _tokens(split: Any) -> int:
    return int(np.asarray(split.lengths).sum()) if hasattr(split, "lengths") else 0


def _cut_lengths(split: Any, max_length: int) -> np.ndarray:
    """Each text's tokens read as one cut of at most max_length tokens (its windows joined back)."""
    if split is None or not hasattr(split, "lengths"):
        return np.zeros(0, dtype=np.int64)
    if getattr(split, "windows", None) is None:
        return np.asarray(split.lengths)
    return np.minimum(np.add.reduceat(split.lengths, split.windows[:-1]), max_length)


def _cut_tokens(split: Any, max_length: int) -> int:
    return int(_cut_lengths(split, max_length).sum())


def _stages(config: RunConfig, splits: dict[str, Any], cost: TokenCost | None) -> tuple[Stage, ...]:
    """The stages the run makes: the contrastive encoder stage (if any), the loop, then scoring the held-out texts.
    A training step's tokens are counted as its batch is padded (to its longest text), as the probe timed them."""
    train, settings = splits["train"], config.train
    unknown = cost is None or not hasattr(train, "lengths")
    stages = []
    if settings.method == "contrastive":
        seconds = math.nan if unknown else \
            _padded_tokens(train.lengths, draw_groups(train.labels, settings.contrastive_steps, settings.seed)) * cost.train
        stages.append(Stage("encoder on pairs of texts", settings.contrastive_steps, seconds))
    steps = total_steps(len(train), settings) if not unknown else settings.max_steps or 0
    passes = steps / max(1, steps_per_epoch(len(train), settings))
    evaluations = steps / settings.eval_every_steps if settings.eval_every_steps else math.ceil(passes)
    if unknown:
        seconds = scoring = math.nan
    elif config.uses_cached_features:  # every text encoded once; the head's own steps cost next to nothing
        seconds = _tokens(train) * cost.score
        scoring = sum(_tokens(split) for name, split in splits.items() if name != "train") * cost.score
    else:
        seconds = passes * _padded_epoch(train.lengths, settings) * cost.train
        scoring = (evaluations * _tokens(splits.get("validation")) + _tokens(splits.get("test"))) * cost.score
    name = "head on the frozen encoder's vectors" if config.model.freeze == "encoder" else "fine-tuning"
    return (*stages, Stage(name, steps, seconds), Stage(SCORING, 0, scoring))


def _padded_epoch(lengths: np.ndarray, settings: TrainConfig) -> int:
    """The padded tokens of one epoch's batches of rows of these lengths, cut as the loop cuts them."""
    return _padded_tokens(lengths, train_batches(lengths, settings.batch_size, settings.bucket_batches, settings.seed, 0))


def _padded_tokens(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    """The tokens `batches` of rows make once each is padded to its longest row."""
    return int(sum(len(rows) * padded_width(int(lengths[rows].max())) for rows in batches if len(rows)))


def _standard_seconds(config: RunConfig, splits: dict[str, Any], cost: TokenCost) -> float:
    """What the standard method would take on one cut of max_length tokens a text, at the run's batch and epochs."""
    cut = lambda split: _cut_tokens(split, config.model.max_length)  # noqa: E731
    settings = config.train  # the same batch and epochs: the rules choose them alike for both methods
    steps = total_steps(_texts(splits["train"]), settings)
    passes = steps / max(1, steps_per_epoch(_texts(splits["train"]), settings))
    scored = cut(splits.get("validation")) * math.ceil(passes) + cut(splits.get("test"))
    return passes * _padded_epoch(_cut_lengths(splits["train"], config.model.max_length), settings) * cost.train \
        + scored * cost.score


def _notes(user: RunConfig, plan: RunPlan, splits: dict[str, Any]) -> tuple[str, ...]:
    """What a user should know before the run starts: a cost far above the standard method's, windows that multiply
    the work, and an explicit setting that does not bound every stage."""
    notes, config = [], plan.config
    if plan.seconds is not None and plan.standard_seconds and plan.seconds > SLOWER_THAN_STANDARD * plan.standard_seconds:
        ways = "set train.method standard, or bound the encoder stage with train.contrastive_steps" \
            if config.train.method == "contrastive" else "bound it with train.epochs or train.max_steps"
        notes.append(f"this run is estimated at {_duration(plan.seconds)}, {plan.seconds / plan.standard_seconds:.0f}x the "
                     f"standard method's {_duration(plan.standard_seconds)}: {ways}")
    train = splits["train"]
    if config.model.window_stride and hasattr(train, "lengths"):
        work = _tokens(train) / max(1, _cut_tokens(train, config.model.max_length))
        if work > WINDOW_WORK:
            notes.append(f"windows multiply the training work {work:.1f}x ({plan.windows['train']:,} windows of "
                         f"{plan.texts['train']:,} texts): bound them with model.max_windows, or read each text's "
                         "head and tail with model.window_stride 0 model.keep_head 0.25")
    if config.train.method == "contrastive" and user.train.epochs is not None and user.train.contrastive_steps is None:
        notes.append(f"train.epochs {user.train.epochs} sets the head stage's passes; the encoder stage makes "
                     f"train.contrastive_steps {config.train.contrastive_steps} steps: set that field to bound it")
    return tuple(notes)


def measure_cost(model: torch.nn.Module, split: Any, context: InferenceContext) -> TokenCost | None:
    """Seconds a token costs here, timed on PROBE_TEXTS training texts: the encoder's forward and backward pass, and
    its forward pass alone; measured once a process for an encoder, device, precision and width (a property of the
    machine, not of the run). The model's weights, gradients and mode are left as they were."""
    if not isinstance(split, TokenizedSplit) or len(split) == 0:
        return None
    rows = np.arange(min(PROBE_TEXTS, len(split)))
    batch = {k: v.to(context.device) for k, v in PaddedBatches(split, context.pad_id)[rows].items() if k != "labels"}
    tokens = int(batch["attention_mask"].numel())
    key = (type(model).__name__, tuple((p.numel(), p.requires_grad) for p in model.parameters()), str(context.device),
           context.precision.name, tuple(batch["input_ids"].shape))
    if key not in _MEASURED:
        _MEASURED[key] = _measure(model, batch, context, tokens)
    return _MEASURED[key]


def _measure(model: torch.nn.Module, batch: dict[str, torch.Tensor], context: InferenceContext, tokens: int) -> TokenCost:
    was_training = model.training
    model.eval()
    try:
        train = _timed(lambda: _backward(model, batch, context), context.device)
        with torch.no_grad():
            score = _timed(lambda: _forward(model, batch, context), context.device)
    finally:
        model.train(was_training)
        for parameter in model.parameters():
            parameter.grad = None
    return TokenCost(train / tokens, score / tokens)


def _forward(model: torch.nn.Module, batch: dict[str, torch.Tensor], context: InferenceContext) -> torch.Tensor:
    with autocast(context.device, context.precision):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def _backward(model: torch.nn.Module, batch: dict[str, torch.Tensor], context: InferenceContext) -> None:
    logits = _forward(model, batch, context)
    if logits.requires_grad:
        logits.float().square().mean().backward()


def _timed(step: Any, device: torch.device, repeats: int = 2) -> float:
    """The fastest of `repeats` timed calls after one untimed call (a first call warms caches and kernels)."""
    step()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        wait_for_device(device)
        best = min(best, time.perf_counter() - start)
    return best


def save_plan(plan: RunPlan, run_dir: Path) -> None:
    write_json_atomic(Path(run_dir) / PLAN_FILE, plan.to_dict())


def read_plan(run_dir: Path) -> RunPlan | None:
    """The plan a run was started with (None for a run saved without one)."""
    path = Path(run_dir) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        stages = tuple(Stage(**stage) for stage in raw["stages"])
        fields = {k: raw[k] for k in ("texts", "windows", "classes", "parameters", "standard_seconds")}
        return RunPlan(build_config(raw["config"]), **fields, stages=stages, notes=tuple(raw.get("notes", ())),
                       texts_per_second=raw.get("texts_per_second"), encoder=tuple(raw.get("encoder", ())))
    except (ValueError, KeyError, TypeError) as error:
        raise BertfitError(f"{path}: not a readable run plan ({error}); delete it to resume without it") from None


def log_plan(plan: RunPlan, resumed: bool = False) -> None:
    for line in plan.lines():
        log.info("%s%s", "resuming " if resumed and line.startswith("plan:") else "", line)
    for note in plan.notes:
        log.warning("%s", note)


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "unknown time (streamed)"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
