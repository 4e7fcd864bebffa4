"""What `bertfit review` keeps in RUN/review/: the two queues and every decision, so a crash, a closed tab or a
restart loses nothing and reopening continues where the reviewer stopped.

    queue.json       the items as first read (audit's flagged rows and conflicts, suggest's texts); items that
                     later audits or suggestion files add are appended, items already there never change
    decisions.jsonl  one JSON line per keystroke that decides, appended and fsynced before the page is told it is
                     saved: {"seq", "time", "queue", "item", "label"} (a label name, DROP, or null: skipped), or
                     {"seq", "time", "queue", "undo": seq} (that decision taken back)

A decision is the latest one not taken back; a line a crash cut short is dropped on the next start (its answer
never reached the page, so the page never showed it as saved).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from bertfit.atomic import check_confined, write_json_atomic
from bertfit.errors import BertfitError

log = logging.getLogger(__name__)

REVIEW_DIR, QUEUE_FILE, JOURNAL_FILE, LOCK_FILE = "review", "queue.json", "decisions.jsonl", ".lock"
QUEUES = ("audit", "label")  # audit: is the given label right? label: which label has this new text?
DROP = "DROP"  # an audit decision that removes the row from the training data (as `audit --relabel` reads it)


def item_record(queue: str, item_id: str, text: str, prefill: str, **details: Any) -> dict[str, Any]:
    """One queue item: its id, text, the label the page pre-selects, and what the page shows beside it
    (given, suggested, score, row, values, conflicts, probabilities, reason)."""
    return {"id": item_id, "queue": queue, "text": text, "prefill": prefill, **details}


class ReviewState:
    """The queues and the journal of one review folder; every decision is on disk before a method returns."""

    def __init__(self, folder: Path, labels: list[str], items: list[dict[str, Any]]):
        self.folder, self.labels = Path(folder), list(labels)
        self.items = {item["id"]: item for item in items}
        self.order = {queue: [item["id"] for item in items if item["queue"] == queue] for queue in QUEUES}
        self.journal = self.folder / JOURNAL_FILE
        self.active: list[dict[str, Any]] = []  # decisions not taken back, oldest first
        self.seq = 0
        self._replay()

    def _replay(self) -> None:
        if not self.journal.is_file():
            return
        content = self.journal.read_bytes()
        if content and not content.endswith(b"\n"):  # a write cut short by a crash: never acknowledged
            keep = content.rfind(b"\n") + 1
            log.warning("%s: dropped an incomplete last line (%d bytes) left by a crash", self.journal, len(content) - keep)
            with open(self.journal, "r+b") as file:
                file.truncate(keep)
            content = content[:keep]
        for line, raw in enumerate(content.decode("utf-8").splitlines(), start=1):
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                raise BertfitError(f"{self.journal} line {line}: not JSON; the journal was edited by hand: "
                                   "fix or remove that line") from None
            self._apply(record)

    def _apply(self, record: dict[str, Any]) -> None:
        self.seq = max(self.seq, int(record["seq"]))
        if "undo" in record:
            self.active = [r for r in self.active if r["seq"] != record["undo"]]
        elif record["item"] in self.items:
            self.active.append(record)

    def _append(self, record: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        record = {"seq": self.seq, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
        check_confined(self.journal)
        created = not self.journal.exists()
        with open(self.journal, "a", encoding="utf-8") as file:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
            file.flush()
            os.fsync(file.fileno())
        if created:
            _sync_folder(self.folder)
        self._apply(record)
        return record

    def item(self, queue: str, item_id: str) -> dict[str, Any]:
        self.check_queue(queue)
        if item_id not in self.order[queue]:
            raise BertfitError(f"item {item_id!r} is not in the {queue} queue")
        return self.items[item_id]

    def decide(self, queue: str, item_id: str, label: str | None) -> dict[str, Any]:
        """Record `label` (None: skip) for an item; a label must be one of the model's (or DROP, audit only)."""
        self.item(queue, item_id)
        allowed = self.labels + ([DROP] if queue == "audit" else [])
        if label is not None and label not in allowed:
            raise BertfitError(f"label {label!r} is not one of {', '.join(allowed)}")
        return self._append({"queue": queue, "item": item_id, "label": label})

    def undo(self, queue: str) -> str | None:
        """Take back the queue's latest decision; the item it was about, or None when there is nothing to undo."""
        self.check_queue(queue)
        last = next((r for r in reversed(self.active) if r["queue"] == queue), None)
        if last is None:
            return None
        self._append({"queue": queue, "undo": last["seq"]})
        return last["item"]

    def decisions(self, queue: str) -> dict[str, str | None]:
        """item id -> its current decision (a label, DROP, or None: skipped), for decided items only."""
        self.check_queue(queue)
        return {r["item"]: r["label"] for r in self.active if r["queue"] == queue}

    def labelled(self, queue: str) -> dict[str, str]:
        """item id -> label (or DROP) in queue order, skipped items left out."""
        chosen = self.decisions(queue)
        return {i: chosen[i] for i in self.order[queue] if chosen.get(i) is not None}

    def current(self, queue: str) -> str | None:
        """The item to show: the first never decided, else the first skipped, else None (the queue is done)."""
        chosen = self.decisions(queue)
        fresh = next((i for i in self.order[queue] if i not in chosen), None)
        return fresh or next((i for i in self.order[queue] if chosen[i] is None), None)

    def progress(self, queue: str) -> dict[str, int]:
        """total, decided, skipped, and changed: decisions other than the pre-selected label."""
        chosen = self.decisions(queue)
        decided = {i: label for i, label in chosen.items() if label is not None}
        return {"total": len(self.order[queue]), "decided": len(decided), "skipped": len(chosen) - len(decided),
                "changed": sum(label != self.items[i]["prefill"] for i, label in decided.items())}

    def can_undo(self, queue: str) -> bool:
        return any(r["queue"] == queue for r in self.active)

    def check_queue(self, queue: str) -> None:
        if queue not in QUEUES:
            raise BertfitError(f"queue: must be one of {', '.join(QUEUES)}, got {queue!r}")


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so a file just created in it survives a power cut (not possible on every system)."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def load_items(folder: Path, fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The saved queue with the items of `fresh` it lacks appended (saved atomically when anything was added)."""
    path = Path(folder) / QUEUE_FILE
    saved = json.loads(path.read_text(encoding="utf-8"))["items"] if path.is_file() else []
    known, added = {item["id"] for item in saved}, []
    for item in fresh:  # a text suggested twice is one item
        if item["id"] not in known:
            known.add(item["id"])
            added.append(item)
    if added or not path.is_file():
        write_json_atomic(path, {"items": saved + added})
        log.info("review queue %s: %d items (%d new)", path, len(saved) + len(added), len(added))
    return saved + added


@contextlib.contextmanager
def review_lock(folder: Path) -> Iterator[None]:
    """Hold RUN/review/.lock while a process writes decisions: two writers would interleave their journals.
    The lock is the kernel's (flock), so a killed process never leaves it behind."""
    folder = check_confined(Path(folder))
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BertfitError(f"{folder}: another `bertfit review` (or an import) is using this review; "
                               "close it first") from None
        yield
    finally:
        handle.close()
