"""The contrastive method's first stage (SetFit-style): tune the encoder on pairs of texts, then freeze it.

With few labelled texts a fresh head on a pretrained encoder learns from a handful of steps. Pairs multiply what the
labels say: n texts give ~n^2 pairs, each "same label" or "different labels". The encoder is tuned so that the
cosine similarity of two texts' pooled vectors moves towards 1 for a pair of one label and towards 0 for two labels
(SetFit's CosineSimilarityLoss, on mean-pooled vectors), at the rate train.contrastive_lr (training.defaults chooses
it by the encoder's size); the ordinary loop then trains the head on the tuned, frozen encoder's vectors (cached
once, see training.features), so evaluation, checkpoints, resume, export and serving are those of any run: the saved
model is a plain encoder + head.

A step encodes a group of texts, 4 of each of 2 labels, and learns from every pair among them: 12 of one
label and 16 of two, each kind weighing half of the loss (SetFit balances the kinds by repeating the rarer).
Encoding is the cost of a step, so 8 texts make 28 pairs where SetFit's 16-pair steps encode up to 32
(docs/decisions.md). Labels take turns in seeded rounds, and each label's texts come in a seeded cycle, so every
text trains about equally often and a run repeats exactly.

The stage runs in the one training loop (training.loop.Trainer: its own steps and pair loss, the loop's progress,
Ctrl-C, checkpoints and resume): it checkpoints every train.checkpoint_every_steps steps (and at its end, when it
made that many), and Ctrl-C stops it with a checkpoint; `bertfit train --resume` continues it at the step it
stopped, to the weights a run that never stopped reaches. A checkpoint of the head's stage holds the tuned encoder.

The word-embedding matrix stays as pretrained: it is half of MiniLM-L6's weights and a few labelled texts move
only the rows of their own words, so training it costs every step for nothing measurable (docs/decisions.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bertfit.config import RunConfig
from bertfit.data.batching import TokenizedSplit
from bertfit.infer.engine import InferenceContext
from bertfit.model import TextClassifier, apply_freeze
from bertfit.runtime.device import autocast, make_scaler
from bertfit.runtime.distributed import Distributed, broadcast_parameters
from bertfit.training.checkpoint import load_checkpoint
from bertfit.training.loop import LoopState, Trainer
from bertfit.training.optim import build_optimizer, build_scheduler
from bertfit.training.steps import Session, Steps
from bertfit.training.writer import restore_session, save_session

log = logging.getLogger(__name__)

GROUP_LABELS, GROUP_TEXTS_PER_LABEL = 2, 4  # a step's group: 8 texts
PAIRS_PER_STEP = math.comb(GROUP_LABELS * GROUP_TEXTS_PER_LABEL, 2)  # 28: every pair among a group's texts
WARMUP_RATIO = 0.1
STAGE = "contrastive"  # the key of the stage's own state in a checkpoint taken during it


@dataclass(frozen=True)
class EncoderStage:
    """What the encoder stage did: its seconds (across resumes), whether Ctrl-C stopped it, and whether it resumed from
    the loop's checkpoint (the stage had finished: the loop resumes from that checkpoint too)."""

    seconds: float
    interrupted: bool = False
    loop_checkpoint: bool = False


def draw_groups(labels: np.ndarray, steps: int, seed: int) -> list[np.ndarray]:
    """Each step's row indices (sorted): GROUP_TEXTS_PER_LABEL rows (all of them, when fewer) of each of GROUP_LABELS
    labels. The labels take turns in seeded rounds (each label in a step equally often) and each label's rows come in a
    seeded cycle (each row equally often within its label)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, len(labels), steps])
    classes = np.unique(labels).tolist()
    members = {c: np.flatnonzero(labels == c) for c in classes}
    queued: dict[int, list[int]] = {c: [] for c in classes}
    turns: list[int] = []
    groups = []
    for _ in range(steps):
        chosen: list[int] = []
        while len(chosen) < min(GROUP_LABELS, len(classes)):
            waiting = [c for c in turns if c not in chosen]
            if not waiting:  # the round is over: the next one, in a new order
                turns += rng.permutation(classes).tolist()
                continue
            chosen.append(waiting[0])
            turns.remove(waiting[0])
        group = set()
        for c in chosen:
            for _ in range(min(GROUP_TEXTS_PER_LABEL, len(members[c]))):
                queued[c] = queued[c] or rng.permutation(members[c]).tolist()
                group.add(queued[c].pop())
        groups.append(np.array(sorted(group)))
    return groups


def group_loss(model: TextClassifier, batch: dict[str, torch.Tensor], context: InferenceContext) -> torch.Tensor:
    """The mean squared error between the cosine similarity of every pair in a group's `batch` and 1 (one label) or 0
    (two labels), the two kinds weighing half each: each text is encoded once, however many pairs it is in."""
    with autocast(context.device, context.precision):
        vectors = model.encode(batch["input_ids"].to(context.device), batch["attention_mask"].to(context.device)).float()
    vectors = F.normalize(vectors, dim=-1)
    group_labels = batch["labels"].to(context.device)
    same = group_labels[:, None] == group_labels[None, :]
    errors = (vectors @ vectors.T - same.float()) ** 2
    pairs = torch.ones_like(same).triu(diagonal=1)  # each pair once, no text with itself
    kinds = [errors[pairs & same], errors[pairs & ~same]]
    return torch.stack([kind.mean() for kind in kinds if kind.numel()]).mean()


def _pairs_loss(session: Session, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
    """A step's loss as the loop sums it: the group's pair loss once for each of its texts (the loop divides by them)."""
    context = dataclasses.replace(session.context, precision=session.precision)
    return group_loss(session.model, batch, context) * len(batch["labels"]), None


def make_tunable(model: TextClassifier) -> None:
    """What the encoder stage trains: the whole encoder but its word-embedding matrix (see the module docstring)."""
    model.encoder.requires_grad_(True)
    model.encoder.get_input_embeddings().requires_grad_(False)


def tune_encoder(model: TextClassifier, split: TokenizedSplit, config: RunConfig, context: InferenceContext,
                 run_dir: Path | None = None, resume: bool = False, dist: Distributed = Distributed()) -> EncoderStage:
    """Tune `model.encoder` on pairs from `split` in the loop (training.loop), then freeze it (unless Ctrl-C stopped
    the stage). With `run_dir` the stage checkpoints there (see the module's text); `resume` continues from its
    checkpoint."""
    saved = load_checkpoint(run_dir, model) if resume else {}
    if resume and STAGE not in saved:
        apply_freeze(model, "encoder")
        log.info("contrastive: tuned encoder restored from %s", run_dir)
        return EncoderStage(0.0, loop_checkpoint=True)
    make_tunable(model)
    groups = draw_groups(split.labels, config.train.contrastive_steps, config.train.seed)
    session = _session(model, config, context, dist, len(groups))
    state = restore_session(run_dir, session, config.train.seed, saved, STAGE) if saved else LoopState()
    if saved:
        log.info("contrastive: resuming the encoder stage of %s at step %d of %d", run_dir, state.step, len(groups))
    hooks = _StageHooks(run_dir, session, len(groups), config.train.checkpoint_every_steps)
    state = Trainer(session, Steps.over_groups(split, groups, context.pad_id), None, (), config.train, hooks).fit(state)
    if state.interrupted:
        log.warning("contrastive: stopped at step %d of %d with a checkpoint", state.step, len(groups))
        return EncoderStage(state.train_seconds, interrupted=True)
    broadcast_parameters(model, dist)  # ranks drew different dropout masks: all keep rank 0's encoder
    apply_freeze(model, "encoder")
    pairs = sum(len(group) * (len(group) - 1) // 2 for group in groups)
    log.info("contrastive: encoder tuned on %d pairs of %d texts in %d steps (%.1f s), pair loss %.3f -> %.3f; "
             "now training the head on its frozen vectors", pairs, len(split), state.step, state.train_seconds,
             *hooks.first_and_last_loss())
    return EncoderStage(state.train_seconds)


def _session(model: TextClassifier, config: RunConfig, context: InferenceContext, dist: Distributed,
             steps: int) -> Session:
    """The stage's own optimizer over the encoder at train.contrastive_lr, its schedule and its pair loss; every rank
    steps on the same groups (rank 0's encoder is kept)."""
    optimizer = build_optimizer(model.encoder, config.train.contrastive_lr, config.train.weight_decay, context.device)
    scheduler = build_scheduler(optimizer, WARMUP_RATIO, steps)
    return Session(model, optimizer, scheduler, make_scaler(context.device, context.precision), None, context,
                   config.train.max_grad_norm, dist, batch_loss=_pairs_loss, replicated=True)


class _StageHooks:
    """What the loop's stage leaves: checkpoints under the stage's key (rank 0 writes them), and its logged losses."""

    def __init__(self, run_dir: Path | None, session: Session, steps: int, checkpoint_every_steps: int):
        self.run_dir, self.session, self.losses = run_dir, session, []
        # A stage shorter than train.checkpoint_every_steps is not saved at its end: the loop's checkpoint follows soon.
        self.saves_end = 0 < checkpoint_every_steps <= steps
        self.steps = steps

    def on_eval(self, state: LoopState, record: dict[str, Any], improved: bool) -> None: ...

    def on_checkpoint(self, state: LoopState, with_model: bool) -> None:
        ended = state.step == self.steps and not state.interrupted
        if self.run_dir is not None and (self.saves_end or not ended):
            save_session(self.run_dir, self.session, state, STAGE)

    def on_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.losses.append(scalars["train/loss"])

    def first_and_last_loss(self) -> tuple[float, float]:
        return (self.losses[0], self.losses[-1]) if self.losses else (0.0, 0.0)
