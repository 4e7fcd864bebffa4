"""One optimizer step and the batches steps read: the session a step touches, what it learns from, and the step itself.

Every stage of a run is trained by the one loop (training.loop.Trainer) through these: fine-tuning and the head read
batches of labelled rows, the contrastive encoder stage reads groups of texts whose pairs it learns from. A stage is
its `Steps` (how many, and the batches of each epoch) and its session's `batch_loss`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from bertfit.config import TrainConfig
from bertfit.data.batching import FeatureSplit, PaddedBatches, TokenizedSplit, loader, train_batches
from bertfit.data.streaming import StreamedSplit, stream_loader
from bertfit.infer.engine import InferenceContext
from bertfit.runtime.device import Precision, autocast
from bertfit.runtime.distributed import Distributed, all_reduce_sum, shard_rows

Batch = dict[str, torch.Tensor]
EpochBatches = Callable[[int, int], tuple[list[int], Iterator[Batch]]]  # (epoch, first batch) -> sizes, batches


def classification_loss(session: "Session", batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of a batch of labelled rows, summed over them, and the model's logits (tokens or cached features)."""
    inputs = {k: v.to(session.device, non_blocking=True) for k, v in batch.items() if k not in ("labels", "rows")}
    with autocast(session.device, session.precision):
        logits = session.model(**inputs)
    # Labels copied once, asynchronously: a blocking copy would wait for the GPU every step.
    labels = batch["labels"].to(session.device, non_blocking=True)
    return session.loss_fn(logits.float(), labels), logits


@dataclass
class Session:
    """Everything a training step touches."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None  # summed over the batch
    context: InferenceContext  # device, evaluation precision, pad id; its batch size is the evaluation batch size
    max_grad_norm: float
    dist: Distributed = Distributed()  # under torchrun: this rank's share of each batch, gradients summed
    train_precision: Precision | None = None  # the training steps' autocast, when not the context's
    # A batch's summed loss and its logits (None where the loss reads no labels' logits, as the pairs' does).
    batch_loss: Callable[["Session", Batch], tuple[torch.Tensor, torch.Tensor | None]] = classification_loss
    replicated: bool = False  # every rank steps on the same whole batches, gradients kept apart (rank 0's weights win)

    @property
    def precision(self) -> Precision:
        return self.train_precision or self.context.precision

    @property
    def device(self) -> torch.device:
        return self.context.device


def train_step(session: Session, micro_batches: list[Batch], total: int | None = None,
               correct: torch.Tensor | None = None) -> torch.Tensor:
    """One optimizer step over several micro-batches; returns the mean loss per sample (on device).

    Each micro-batch's summed loss is divided by the samples of the whole step (`total`, over all
    ranks), so accumulating 4 batches of 1, or 2 ranks with 2 each, give the gradient of one batch of 4.
    `correct`, if given, is a device counter that gains the number of right predictions (single-label
    only, this rank's rows), read back only at evaluations.
    """
    model = session.model
    total = total or sum(len(batch["labels"]) for batch in micro_batches)
    step_loss = torch.zeros((), device=session.device)
    for batch in micro_batches:
        if len(batch["labels"]) == 0:
            continue  # a global batch smaller than the world leaves some ranks without rows
        summed, logits = session.batch_loss(session, batch)
        loss = summed / total
        session.scaler.scale(loss).backward()
        step_loss += loss.detach()
        labels = batch["labels"]
        if correct is not None and logits is not None and labels.ndim == 1:
            correct += (logits.detach().argmax(-1) == labels.to(session.device, non_blocking=True)).sum()
    if session.dist.enabled and not session.replicated:
        all_reduce_sum([p for p in model.parameters() if p.requires_grad], step_loss)
    if session.max_grad_norm > 0:
        session.scaler.unscale_(session.optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], session.max_grad_norm)
    session.scaler.step(session.optimizer)
    session.scaler.update()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    return step_loss


@dataclass(frozen=True)
class Steps:
    """What a stage trains on: its optimizer steps in all, and each epoch's batches from a given batch on."""

    name: str  # shown on the progress bar
    total: int
    epoch: EpochBatches
    evaluates: bool = True  # the loop evaluates at the end of each epoch (or every train.eval_every_steps)

    @classmethod
    def over_split(cls, session: Session, train: TokenizedSplit | FeatureSplit | StreamedSplit,
                   config: TrainConfig) -> "Steps":
        """Batches of labelled rows, train.epochs passes (or train.max_steps steps)."""
        return cls("train", total_steps(len(train), config),
                   lambda epoch, start: epoch_batches(session, train, config, epoch, start))

    @classmethod
    def over_groups(cls, split: TokenizedSplit, groups: list[np.ndarray], pad_id: int) -> "Steps":
        """One pass over `groups` of texts, a group a step (the contrastive encoder stage)."""
        batches = PaddedBatches(split, pad_id)
        return cls("contrastive", len(groups),
                   lambda epoch, start: ([len(g) for g in groups], (batches[g] for g in groups[start:])), evaluates=False)


def steps_per_epoch(rows: int, config: TrainConfig) -> int:
    return math.ceil(math.ceil(rows / config.batch_size) / config.grad_accum_steps)


def total_steps(rows: int, config: TrainConfig) -> int:
    """Optimizer steps of the whole run: train.max_steps when set (a probe run), else train.epochs of them."""
    return config.max_steps or steps_per_epoch(rows, config) * config.epochs


def epoch_batches(session: Session, train: TokenizedSplit | FeatureSplit | StreamedSplit, config: TrainConfig,
                  epoch: int, start_batch: int) -> tuple[list[int], Iterator[Batch]]:
    """The epoch's global batch sizes, and this rank's share of each batch from `start_batch` on."""
    pin_memory, pad_id = session.device.type == "cuda", session.context.pad_id
    if isinstance(train, StreamedSplit):
        stream = stream_loader(train, epoch, start_batch, session.dist, pad_id, config.num_workers, pin_memory)
        return train.batch_sizes(epoch), iter(stream)
    batches = train_batches(train.lengths, config.batch_size, config.bucket_batches, config.seed, epoch)
    shards = [shard_rows(rows, session.dist) for rows in batches[start_batch:]]
    return [len(rows) for rows in batches], iter(loader(train, shards, pad_id, config.num_workers, pin_memory))
