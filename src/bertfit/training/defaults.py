"""Defaults that fit the data: training settings the user left unset, chosen from the data size and the model.

An unset field (None, or train.method auto) is filled in here once the data is read and the model built;
the run's config.yaml records the filled-in values, so the run repeats and resumes exactly, and the log
states them. A value the user set always wins. Each rule is a principle, not a fit to one data set; the
measurements behind them are in docs/decisions.md.

- batch size: 32, but at most 1/8 of the training rows (an epoch is at least ~8 steps), at least 4;
- epochs: 3, raised until the run makes at least 150 optimizer steps (at most 30), since a freshly initialised
  head barely moves in a handful of steps;
- learning rate: 1e-4 below 40M encoder parameters, 5e-5 below 150M, 2e-5 above, since smaller encoders take
  larger steps; scaled by sqrt(batch / 16) below batches of 16 (noisier gradients); 1e-2 for a head trained alone
  on fixed vectors (a contrastive run's second stage, model.freeze encoder), which is a logistic regression;
- warm-up: 6% of the steps, up to 10% so that a short run still warms up over about 10 steps;
- method: contrastive below 100 training rows per class and below 512 rows in all (single-label), since pairs
  of texts multiply what few labels say (see training.contrastive); standard otherwise. 512 bounds the encoder
  stage's cost (under 10,000 steps, ~30 minutes single-threaded for MiniLM-L6); it is not a measured crossing;
- the encoder stage's steps: one (every pair among 8 texts of 2 labels, 28) for each 28 pairs SetFit's default
  draws from the rows (every pair of two labels once, as many of one label), at least 2.5 a row so that each
  text trains in about 20 steps; the count grows with the square of the texts, and a long text read in windows
  counts once (its windows share its steps, or windows would square the cost);
- the encoder stage's learning rate: SetFit's 2e-5, twice that below 40M parameters, since smaller encoders take
  larger steps as above; larger encoders keep the rate SetFit was tuned with;
- long texts: when most training texts exceed model.max_length (and head+tail was not asked for), read them whole
  in half-overlapping windows, at most model.max_windows a text in training; the log states the cost;
- validation: a share of train is held out when the data is split (data.splits.validation_share), except in a
  few-shot run (contrastive, chosen as above, no validation data given, nothing set), where every labelled row
  trains as in SetFit, since a share of a few rows buys a score within +-30 points; such a run is scored on
  data.test. A search trial always holds rows out, since trials are compared on them;
- weights kept: the best evaluation's on train.metric with 100 validation rows or more (or early stopping), else
  the last step's, as a contrastive head always is, since on n rows a score's 95% interval is about
  +-98/sqrt(n) points and the best of ten evaluations on a dozen rows is the luckiest, not the best.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertfit.config import RunConfig, override
from bertfit.config_rules import contrastive_clashes
from bertfit.data.inspection import token_lengths
from bertfit.data.splits import TextDataset
from bertfit.data.windows import spread_windows, window_starts
from bertfit.metrics import MIN_VALIDATION_ROWS
from bertfit.training.contrastive import PAIRS_PER_STEP

log = logging.getLogger(__name__)

MAX_BATCH, MIN_BATCH, ROWS_PER_BATCH = 32, 4, 8
MIN_STEPS, BASE_EPOCHS, MAX_EPOCHS = 150, 3, 30
CONTRASTIVE_BELOW_ROWS_PER_CLASS, CONTRASTIVE_BELOW_ROWS = 100, 512
HEAD_LR = 1e-2
SMALL_ENCODER = 40e6  # parameters: below it an encoder takes larger steps
CONTRASTIVE_LR, SMALL_CONTRASTIVE_LR = 2e-5, 4e-5  # the encoder stage's: SetFit's body rate, twice it for a small encoder
CONTRASTIVE_STEPS_PER_ROW = 2.5  # 8 texts a step: each text in >= ~20 steps
LENGTH_SAMPLE = 2000  # training texts measured to decide on windows


@dataclass(frozen=True)
class DataFacts:
    """What the defaults are chosen from."""

    rows: int | None  # training rows (windows, when windows are on); None: streamed, not counted up front
    documents: int | None  # training texts
    classes: int
    parameters: int  # the encoder's
    validation_rows: int = 0  # held-out texts the run is evaluated on
    label_rows: tuple[int, ...] = ()  # training texts of each label (single-label data read up front)


def choose_method(config: RunConfig, facts: DataFacts) -> str:
    """standard or contrastive: train.method if set, else contrastive for single-label data with few rows (a class, in all)."""
    if config.train.method != "auto":
        return config.train.method
    few = facts.documents is not None and facts.documents < CONTRASTIVE_BELOW_ROWS \
        and facts.documents / facts.classes < CONTRASTIVE_BELOW_ROWS_PER_CLASS
    return "contrastive" if few and not contrastive_clashes(config) else "standard"


def contrastive_steps(label_rows: tuple[int, ...]) -> int:
    """The encoder stage's steps: the pairs SetFit's default draws from these rows (every pair of two labels once, and
    as many pairs of one label), 28 a step; at least 2.5 steps a row, so that each text trains in about 20 steps."""
    rows = sum(label_rows)
    different = (rows * rows - sum(n * n for n in label_rows)) // 2
    same = sum(n * (n - 1) // 2 for n in label_rows)
    return max(1, math.ceil(CONTRASTIVE_STEPS_PER_ROW * rows), math.ceil(2 * max(different, same) / PAIRS_PER_STEP))


def contrastive_lr(parameters: int) -> float:
    """The encoder stage's peak learning rate (see the module's text)."""
    return SMALL_CONTRASTIVE_LR if parameters < SMALL_ENCODER else CONTRASTIVE_LR


def weights_kept(config: RunConfig, method: str, validation_rows: int) -> str:
    """best or last: train.keep if set, else last where the best evaluation is noise (see the module's text)."""
    if config.train.keep != "auto":
        return config.train.keep
    if config.train.early_stopping_patience:
        return "best"  # stopping early follows the best evaluation, and keeps it
    return "last" if method == "contrastive" or validation_rows < MIN_VALIDATION_ROWS else "best"


def holds_out_nothing(config: RunConfig, dataset: TextDataset) -> bool:
    """Whether the validation rows split off train by default should train too: a few-shot (contrastive) run."""
    if not dataset.validation_fraction or config.data.validation_fraction is not None:
        return False  # a validation split of its own (given, or a preset's), or a share the user set
    documents = len(dataset.splits["train"]) + len(dataset.splits["validation"])
    return choose_method(config, DataFacts(documents, documents, len(dataset.labels), 0)) == "contrastive"


def every_row_trains(config: RunConfig, dataset: TextDataset) -> RunConfig:
    """The config of a few-shot run that holds out no validation rows (holds_out_nothing)."""
    held_out = len(dataset.splits["validation"])
    rows = len(dataset.splits["train"]) + held_out
    log.info("few-shot: all %d labelled rows train the model (data.validation_fraction 0); the %d a default share would "
             "hold out would score it within +-%.0f points (95%%): score the run on data.test, or set "
             "data.validation_fraction to hold rows out", rows, held_out, 196 * math.sqrt(0.25 / max(1, held_out)))
    return override(config, {"data.validation_fraction": 0.0})


def batch_size(rows: int | None) -> int:
    if rows is None:
        return MAX_BATCH
    return max(MIN_BATCH, min(MAX_BATCH, 2 ** int(math.log2(max(1, rows // ROWS_PER_BATCH)))))


def epochs(rows: int | None, batch: int, accumulation: int) -> int:
    if rows is None:
        return BASE_EPOCHS
    steps_per_epoch = math.ceil(math.ceil(rows / batch) / accumulation)
    return min(MAX_EPOCHS, max(BASE_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch)))


def learning_rate(parameters: int, batch: int, head_only: bool) -> float:
    if head_only:
        return HEAD_LR
    base = 1e-4 if parameters < SMALL_ENCODER else 5e-5 if parameters < 150e6 else 2e-5
    return float(f"{base * min(1.0, math.sqrt(batch / 16)):.2g}")


def warmup_ratio(total_steps: int | None) -> float:
    if total_steps is None:
        return 0.06
    return round(max(0.06, min(0.1, 10 / max(1, total_steps))), 3)


def fill_defaults(config: RunConfig, facts: DataFacts, validation_fraction: float | None) -> RunConfig:
    """`config` with every unset field filled in from `facts` (logged); explicit values are kept."""
    train, chosen = config.train, {}
    method = choose_method(config, facts)
    if train.method == "auto":
        chosen["train.method"] = method
    if method == "contrastive":
        if config.model.freeze != "encoder":  # the second stage trains the head on the tuned, frozen encoder
            chosen["model.freeze"] = "encoder"
        if train.contrastive_steps is None:
            # Callers that know no label's rows (tests) get an even split, not one label of every row.
            even = (math.ceil((facts.documents or facts.rows or 1) / facts.classes),) * facts.classes
            steps = contrastive_steps(facts.label_rows or even)
            chosen["train.contrastive_steps"] = min(steps, train.max_steps) if train.max_steps else steps  # bounds every stage
        if train.contrastive_lr is None:
            chosen["train.contrastive_lr"] = contrastive_lr(facts.parameters)
    if train.keep == "auto":
        chosen["train.keep"] = weights_kept(config, method, facts.validation_rows)
    if config.data.validation_fraction is None and validation_fraction is not None:
        chosen["data.validation_fraction"] = validation_fraction
    batch = train.batch_size or chosen.setdefault("train.batch_size", batch_size(facts.rows))
    count = train.epochs or chosen.setdefault("train.epochs", epochs(facts.rows, batch, train.grad_accum_steps))
    if train.lr is None:
        # A frozen encoder (a contrastive run's second stage freezes it above) leaves a head alone on fixed vectors.
        head_only = chosen.get("model.freeze", config.model.freeze) == "encoder"  # (LoRA refuses freeze encoder)
        chosen["train.lr"] = learning_rate(facts.parameters, batch, head_only)
    if train.warmup_ratio is None:
        steps = None if facts.rows is None else math.ceil(math.ceil(facts.rows / batch) / train.grad_accum_steps) * count
        chosen["train.warmup_ratio"] = warmup_ratio(steps)
    if chosen:
        log.info("settings chosen from the data (%s training rows, %d classes, %.1fM-parameter encoder): %s; "
                 "set any of them to override", "streamed" if facts.rows is None else f"{facts.rows:,}", facts.classes,
                 facts.parameters / 1e6, ", ".join(f"{k} {_show(v)}" for k, v in chosen.items()))
    return override(config, chosen)


def choose_windows(config: RunConfig, texts: list[str], tokenizer: Any) -> RunConfig:
    """model.window_stride, if unset: half-overlapping windows when most training texts exceed max_length, else 0."""
    model, stride = config.model, 0
    if texts and model.keep_head >= 1 and not config.data.streaming:
        rng = np.random.default_rng(config.train.seed)
        sample = [texts[i] for i in sorted(rng.permutation(len(texts))[:LENGTH_SAMPLE])]
        lengths = token_lengths(sample, tokenizer)
        if np.mean(lengths > model.max_length) > 0.5:
            stride = (model.max_length - 2) // 2
            budget, cap = model.max_length - 2, model.max_windows
            windows = [len(spread_windows(len(window_starts(max(0, n - 2), budget, stride)), cap)) for n in lengths]
            log.info("long texts: %.0f%% of training texts exceed model.max_length %d (median %d tokens): reading them "
                     "whole in windows (model.window_stride %d, at most model.max_windows %d a text in training), %.1f "
                     "windows a text: about %.1fx the training time of truncating them; set model.window_stride 0 to "
                     "truncate", 100 * np.mean(lengths > model.max_length), model.max_length, np.median(lengths), stride,
                     cap, np.mean(windows), np.mean(windows))
    return override(config, {"model.window_stride": stride})


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
