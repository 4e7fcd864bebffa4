"""Prediction for files larger than memory: read, predict and write in chunks, resumable, one shard of many.

`predict_file(predictor, job)` reads `job.source` (CSV/TSV/JSONL/Parquet) `job.chunk_rows` rows at a time,
predicts each chunk with the Predictor (its backend choice) and writes it as a Parquet part file, atomically,
into the folder `<out>.parts` beside the output, with a small progress record. When every chunk is done the
parts are joined into `out` (Parquet, TSV or JSONL by its extension, CSV otherwise) and the folder goes. A
crash or Ctrl-C leaves the finished parts: `resume=True` reads past them without predicting, so no row is
lost or written twice. Shard i of N predicts the chunks whose number mod N is i (chunk k holds rows
k*chunk_rows+1 .. (k+1)*chunk_rows): N jobs with the same chunk_rows cover every row once between them.
Only one chunk of rows is held at a time (`ChunkReader.max_rows_held` says so).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

from bertfit.atomic import atomic_file, write_json_atomic
from bertfit.config import DataConfig
from bertfit.data.presets import Columns
from bertfit.data.records import read_records
from bertfit.data.tables import join_text_columns
from bertfit.errors import BertfitError
from bertfit.infer.predictor import Predictor

log = logging.getLogger(__name__)

PARTS_SUFFIX = ".parts"  # <out>.parts: the finished chunks of an unfinished prediction
PROGRESS_FILE = "progress.json"
ROW_COLUMN = "row"  # the id column when the input names none: each row's number in the file, from 1
STREAMED_FORMATS = ("csv", "tsv", "jsonl", "parquet")
OUTPUT_FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".tsv": "tsv"}  # any other extension: CSV


@dataclass(frozen=True)
class BulkJob:
    """What to predict and where: the same job (same file, chunk_rows, shard, columns) is what `resume` continues."""

    source: Path
    out: Path
    text_columns: tuple[str, ...]
    id_column: str | None = None  # carried into the output; None: the row number, as column "row"
    keep: tuple[str, ...] = ()  # further input columns carried into the output
    with_text: bool = True  # write the joined text too (as the in-memory predict does)
    chunk_rows: int = 10_000
    shard: tuple[int, int] = (0, 1)  # (i, N): chunks whose number mod N is i

    def __post_init__(self) -> None:
        if isinstance(self.chunk_rows, bool) or not isinstance(self.chunk_rows, int) or self.chunk_rows < 1:
            raise BertfitError(f"chunk_rows: must be an integer >= 1, got {self.chunk_rows!r}")
        index, count = self.shard
        if not (count >= 1 and 0 <= index < count):
            raise BertfitError(f"shard: {index}/{count} is not a shard; give i/N with 0 <= i < N, e.g. 0/4")

    def check_paths(self) -> None:
        """Refuse, before any prediction, an input that cannot be read in chunks or an output that cannot be written."""
        if not Path(self.source).is_file():
            raise BertfitError(f"file: {self.source} not found")
        if DataConfig().file_format(self.source) not in STREAMED_FORMATS:
            raise BertfitError(f"file: {self.source} is not CSV, TSV, JSONL or Parquet (by its extension); a JSON "
                               "document cannot be read in chunks: write it as JSONL, one object a line")
        if Path(self.out).is_dir():
            raise BertfitError(f"out: {self.out} is a folder; give a file name such as {Path(self.out) / 'predictions.parquet'}")
        if not Path(self.out).parent.is_dir():
            raise BertfitError(f"out: folder {Path(self.out).parent} does not exist; create it first or choose another path")

    @property
    def parts(self) -> Path:
        return self.out.with_name(self.out.name + PARTS_SUFFIX)

    @property
    def id_name(self) -> str:
        return self.id_column or ROW_COLUMN

    def mine(self, chunk: int) -> bool:
        return chunk % self.shard[1] == self.shard[0]


@dataclass
class BulkResult:
    """What a run of `predict_file` did: rows and chunks predicted now, chunks found done, and the most rows held."""

    out: Path
    rows: int = 0
    chunks: int = 0
    resumed_chunks: int = 0
    max_rows_held: int = 0
    backend: str = ""
    output_rows: int = 0


def parse_shard(text: str) -> tuple[int, int]:
    """'i/N' as (i, N)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise BertfitError(f"shard: {text!r} is not i/N (e.g. 0/4 for the first of four jobs)") from None
    return index, count


class ChunkReader:
    """The chunks of a file in order, as (chunk number, first row number, columns or None when skipped)."""

    def __init__(self, path: Path, chunk_rows: int):
        self.path, self.chunk_rows = path, chunk_rows
        self.max_rows_held = 0

    def chunks(self, wanted: Any) -> Iterator[tuple[int, int, Columns | None]]:
        """Chunks for which `wanted(number)` is true come with their columns; others are only counted past."""
        records = read_records(self.path, DataConfig())
        number, first_row = 0, 1
        while True:
            if not wanted(number):
                rows = sum(1 for _ in islice(records, self.chunk_rows))
                if not rows:
                    return
                yield number, first_row, None
            else:
                chunk = list(islice(records, self.chunk_rows))
                if not chunk:
                    return
                rows = len(chunk)
                self.max_rows_held = max(self.max_rows_held, rows)
                names = dict.fromkeys(key for record in chunk for key in record)
                columns = {name: [record.get(name) for record in chunk] for name in names}
                del chunk
                yield number, first_row, columns
            number, first_row = number + 1, first_row + rows


def predict_file(predictor: Predictor, job: BulkJob, resume: bool = False) -> BulkResult:
    """Predict `job.source` into `job.out` chunk by chunk (see the module's docstring); returns what was done."""
    job.check_paths()
    identity = _identity(predictor, job)
    done = _open_parts(job, identity, resume)
    result = BulkResult(job.out, resumed_chunks=len(done), backend=predictor.backend_name)
    reader = ChunkReader(job.source, job.chunk_rows)
    for number, first_row, columns in reader.chunks(lambda n: job.mine(n) and n not in done):
        if columns is None:
            continue
        table = predict_chunk(predictor, job, columns, first_row)
        with atomic_file(_part_path(job, number), "wb") as file:
            _write_parquet(table, file)
        result.rows, result.chunks = result.rows + table.num_rows, result.chunks + 1
        result.max_rows_held = reader.max_rows_held
        write_json_atomic(job.parts / PROGRESS_FILE, {**identity, "chunks_done": len(done) + result.chunks})
        log.info("%s: chunk %d (rows %d-%d) predicted", job.source, number, first_row, first_row + table.num_rows - 1)
    parts = sorted(job.parts.glob("chunk-*.parquet"))
    result.output_rows = assemble(parts, job.out, _empty_table(predictor, job))
    shutil.rmtree(job.parts)
    return result


def _identity(predictor: Predictor, job: BulkJob) -> dict[str, Any]:
    """What a resumed run must share with the one it continues (same file, same cut into chunks, same model)."""
    stat = os.stat(job.source)
    record = asdict(job)
    record.update(source=str(Path(job.source).resolve()), out=str(job.out), source_bytes=stat.st_size,
                  source_mtime_ns=stat.st_mtime_ns, labels=list(predictor.meta.labels), backend=predictor.backend_name)
    return json.loads(json.dumps(record, default=str))  # tuples as lists, as they read back


def _open_parts(job: BulkJob, identity: dict[str, Any], resume: bool) -> set[int]:
    """The chunks already done (resume) after checking they belong to this job; a fresh parts folder otherwise."""
    progress = job.parts / PROGRESS_FILE
    if job.parts.exists() and not resume:
        raise BertfitError(f"{job.parts} holds an unfinished prediction to {job.out}; add --resume to continue it, "
                           "or remove the folder to start over")
    if resume and progress.is_file():
        before = json.loads(progress.read_text(encoding="utf-8"))
        changed = [key for key in identity if before.get(key) != identity[key]]
        if changed:
            raise BertfitError(f"{job.parts}: cannot resume, {', '.join(changed)} changed since it started "
                               f"(was {before.get(changed[0])!r}, now {identity[changed[0]]!r}); run it as it was, "
                               "or remove the folder to start over")
        done = {int(path.stem.split("-")[1]) for path in job.parts.glob("chunk-*.parquet")}
        log.info("resuming %s: %d chunks already done", job.out, len(done))
        return done
    if job.parts.exists():  # resume asked for, but no progress record was written yet: nothing to keep
        shutil.rmtree(job.parts)
    job.parts.mkdir()
    write_json_atomic(progress, {**identity, "chunks_done": 0})
    return set()


def _part_path(job: BulkJob, number: int) -> Path:
    return job.parts / f"chunk-{number:09d}.parquet"


def _output_names(predictor: Predictor, job: BulkJob) -> list[str]:
    names = [job.id_name, *job.keep, *(["text"] if job.with_text else []), "label", "confidence",
             *(f"prob_{label}" for label in predictor.meta.labels)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BertfitError(f"keep: output column {repeated[0]!r} would appear twice (an input column of that name "
                           "clashes with a prediction column); leave it out of --keep or rename it in the file")
    return names


def predict_chunk(predictor: Predictor, job: BulkJob, columns: Columns, first_row: int | None) -> Any:
    """One chunk's output table (id, kept columns, text, label, confidence, prob_<label>); `first_row`: the chunk's
    first row number in the file (None: unknown, as in a Ray block; the ids then name rows in messages)."""
    import pyarrow as pa

    wanted = [*job.text_columns, *([job.id_column] if job.id_column else []), *job.keep]
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise BertfitError(f"{job.source}: no column {missing[0]!r} (columns: {', '.join(map(str, columns))}); "
                           "check --text-column, --id-column and --keep")
    texts = join_text_columns(columns, job.text_columns)
    ids = columns[job.id_column] if job.id_column else list(range(first_row or 1, (first_row or 1) + len(texts)))
    for offset, text in enumerate(texts):
        if not text.strip():
            where = f"row {first_row + offset}" if first_row else f"{job.id_name} {ids[offset]!r}"
            raise BertfitError(f"{job.source} {where}: empty text in {', '.join(job.text_columns)}; "
                               "fix or remove the row (then --resume continues)")
    predictions = predictor.predict(texts)
    data: dict[str, list] = {job.id_name: ids, **{name: columns[name] for name in job.keep}}
    if job.with_text:
        data["text"] = texts
    data["label"] = [p.label for p in predictions]
    data["confidence"] = [p.confidence for p in predictions]
    for label in predictor.meta.labels:
        data[f"prob_{label}"] = [p.probabilities[label] for p in predictions]
    try:
        return pa.table({name: data[name] for name in _output_names(predictor, job)})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise BertfitError(f"{job.source} {job.id_name} {ids[0]!r}-{ids[-1]!r}: a kept column mixes types "
                           f"({error}); give each column one type") from None


def _empty_table(predictor: Predictor, job: BulkJob) -> Any:
    """The output of a shard with no rows (more shards than chunks): its columns, no rows."""
    import pyarrow as pa

    return pa.table({name: pa.array([], pa.float64() if name == "confidence" or name.startswith("prob_") else pa.null())
                     for name in _output_names(predictor, job)})


def _write_parquet(table: Any, file: Any) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, file)


def assemble(parts: list[Path], out: Path, empty: Any) -> int:
    """Join Parquet part files, one at a time, into `out` (by extension: Parquet, TSV, JSONL, else CSV); rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pa.unify_schemas([pq.read_schema(p) for p in parts] or [empty.schema], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise BertfitError(f"{out}: a kept column has different types in different chunks ({error}); give each "
                           "column one type") from None
    tables = (pq.read_table(p).cast(schema) for p in parts) if parts else iter([empty])
    fmt, rows = OUTPUT_FORMATS.get(out.suffix.lower(), "csv"), 0
    if fmt == "parquet":
        with atomic_file(out, "wb") as file, pq.ParquetWriter(file, schema) as writer:
            for table in tables:
                writer.write_table(table)
                rows += table.num_rows
        return rows
    with atomic_file(out) as file:
        writer = csv.writer(file, delimiter="\t" if fmt == "tsv" else ",") if fmt != "jsonl" else None
        if writer is not None:
            writer.writerow(schema.names)
        for table in tables:
            for record in table.to_pylist():
                if writer is None:
                    file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                else:
                    writer.writerow([_cell(name, value) for name, value in record.items()])
            rows += table.num_rows
    return rows


def _cell(name: str, value: Any) -> str:
    """A CSV cell: probabilities with 6 decimals (as the in-memory predict writes them), an empty cell for None."""
    if value is None:
        return ""
    return f"{value:.6f}" if name == "confidence" or name.startswith("prob_") else str(value)
