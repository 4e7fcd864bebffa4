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
(bench/RESULTS.md, session 13: the same macro-F1 as 16 random pairs a step, in under half the time from 16
rows a class up). Labels take turns in seeded rounds, and each label's texts come in a seeded cycle, so every
text trains about equally often and a run repeats exactly.

The stage is training like the loop's and keeps the loop's promise: it checkpoints every
train.checkpoint_every_steps steps (and at its end, when it made that many), and Ctrl-C stops it with a
checkpoint; `bertfit train --resume` continues it at the step it stopped, to the weights a run that never
stopped reaches. A checkpoint of the loop (taken after the stage) holds the tuned encoder itself.

The word-embedding matrix stays as pretrained. It is half of MiniLM-L6's weights, and a few labelled texts move
only the rows of their own words, so it cost a step its gradient, its clipping and its AdamW update for
nothing measurable (bench/RESULTS.md, session 14: macro-F1 means within 0.2 on 7 cells of 5 seeds, a step 15%
faster). Freezing the first transformer layer as well cost TREC 0.8 points: that was not kept.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bertfit.config import RunConfig
from bertfit.data.batching import PaddedBatches, TokenizedSplit
from bertfit.infer.engine import InferenceContext
from bertfit.model import TextClassifier, apply_freeze
from bertfit.runtime.device import autocast, make_scaler, wait_for_device
from bertfit.runtime.distributed import Distributed, broadcast_parameters
from bertfit.runtime.seed import gather_rng_states, restore_rng_states
from bertfit.training.checkpoint import load_checkpoint, save_checkpoint
from bertfit.training.interrupt import StopRequest
from bertfit.training.loop import stop_agreed
from bertfit.training.optim import build_optimizer, build_scheduler

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


def group_loss(model: TextClassifier, batches: PaddedBatches, group: np.ndarray, labels: np.ndarray,
               context: InferenceContext) -> torch.Tensor:
    """The mean squared error between the cosine similarity of every pair in `group` and 1 (one label) or 0 (two
    labels), the two kinds weighing half each: each text is encoded once, however many pairs it is in."""
    batch = batches[group]
    with autocast(context.device, context.precision):
        vectors = model.encode(batch["input_ids"].to(context.device), batch["attention_mask"].to(context.device)).float()
    vectors = F.normalize(vectors, dim=-1)
    group_labels = torch.from_numpy(np.asarray(labels)[group]).to(context.device)
    same = group_labels[:, None] == group_labels[None, :]
    errors = (vectors @ vectors.T - same.float()) ** 2
    pairs = torch.ones_like(same).triu(diagonal=1)  # each pair once, no text with itself
    kinds = [errors[pairs & same], errors[pairs & ~same]]
    return torch.stack([kind.mean() for kind in kinds if kind.numel()]).mean()


def make_tunable(model: TextClassifier) -> None:
    """What the encoder stage trains: the whole encoder but its word-embedding matrix (see the module docstring)."""
    model.encoder.requires_grad_(True)
    model.encoder.get_input_embeddings().requires_grad_(False)


def tune_encoder(model: TextClassifier, split: TokenizedSplit, config: RunConfig, context: InferenceContext,
                 run_dir: Path | None = None, resume: bool = False, dist: Distributed = Distributed()) -> EncoderStage:
    """Tune `model.encoder` on pairs from `split`, then freeze it (unless Ctrl-C stopped the stage).

    With `run_dir` the stage checkpoints there (see the module's text); `resume` continues from its checkpoint.
    """
    groups = draw_groups(split.labels, config.train.contrastive_steps, config.train.seed)
    saved = load_checkpoint(run_dir, model) if resume else {}
    if resume and STAGE not in saved:
        apply_freeze(model, "encoder")
        log.info("contrastive: tuned encoder restored from %s", run_dir)
        return EncoderStage(0.0, loop_checkpoint=True)
    make_tunable(model)
    optimizer = build_optimizer(model.encoder, config.train.contrastive_lr, config.train.weight_decay, context.device)
    scheduler = build_scheduler(optimizer, WARMUP_RATIO, len(groups))
    scaler, batches = make_scaler(context.device, context.precision), PaddedBatches(split, context.pad_id)
    parts = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    step, seconds, losses = _restore(saved, parts, dist, config.train.seed, context.device) if saved else (0, 0.0, [])
    if saved:
        log.info("contrastive: resuming the encoder stage of %s at step %d of %d", run_dir, step, len(groups))
    model.train()
    progress = tqdm(total=len(groups), initial=step, unit="step", dynamic_ncols=True, desc="contrastive",
                    disable=not (config.train.progress and dist.is_main))
    stop, every = StopRequest(), config.train.checkpoint_every_steps
    with stop.installed():
        while step < len(groups):
            began = time.perf_counter()
            losses.append(_step(model, batches, groups[step], split.labels, context, parts, config.train.max_grad_norm))
            step, seconds = step + 1, seconds + time.perf_counter() - began
            progress.update(1)
            stopping = stop_agreed(dist, context.device, stop.requested, step)
            if run_dir is not None and (stopping or (every and (step % every == 0 or step == len(groups) >= every))):
                seconds += wait_for_device(context.device)  # the queued steps are training time, the saving is not
                _save(run_dir, model, {**parts, "step": step, "seconds": seconds, "losses": torch.stack(losses)}, dist)
            if stopping:
                progress.close()
                log.warning("contrastive: stopped at step %d of %d with a checkpoint", step, len(groups))
                return EncoderStage(seconds, interrupted=True)
    progress.close()
    broadcast_parameters(model, dist)  # ranks drew different dropout masks: all keep rank 0's encoder
    apply_freeze(model, "encoder")
    seconds += wait_for_device(context.device)
    head, tail = (torch.stack(losses[:10]).mean().item(), torch.stack(losses[-10:]).mean().item()) if losses else (0, 0)
    pairs = sum(len(group) * (len(group) - 1) // 2 for group in groups)
    log.info("contrastive: encoder tuned on %d pairs of %d texts in %d steps (%.1f s), pair loss %.3f -> %.3f; "
             "now training the head on its frozen vectors", pairs, len(split), len(losses), seconds, head, tail)
    return EncoderStage(seconds)


def _step(model: TextClassifier, batches: PaddedBatches, group: np.ndarray, labels: np.ndarray,
          context: InferenceContext, parts: dict[str, Any], max_grad_norm: float) -> torch.Tensor:
    """One optimizer step on one group's pairs; its loss, left on the device."""
    optimizer, scheduler, scaler = parts["optimizer"], parts["scheduler"], parts["scaler"]
    loss = group_loss(model, batches, group, labels, context)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.encoder.parameters(), max_grad_norm or math.inf)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _restore(saved: dict[str, Any], parts: dict[str, Any], dist: Distributed, seed: int, device: torch.device
             ) -> tuple[int, float, list[torch.Tensor]]:
    """The stage's optimizer, schedule, scaler and random streams from a checkpoint taken in it; its step, seconds
    and losses so far."""
    stage = saved[STAGE]
    for name, part in parts.items():
        part.load_state_dict(stage[name])
    restore_rng_states(saved["rng_ranks"], dist, seed, stage["step"])
    return stage["step"], stage["seconds"], list(stage["losses"].to(device))


def _save(run_dir: Path, model: TextClassifier, stage: dict[str, Any], dist: Distributed) -> None:
    """A checkpoint of the stage (rank 0 writes it; every rank sends its random streams, as in the loop)."""
    rng_ranks = gather_rng_states(dist)
    if dist.is_main:
        state = {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in stage.items()}
        save_checkpoint(run_dir, model, {STAGE: state, "rng": rng_ranks[0], "rng_ranks": rng_ranks})
