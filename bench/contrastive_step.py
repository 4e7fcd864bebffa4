"""Where a contrastive step's time goes: forward (with the pair loss), backward, clipping, AdamW, by what trains.

    python bench/contrastive_step.py                    # SST-2, 8 rows a class, seed 0, embedded MiniLM-L6
    python bench/contrastive_step.py --threads 1 --variants all words

Each variant tunes a fresh copy of the embedded encoder for --steps steps of bertfit's own groups (8 texts, 4 of
each of 2 labels: training.contrastive.draw_groups and group_loss), the fused AdamW and the clipping of
tune_encoder, and times each phase; the first --warmup steps are not counted. Variants, by what stays frozen:
`all` (nothing), `words` (the word-embedding matrix: what bertfit's stage keeps frozen), `layer0` (all embeddings
and the first transformer layer). Writes
bench/out/contrastive_step.json: milliseconds a step per phase, and the CPU's flags.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

import common
import numpy as np

if TYPE_CHECKING:
    from bertfit.data.batching import PaddedBatches
    from bertfit.model import TextClassifier

PHASES = ("forward", "backward", "clip", "adamw")


def freeze(model: TextClassifier, variant: str) -> None:
    from bertfit.model import apply_freeze
    from bertfit.training.contrastive import make_tunable

    if variant == "all":
        model.encoder.requires_grad_(True)
    else:  # words: what tune_encoder trains
        make_tunable(model)
    if variant == "layer0":
        apply_freeze(model, "1")


def time_variant(variant: str, batches: PaddedBatches, labels: np.ndarray, args: argparse.Namespace) -> dict:
    import torch

    from bertfit.infer.engine import InferenceContext
    from bertfit.model import TextClassifier, count_parameters, load_encoder, resolve_model_name
    from bertfit.runtime.device import choose_precision
    from bertfit.training.contrastive import draw_groups, group_loss
    from bertfit.training.defaults import contrastive_lr
    from bertfit.training.optim import build_optimizer

    device = torch.device("cpu")
    context = InferenceContext(device, choose_precision("fp32", device), batches.pad_id, 64)
    torch.manual_seed(args.seed)
    model = TextClassifier(load_encoder(resolve_model_name(args.model)), num_labels=len(np.unique(labels))).train()
    freeze(model, variant)
    optimizer = build_optimizer(model.encoder, contrastive_lr(count_parameters(model.encoder)[1]), 0.01, device)
    totals = dict.fromkeys(PHASES, 0.0)
    for step, group in enumerate(draw_groups(labels, args.warmup + args.steps, args.seed)):
        marks = [time.perf_counter()]
        loss = group_loss(model, batches[group], context)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.encoder.parameters(), 1.0)
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if step >= args.warmup:
            for phase, start, end in zip(PHASES, marks, marks[1:]):
                totals[phase] += end - start
    trained, _ = count_parameters(model.encoder)
    milliseconds = {phase: round(1000 * seconds / args.steps, 1) for phase, seconds in totals.items()}
    return {"variant": variant, "trained_parameters": trained, "ms_per_step": milliseconds,
            "step_ms": round(sum(milliseconds.values()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="sst2")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--variants", nargs="+", default=["all", "words", "layer0"], choices=["all", "words", "layer0"])
    parser.add_argument("--out", type=Path, default=common.OUT / "contrastive_step.json")
    args = parser.parse_args()
    import torch

    from bertfit.data.batching import PaddedBatches, tokenize
    from bertfit.data.windows import TextCut
    from bertfit.model import load_tokenizer, resolve_model_name

    common.limit_threads(args.threads)
    split = common.preset(args.dataset).splits["train"]
    rows = common.sample(split.labels, args.per_class, args.seed)
    labels = np.asarray([split.labels[i] for i in rows])
    tokenizer = load_tokenizer(resolve_model_name(args.model))
    tokens = tokenize([split.texts[i] for i in rows], labels.tolist(), tokenizer, TextCut(128), cache_dir=None)
    batches = PaddedBatches(tokens, tokenizer.pad_token_id)
    results = {**common.provenance(), "threads": torch.get_num_threads(), "runs": []}
    for variant in args.variants:
        results["runs"].append(time_variant(variant, batches, labels, args))
        run = results["runs"][-1]
        print(variant, f"{run['trained_parameters']:,} parameters train", run["ms_per_step"], "step", run["step_ms"], "ms",
              flush=True)
        common.write_json(args.out, results)


if __name__ == "__main__":
    main()
