"""Seeding and the random-generator states a checkpoint keeps for an exact resume (per rank)."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

from bertfit.runtime.distributed import Distributed

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator the training step touches, for an exact resume."""
    # numpy's state as plain numbers and a tensor: checkpoints hold no object that could run code on load
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy = (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian))
    state = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states(dist: Distributed) -> list[dict[str, Any]] | None:
    """Every rank's rng_state() in rank order on rank 0, None elsewhere (a collective: every rank calls it).
    Ranks draw different dropout masks, so an exact resume needs each rank's own generators back."""
    if not dist.enabled:
        return [rng_state()]
    states: list[Any] | None = [None] * dist.world_size if dist.is_main else None
    torch.distributed.gather_object(rng_state(), states, dst=0)
    return states


def restore_rng_states(states: list[dict[str, Any]], dist: Distributed, seed: int, step: int) -> None:
    """This rank's saved generators; when the world size changed, fresh ones per (seed, step, rank)."""
    if len(states) == dist.world_size:
        set_rng_state(states[dist.rank])
        return
    if dist.is_main:
        log.warning("checkpoint has random states of %d process(es), this run %d: reseeding from (seed, step, rank); "
                    "dropout will differ from an uninterrupted run", len(states), dist.world_size)
    seed_everything(mixed_seed(seed, step, dist.rank))


def mixed_seed(*parts: int) -> int:
    """One seed from several numbers, mixed (SeedSequence) so (5, 1) and (6, 0) do not share a seed as a sum would."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
