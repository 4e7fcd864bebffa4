"""What a model card states beyond the evaluation: how the run's encoder was chosen and how fast it predicts
(RUN/plan.json), and what a static student loses against its teacher (results.json). Each is read from the run's
own files, so a card written again says the same."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from bertfit.meta import read_json


def plan_lines(run_dir: Path, run: str) -> list[str]:
    """How model.name auto chose the encoder, and its measured scoring speed (RUN/plan.json, where there is one);
    `run` is the run as the card's commands name it."""
    plan = read_json(run_dir / "plan.json") if (run_dir / "plan.json").is_file() else {}
    chosen = [f"- encoder: {plan['encoder'][0].strip().removeprefix('model: ')}"] if plan.get("encoder") else []
    return chosen + ([f"- prediction: about {plan['texts_per_second']:,.0f} texts/s with PyTorch where it trained; an "
                      f"export serves faster (`bertfit export {shlex.quote(run)} --target auto`)"]
                     if plan.get("texts_per_second") else [])


def static_limit(record: dict[str, Any] | None) -> list[str]:
    """A static student's cost: the validation accuracy it loses against its teacher (results.json's `static`)."""
    if not record:
        return []
    if "accuracy_loss_points" not in record:
        return [f"- A static student of `{record['teacher']}`; its accuracy against the teacher was not measured "
                "(no validation rows)."]
    beyond = " (beyond the distill.max_accuracy_loss bound)" if record["accuracy_loss_points"] > record["max_accuracy_loss"] \
        else ""
    return [f"- A static student of `{record['teacher']}`: validation accuracy {record['validation_accuracy']:.4f} against "
            f"the teacher's {record['teacher_validation_accuracy']:.4f} on {record['validation_rows']} rows, "
            f"{record['accuracy_loss_points']:.2f} points lost{beyond}."]
