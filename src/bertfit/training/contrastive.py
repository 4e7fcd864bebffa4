"""The contrastive method's first stage (SetFit-style): tune the encoder on pairs of texts, then freeze it.

With few labelled texts a fresh head on a pretrained encoder learns from a handful of steps. Pairs
multiply what the labels say: n texts give ~n^2 pairs, each "same label" or "different labels". The
encoder is tuned so that the cosine similarity of two texts' pooled vectors moves towards 1 for a pair
of one label and towards 0 for two labels (SetFit's CosineSimilarityLoss, on mean-pooled vectors); the
ordinary loop then trains the head on the tuned, frozen encoder's vectors (cached once, see
training.features), so evaluation, checkpoints, resume, export and serving are those of any run: the
saved model is a plain encoder + head. Pairs come from a seed, alternating same/different, every text
an anchor in turn, so a run repeats exactly; a resumed run takes the tuned encoder from its checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bertfit.config import RunConfig
from bertfit.data.batching import PaddedBatches, TokenizedSplit
from bertfit.infer.engine import InferenceContext
from bertfit.model import TextClassifier, apply_freeze
from bertfit.runtime.device import autocast, make_scaler
from bertfit.runtime.distributed import Distributed, broadcast_parameters
from bertfit.training.checkpoint import load_checkpoint
from bertfit.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

PAIR_BATCH = 16  # pairs a step (32 texts), SetFit's default
ENCODER_LR = 2e-5  # SetFit's body learning rate
WARMUP_RATIO = 0.1


def draw_pairs(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """(count, 3) int rows (first, second, 1 if they share a label else 0): every row an anchor in turn
    (in a seeded order), its partners drawn at random, same-label and different-label pairs alternating."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, len(labels), count])
    same = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    other = {c: np.flatnonzero(labels != c) for c in same}
    anchors = np.concatenate([rng.permutation(len(labels)) for _ in range(math.ceil(count / len(labels)))])[:count]
    pairs = np.zeros((count, 3), dtype=np.int64)
    for i, anchor in enumerate(anchors):
        positive = i % 2 == 0
        pool = same[labels[anchor]] if positive else other[labels[anchor]]
        if positive and len(pool) > 1:
            pool = pool[pool != anchor]  # a text paired with itself teaches nothing
        pairs[i] = (anchor, rng.choice(pool), int(positive))
    return pairs


def pair_cosines(model: TextClassifier, batches: PaddedBatches, pairs: np.ndarray, context: InferenceContext) -> torch.Tensor:
    """The cosine similarity of each pair's pooled vectors. Each text is encoded once, however many of the pairs it
    is in: with few rows a step's 32 places hold about half as many distinct texts (SST-2 at 8-16 rows a class
    trained 14-37% faster, bench/RESULTS.md)."""
    texts, places = np.unique(pairs[:, :2].ravel(), return_inverse=True)
    batch = batches[texts]
    with autocast(context.device, context.precision):
        vectors = model.encode(batch["input_ids"].to(context.device), batch["attention_mask"].to(context.device)).float()
    places = torch.from_numpy(places.reshape(-1, 2)).to(context.device)
    return F.cosine_similarity(vectors[places[:, 0]], vectors[places[:, 1]])


def tune_encoder(model: TextClassifier, split: TokenizedSplit, config: RunConfig, context: InferenceContext,
                 resume: Path | None, dist: Distributed = Distributed()) -> float:
    """Tune `model.encoder` on pairs from `split`, then freeze it; returns the seconds it took.

    Resuming, the tuned encoder comes from the run's checkpoint (it does not change after this stage).
    """
    if resume is not None:
        load_checkpoint(resume, model)
        log.info("contrastive: tuned encoder restored from %s", resume)
        return 0.0
    started, device = time.perf_counter(), context.device
    pairs = draw_pairs(split.labels, config.train.contrastive_pairs, config.train.seed)
    model.encoder.requires_grad_(True)
    optimizer = build_optimizer(model.encoder, ENCODER_LR, config.train.weight_decay, device)
    scheduler = build_scheduler(optimizer, WARMUP_RATIO, math.ceil(len(pairs) / PAIR_BATCH))
    scaler, batches, losses = make_scaler(device, context.precision), PaddedBatches(split, context.pad_id), []
    model.train()
    for start in range(0, len(pairs), PAIR_BATCH):
        chunk = pairs[start:start + PAIR_BATCH]
        target = torch.from_numpy(chunk[:, 2]).float().to(device)
        loss = F.mse_loss(pair_cosines(model, batches, chunk, context), target)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.encoder.parameters(), config.train.max_grad_norm or math.inf)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    broadcast_parameters(model, dist)  # ranks drew different dropout masks: all keep rank 0's encoder
    apply_freeze(model, "encoder")
    seconds = time.perf_counter() - started
    head, tail = (torch.stack(losses[:10]).mean().item(), torch.stack(losses[-10:]).mean().item()) if losses else (0, 0)
    log.info("contrastive: encoder tuned on %d pairs of %d texts in %d steps (%.1f s), pair loss %.3f -> %.3f; "
             "now training the head on its frozen vectors", len(pairs), len(split), len(losses), seconds, head, tail)
    return seconds
