"""`model.name auto`: the encoder (and method) with the best expected accuracy whose training fits train.time_budget.

The rule, in the order a choice is tried:
- few labelled rows (the few-shot range of training.defaults: under 512 rows and under 100 a class), the installed
  registry encoders from the largest down, each with the method the defaults choose (contrastive there), then
  the same encoders with the standard method: with 8-64 rows a class a larger body is worth 10-17 points
  (the SetFit paper's MPNet against MiniLM-L6) for minutes of training, and pairs of texts are worth more than
  the body's size;
- many rows, the embedded MiniLM-L6 alone: with enough labels a larger body gains little, for about 5x the
  training and the serving time.
The first candidate whose estimate fits the budget is chosen; where none fits, the fastest, with a note. Estimates
come from each candidate's own plan (training.plan: a probe of that encoder on this machine times the planned
steps). What was chosen and why, the alternatives, and how to override are lines of the run's plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from bertfit.config import EMBEDDED_MODEL, RunConfig, override
from bertfit.data.splits import TextDataset
from bertfit.registry.catalog import CATALOG, installed_path
from bertfit.training import defaults

BY_SIZE = ("mpnet-base", "minilm-l6")  # registry encoders auto may choose, the largest (expected best) first
SLOW_TO_SERVE = 200  # texts a second (PyTorch, here) under which the plan suggests a distilled student


@dataclass(frozen=True)
class Estimate:
    """What a candidate's plan says: its train seconds and the texts a second its encoder scores here."""

    seconds: float
    texts_per_second: float


@dataclass(frozen=True)
class Candidate:
    encoder: str  # a registry name (EMBEDDED_MODEL for the embedded MiniLM-L6)
    method: str
    estimate: Estimate | None = None  # None: not installed


@dataclass(frozen=True)
class EncoderChoice:
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    budget: float  # seconds
    why: str

    def lines(self) -> list[str]:
        """The choice as the plan states it: what, why, the alternatives and how to override."""
        chosen = self.chosen
        lines = [f"  model: auto chose {_label(chosen)} ({self.why}); train.time_budget {_minutes(self.budget)}"]
        missing = set()
        for other in self.candidates:
            if other == chosen or other.encoder in missing:
                continue
            if other.estimate is None:
                missing.add(other.encoder)
                lines.append(f"  not installed: {other.encoder} ({_size(other.encoder)}), expected to score higher "
                             f"with few labels: bertfit models install {other.encoder}")
            else:
                fits = "fits" if other.estimate.seconds <= self.budget else "over the budget"
                lines.append(f"  alternative: {_label(other)} ({fits})")
        lines.append("  override: --model.name NAME (and --train.method), or --train.time_budget 30m")
        if chosen.estimate and chosen.estimate.texts_per_second < SLOW_TO_SERVE:
            students = "--student static" if chosen.encoder == EMBEDDED_MODEL else "--student minilm-l6 or --student static"
            lines.append(f"  serving: about {chosen.estimate.texts_per_second:.0f} texts/s here on PyTorch; for faster "
                         f"serving, distil it after training: bertfit distill RUN {students}")
        return lines


def candidates(config: RunConfig, dataset: TextDataset) -> list[Candidate]:
    """The candidates in the order the rule tries them (see the module's text)."""
    train = dataset.splits["train"]
    documents = len(train) + len(dataset.splits.get("validation", ()))
    facts = defaults.DataFacts(documents, documents, len(dataset.labels), 0)
    method = defaults.choose_method(config, facts)
    if not few_rows(facts):
        return [Candidate(EMBEDDED_MODEL, method)]
    first = [Candidate(_registry_name(name), method) for name in BY_SIZE]
    then = [Candidate(_registry_name(name), "standard") for name in BY_SIZE] \
        if method == "contrastive" and config.train.method == "auto" else []
    return first + then


def few_rows(facts: defaults.DataFacts) -> bool:
    """The few-shot range of the defaults, whatever the method: where the body's size pays most."""
    return facts.documents is not None and facts.documents < defaults.CONTRASTIVE_BELOW_ROWS \
        and facts.documents / facts.classes < defaults.CONTRASTIVE_BELOW_ROWS_PER_CLASS


def choose(config: RunConfig, dataset: TextDataset, estimate: Callable[[Candidate], Estimate],
           installed: Callable[[str], bool] | None = None) -> EncoderChoice:
    """The candidate the rule picks; `estimate` plans one candidate (a probe of its encoder here, or a test's fake)."""
    installed = installed or is_installed
    budget = config.time_budget_seconds
    listed = candidates(config, dataset)
    if len(listed) == 1:  # many rows: the one candidate's own plan gives its estimate
        return EncoderChoice(listed[0], tuple(listed), budget, _many_rows_reason(dataset))
    tried = [Candidate(c.encoder, c.method, estimate(c)) if installed(c.encoder) else c for c in listed]
    timed = [c for c in tried if c.estimate is not None]
    if not timed:  # not even the embedded model: loading it names the package to install
        embedded = next(c for c in listed if c.encoder == EMBEDDED_MODEL)
        return EncoderChoice(embedded, tuple(tried), budget, "no registry encoder is installed")
    fitting = [c for c in timed if c.estimate.seconds <= budget]
    if fitting:
        chosen = fitting[0]
        why = "the largest installed encoder whose training fits the budget, for few labelled rows" \
            if chosen.method != "standard" or chosen == timed[0] else \
            "the contrastive method would not fit the budget; the standard method does"
    else:
        chosen = min(timed, key=lambda c: c.estimate.seconds)
        why = "no candidate fits the budget: the fastest"
    return EncoderChoice(chosen, tuple(tried), budget, why)


def with_candidate(config: RunConfig, candidate: Candidate) -> RunConfig:
    """`config` training `candidate`: its encoder, and its method where the rule would choose another."""
    changes = {"model.name": candidate.encoder}
    if config.train.method == "auto" and candidate.method == "standard":
        changes["train.method"] = "standard"
    return override(config, changes)


def over_budget(choice: EncoderChoice, seconds: float | None) -> str | None:
    """The note for a chosen run estimated beyond the budget (None when it fits or is not estimated)."""
    if seconds is None or seconds <= choice.budget:
        return None
    return (f"the run is estimated at {_minutes(seconds)} of training, over train.time_budget {_minutes(choice.budget)}, "
            "with the fastest candidate: bound it with train.epochs, train.max_steps or data.max_train_rows, or raise the budget")


def is_installed(name: str) -> bool:
    return installed_path(CATALOG["minilm-l6" if name == EMBEDDED_MODEL else name]) is not None


def _registry_name(name: str) -> str:
    return EMBEDDED_MODEL if name == "minilm-l6" else name


def _many_rows_reason(dataset: TextDataset) -> str:
    rows = len(dataset.splits["train"])
    return (f"{rows:,} training rows, {rows / max(1, len(dataset.labels)):,.0f} a class: with this many labels a larger "
            "encoder gains little for about 5x the training and serving time")


def _label(candidate: Candidate) -> str:
    name = "minilm-l6 (embedded)" if candidate.encoder == EMBEDDED_MODEL else candidate.encoder
    if candidate.estimate is None:
        return f"{name}, {candidate.method}"
    return (f"{name}, {candidate.method} method, about {_minutes(candidate.estimate.seconds)} of training, "
            f"{candidate.estimate.texts_per_second:,.0f} texts/s")


def _size(name: str) -> str:
    return f"{CATALOG['minilm-l6' if name == EMBEDDED_MODEL else name].parameters:.0f}M parameters"


def _minutes(seconds: float) -> str:
    if math.isnan(seconds):
        return "unknown"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
