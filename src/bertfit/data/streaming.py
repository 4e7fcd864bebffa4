"""Training data too large for memory: the training file read lazily, chunk by chunk (data.streaming).

The file is read in chunks of `data.shuffle_buffer_rows` rows (rounded up to whole batches). Each
chunk is checked row by row (the in-memory reader's checks), label-mapped, tokenised, then cut into
length-bucketed batches exactly as an in-memory split (`batching.train_batches` on the chunk), so
only one chunk of rows and tokens is held at a time. Chunks come in file order; rows are shuffled
within a chunk only, so a file sorted by label or length should be shuffled once beforehand.

What a lazy reader cannot know is found by one counting pass at start-up (rows are read and checked,
not tokenised): the row count, which sets the number of steps for the learning-rate schedule, and
any bad row, which then fails before the first step rather than hours in. The label set is not
scanned for: `data.label_names` is required (a second full pass over a file too large for memory
would only save typing the names). Validation and test splits are read into memory as usual.

A batch's position in the epoch is a pure function of (seed, epoch, chunk) (each chunk shuffles with
its own `mixed_seed(seed, chunk)`), and every chunk holds
a whole number of batches, so resuming at `LoopState.batches_done` skips whole chunks unread-for-
tokens and the first batches of one chunk: the resumed run sees the batches it would have seen.
"""

from __future__ import annotations

import logging
import math
import random
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from bertfit.config import RunConfig
from bertfit.data.batching import PaddedBatches, tokenize, train_batches
from bertfit.data.labels import LabelMap, map_labels, multi_hot
from bertfit.data.read import check_rows, read_split
from bertfit.data.records import read_records
from bertfit.data.splits import Split, TextDataset, shuffled
from bertfit.data.windows import TextCut
from bertfit.errors import BertfitError
from bertfit.runtime.distributed import Distributed, shard_rows
from bertfit.runtime.seed import mixed_seed

log = logging.getLogger(__name__)

def load_streamed(config: RunConfig, tokenizer: Any) -> tuple[TextDataset, "StreamedSplit"]:
    """The validation/test splits in memory (as `TextDataset`) and the training stream, counted and checked."""
    data, labels = config.data, LabelMap(tuple(config.data.label_names))
    splits = {}
    for name in ("validation", "test"):
        spec = getattr(data, name)
        if spec is not None:
            raw = read_split(spec, name, data)
            ids = multi_hot(raw, labels, data.label_separator) if data.multi_label else map_labels(raw, labels)
            split = Split(name, raw.source, raw.texts, ids)
            if data.max_eval_rows is not None:
                split = shuffled(split, random.Random(config.train.seed)).head(data.max_eval_rows)
            splits[name] = split
    stream = StreamedSplit(Path(data.train).expanduser(), config, labels, tokenizer)
    return TextDataset(splits, labels), stream


class StreamedSplit:
    """The training split as a stream of chunks; holds one chunk at a time (`max_rows_held` says so)."""

    def __init__(self, path: Path, config: RunConfig, labels: LabelMap, tokenizer: Any):
        self.path, self.data, self.train, self.model = path, config.data, config.train, config.model
        self.label_map, self.tokenizer = labels, tokenizer
        batch_size = config.train.batch_size
        self.chunk_rows = math.ceil(config.data.shuffle_buffer_rows / batch_size) * batch_size
        self.max_rows_held = 0
        # What loss_function reads: no labels up front (class weights are refused for streams).
        self.labels = np.zeros((0, len(labels)) if config.data.multi_label else 0, dtype=np.int64)
        self.rows = sum(len(texts) for texts, _ in self.chunks())  # the counting (and checking) pass
        log.info("streaming %s: %d rows in chunks of %d", path, self.rows, self.chunk_rows)

    def __len__(self) -> int:
        return self.rows

    @property
    def documents(self) -> int:
        return self.rows  # sliding windows are refused with streaming: one row per text

    def chunks(self) -> Iterator[tuple[list[str], list]]:
        """(texts, label ids) of each chunk in file order, every row checked; at most max_train_rows rows."""
        records = islice(read_records(self.path, self.data), self.data.max_train_rows)
        first_row = 1
        while chunk := list(islice(records, self.chunk_rows)):
            self.max_rows_held = max(self.max_rows_held, len(chunk))
            columns = {key: [record.get(key) for record in chunk] for key in dict.fromkeys(k for r in chunk for k in r)}
            raw = check_rows(columns, str(self.path), self.data.text_columns, self.data.label_column,
                             self.data.label_names, first_row)
            ids = multi_hot(raw, self.label_map, self.data.label_separator) if self.data.multi_label \
                else map_labels(raw, self.label_map)
            del chunk, columns
            yield raw.texts, ids
            first_row += len(raw.texts)

    def batch_sizes(self, epoch: int) -> list[int]:
        """Global batch sizes of an epoch, without reading the file: only the last chunk is not full."""
        full_chunks, last_rows = divmod(self.rows, self.chunk_rows)
        sizes = [self.train.batch_size] * (full_chunks * self.chunk_rows // self.train.batch_size)
        if last_rows:  # sizes do not depend on lengths, so zeros stand in for the unread chunk
            batches = train_batches(np.zeros(last_rows, np.int64), self.train.batch_size, self.train.bucket_batches,
                                    mixed_seed(self.train.seed, full_chunks), epoch)
            sizes += [len(rows) for rows in batches]
        return sizes

    def batches(self, epoch: int, start_batch: int, dist: Distributed, pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's share of each padded batch of the epoch, from batch `start_batch` on."""
        done, rows_read = 0, 0
        for chunk, (texts, labels) in enumerate(self.chunks()):
            rows_read += len(texts)
            chunk_batches = math.ceil(len(texts) / self.train.batch_size)
            if done + chunk_batches <= start_batch:  # already trained on: skip without tokenising
                done += chunk_batches
                continue
            # No token cache: a cache of the whole stream is what does not fit.
            tokens = tokenize(texts, labels, self.tokenizer, TextCut.of_model(self.model, "train"))
            padded = PaddedBatches(tokens, pad_id)
            for rows in train_batches(tokens.lengths, self.train.batch_size, self.train.bucket_batches,
                                      mixed_seed(self.train.seed, chunk), epoch):
                if done >= start_batch:
                    yield padded[shard_rows(rows, dist)]
                done += 1
        if rows_read != self.rows:
            raise BertfitError(f"{self.path}: {rows_read} rows now, {self.rows} when training started; "
                               "the file changed during training")


class StreamedBatches(torch.utils.data.IterableDataset):
    """An epoch of a StreamedSplit for a DataLoader: reading and tokenising run in its worker, if any."""

    def __init__(self, stream: StreamedSplit, epoch: int, start_batch: int, dist: Distributed, pad_id: int):
        super().__init__()
        self.stream, self.epoch, self.start_batch, self.dist, self.pad_id = stream, epoch, start_batch, dist, pad_id

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.stream.batches(self.epoch, self.start_batch, self.dist, self.pad_id)


def stream_loader(stream: StreamedSplit, epoch: int, start_batch: int, dist: Distributed, pad_id: int,
                  num_workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """At most one worker: each worker of an IterableDataset replays the whole stream, so two would duplicate rows."""
    return torch.utils.data.DataLoader(StreamedBatches(stream, epoch, start_batch, dist, pad_id), batch_size=None,
                                       num_workers=min(num_workers, 1), pin_memory=pin_memory,
                                       generator=torch.Generator().manual_seed(0))
