"""Where a contrastive step's time goes: forward (with the pair loss), backward, clipping, AdamW, by what trains.

    python bench/contrastive_step.py                    # SST-2, 8 rows a class, seed 0, embedded MiniLM-L6
    python bench/contrastive_step.py --threads 1 --variants all words

Each variant tunes a fresh copy of the embedded encoder for --steps steps of bertfit's own groups (8 texts, 4 of
each of 2 labels: training.contrastive.draw_groups and group_loss), the fused AdamW and the clipping of
tune_encoder, and times each phase; the first --warmup steps are not counted. Variants, by what stays frozen:
`all` (nothing: the encoder stage before session 14), `words` (the word-embedding matrix: bertfit now), `layer0`
(all embeddings and the first transformer layer: tried in session 14, not kept). Writes
bench/out/contrastive_step.json: milliseconds a step per phase, and the CPU's flags.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from few_shot import sample  # noqa: E402

from bertfit.config import load_config  # noqa: E402
from bertfit.data.batching import PaddedBatches, tokenize  # noqa: E402
from bertfit.data.splits import load_dataset  # noqa: E402
from bertfit.infer.engine import InferenceContext  # noqa: E402
from bertfit.model import TextClassifier, apply_freeze, count_parameters, load_encoder, load_tokenizer, resolve_model_name  # noqa: E402
from bertfit.runtime.cpu import cpu_features  # noqa: E402
from bertfit.runtime.device import choose_precision  # noqa: E402
from bertfit.training.contrastive import draw_groups, group_loss, make_tunable  # noqa: E402
from bertfit.training.defaults import contrastive_lr  # noqa: E402
from bertfit.training.optim import build_optimizer  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
PHASES = ("forward", "backward", "clip", "adamw")


def freeze(model: TextClassifier, variant: str) -> None:
    if variant == "all":
        model.encoder.requires_grad_(True)
    else:  # words: what tune_encoder trains
        make_tunable(model)
    if variant == "layer0":
        apply_freeze(model, "1")


def time_variant(variant: str, batches: PaddedBatches, labels: np.ndarray, args: argparse.Namespace) -> dict:
    device = torch.device("cpu")
    context = InferenceContext(device, choose_precision("fp32", device), batches.pad_id, 64)
    torch.manual_seed(args.seed)
    model = TextClassifier(load_encoder(resolve_model_name(args.model)), num_labels=len(np.unique(labels))).train()
    freeze(model, variant)
    optimizer = build_optimizer(model.encoder, contrastive_lr(count_parameters(model.encoder)[1]), 0.01, device)
    totals = dict.fromkeys(PHASES, 0.0)
    for step, group in enumerate(draw_groups(labels, args.warmup + args.steps, args.seed)):
        marks = [time.perf_counter()]
        loss = group_loss(model, batches, group, labels, context)
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
    parser.add_argument("--out", type=Path, default=OUT / "contrastive_step.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(load_config(None, ["--data.train", args.dataset]).data, seed=0)
    split = dataset.splits["train"]
    rows = sample(split.labels, args.per_class, args.seed)
    labels = np.asarray([split.labels[i] for i in rows])
    tokenizer = load_tokenizer(resolve_model_name(args.model))
    tokens = tokenize([split.texts[i] for i in rows], labels.tolist(), tokenizer, 128, cache_dir=None)
    batches = PaddedBatches(tokens, tokenizer.pad_token_id)
    results = {"command": " ".join(sys.argv), "cpu": cpu_features(), "threads": torch.get_num_threads(), "runs": []}
    for variant in args.variants:
        results["runs"].append(time_variant(variant, batches, labels, args))
        run = results["runs"][-1]
        print(variant, f"{run['trained_parameters']:,} parameters train", run["ms_per_step"], "step", run["step_ms"], "ms",
              flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
