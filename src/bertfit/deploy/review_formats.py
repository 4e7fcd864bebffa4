"""The review queues out to Label Studio or Argilla, and their annotations back into the review journal.

Label Studio: OUT is a JSON list of tasks in its import format ({"data": {"text", "bertfit_item", ...},
"predictions": [{"result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices":
[LABEL]}}]}]}), and OUT with .xml beside it the labeling config (a Text and a single Choices). Its JSON export
(tasks with annotations[].result[].value.choices) is read back: per task the latest annotation not cancelled.
Argilla (2.x): OUT is a folder as `Dataset.to_disk` writes it (records.json, .argilla/settings.json and
dataset.json) for `rg.Dataset.from_disk`; records.json (nested, or flattened as `records.to_list(flatten=True)`
writes it) is read back: per record the most common submitted response to the question `label`.
The pre-annotation is what the page pre-selects (the decision so far, else the given label or the model's guess).
Records carry the review's item ids, so nothing is matched by text.
"""

from __future__ import annotations

import json
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from bertfit.atomic import write_json_atomic, write_text_atomic
from bertfit.data.read import decode_file
from bertfit.deploy.review_state import DROP, QUEUES, ReviewState
from bertfit.errors import BertfitError

FORMATS = ("labelstudio", "argilla")
QUESTION, FIELD = "label", "text"  # the names of the choice question and of the text in both tools


def _note(item: dict[str, Any]) -> str:
    if item["queue"] == "audit":
        return f"audit, row {item['row']}: given {item['given']}" + (f", model suggests {item['suggested']}"
                                                                     if item.get("suggested") else "")
    return f"new text: the model guesses {item['suggested']}"


def _pre_annotations(state: ReviewState) -> list[tuple[dict[str, Any], str]]:
    """(item, the label to pre-select) for every item of both queues, audit first."""
    decided = {**state.decisions("audit"), **state.decisions("label")}
    return [(state.items[i], decided.get(i) or state.items[i]["prefill"]) for q in QUEUES for i in state.order[q]]


def export_review(state: ReviewState, fmt: str, out: Path, run_name: str) -> list[Path]:
    """Write the queues for `fmt` (labelstudio or argilla); the files written."""
    if fmt not in FORMATS:
        raise BertfitError(f"export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    choices = state.labels + [DROP]
    if fmt == "labelstudio":
        tasks = [{"data": {FIELD: item["text"], "note": _note(item), "bertfit_item": item["id"],
                           "bertfit_queue": item["queue"]},
                  "predictions": [{"model_version": f"bertfit {run_name}",
                                   "result": [{"from_name": QUESTION, "to_name": FIELD, "type": "choices",
                                               "value": {"choices": [label]}}]}]}
                 for item, label in _pre_annotations(state)]
        config = "\n".join(["<View>", '  <Header value="$note"/>', f'  <Text name="{FIELD}" value="${FIELD}"/>',
                            f'  <Choices name="{QUESTION}" toName="{FIELD}" choice="single" showInline="true">',
                            *(f'    <Choice value="{escape(label, quote=True)}"/>' for label in choices),
                            "  </Choices>", "</View>", ""])
        write_json_atomic(out, tasks)
        write_text_atomic(out.with_suffix(".xml"), config)
        return [out, out.with_suffix(".xml")]
    records = [{"id": item["id"], "fields": {FIELD: item["text"], "note": _note(item)},
                "metadata": {"queue": item["queue"]},
                "suggestions": {QUESTION: {"value": label, "score": None, "agent": f"bertfit {run_name}"}},
                "responses": {}, "vectors": {}, "status": "pending", "_server_id": None}
               for item, label in _pre_annotations(state)]
    write_json_atomic(out / "records.json", records)
    write_json_atomic(out / ".argilla" / "settings.json", _argilla_settings(choices))
    write_json_atomic(out / ".argilla" / "dataset.json", {
        "id": None, "inserted_at": None, "updated_at": None, "name": f"bertfit-review-{run_name}", "status": "draft",
        "guidelines": None, "allow_extra_metadata": False, "distribution": None, "workspace_id": None,
        "last_activity_at": None})
    return [out / "records.json", out / ".argilla" / "settings.json", out / ".argilla" / "dataset.json"]


def _argilla_settings(choices: list[str]) -> dict[str, Any]:
    """Settings.serialize() of a dataset with fields text and note, the label question and the queue metadata."""
    empty = {"id": None, "inserted_at": None, "updated_at": None, "dataset_id": None}
    field = [{**empty, "name": name, "settings": {"type": "text", "use_markdown": False}, "title": name,
              "required": name == FIELD, "description": None, "type": "text"} for name in (FIELD, "note")]
    question = {**empty, "name": QUESTION, "title": QUESTION, "description": None, "required": True,
                "type": "label_selection", "settings": {"type": "label_selection", "visible_options": None,
                                                        "options": [{"text": c, "value": c} for c in choices]}}
    metadata = {**empty, "name": "queue", "title": "queue", "visible_for_annotators": True,
                "settings": {"visible_for_annotators": True, "type": "terms", "values": list(QUEUES)}}
    return {"guidelines": "Pick the right label; DROP removes a training row (audit queue only).",
            "questions": [question], "fields": field, "vectors": [], "metadata": [metadata],
            "allow_extra_metadata": False, "distribution": {"strategy": "overlap", "min_submitted": 1}, "mapping": None}


def read_annotations(path: Path) -> list[tuple[str, str, str | None]]:
    """(where, item id, label) of every task or record in a Label Studio JSON export or an Argilla records file
    (or a folder holding records.json); label None where nobody annotated it."""
    path = Path(path)
    if path.is_dir():
        path = path / "records.json"
    if not path.is_file():
        raise BertfitError(f"import: file {path} not found")
    try:
        records = json.loads(decode_file(path))
    except json.JSONDecodeError as error:
        raise BertfitError(f"{path}: not JSON ({error}); give Label Studio's JSON export or Argilla's records") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BertfitError(f"{path}: expected a JSON list of tasks (Label Studio) or records (Argilla)")
    found = []
    for number, record in enumerate(records, start=1):
        if "data" in record:
            item, label = record["data"].get("bertfit_item"), _label_studio_choice(record)
            where = f"{path} task {number}" + (f" (id {record['id']})" if "id" in record else "")
        else:
            item, label = record.get("id"), _argilla_response(record)
            where = f"{path} record {number} (id {item})"
        if item is None:
            raise BertfitError(f"{where}: no bertfit item id (data.bertfit_item / id); import only files exported "
                               "with `bertfit review --export`")
        found.append((where, str(item), label))
    return found


def _label_studio_choice(task: dict[str, Any]) -> str | None:
    """The first choice of the latest annotation that was not cancelled (as Label Studio's converter picks it)."""
    kept = [a for a in task.get("annotations") or [] if not (a.get("was_cancelled") or a.get("skipped"))]
    for annotation in sorted(kept, key=lambda a: str(a.get("created_at") or ""), reverse=True):
        for result in annotation.get("result") or []:
            chosen = (result.get("value") or {}).get("choices")
            if result.get("from_name", QUESTION) == QUESTION and chosen:
                return str(chosen[0])
    return None


def _argilla_response(record: dict[str, Any]) -> str | None:
    """The most common submitted response to the label question (nested or flattened records)."""
    if isinstance(record.get("responses"), dict):
        answers = [r for r in record["responses"].get(QUESTION) or [] if r.get("status", "submitted") == "submitted"]
        values = [r.get("value") for r in answers]
    else:
        statuses = record.get(f"{QUESTION}.responses.status") or []
        values = [v for k, v in enumerate(record.get(f"{QUESTION}.responses") or [])
                  if k >= len(statuses) or statuses[k] == "submitted"]
    values = [str(v) for v in values if v is not None]
    return Counter(values).most_common(1)[0][0] if values else None


def import_annotations(state: ReviewState, path: Path) -> dict[str, int]:
    """Append the annotations of `path` to the journal as decisions, after checking every one (an unknown item or
    label stops the import before anything is written); counts of imported and unchanged decisions."""
    found, checked = read_annotations(path), []
    for where, item_id, label in found:
        item = state.items.get(item_id)
        if item is None:
            raise BertfitError(f"{where}: item {item_id!r} is not in this run's review; export again from this run")
        allowed = state.labels + ([DROP] if item["queue"] == "audit" else [])
        if label is not None and label not in allowed:
            raise BertfitError(f"{where}: label {label!r} is not one of {', '.join(allowed)}")
        if label is not None:
            checked.append((item["queue"], item_id, label))
    current = {**state.decisions("audit"), **state.decisions("label")}
    fresh = [(queue, item_id, label) for queue, item_id, label in checked if current.get(item_id) != label]
    for queue, item_id, label in fresh:
        state.decide(queue, item_id, label)
    return {"imported": len(fresh), "unchanged": len(checked) - len(fresh)}
