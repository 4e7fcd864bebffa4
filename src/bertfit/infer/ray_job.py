"""Prediction on a Ray cluster (or a local Ray): Ray Data reads the file in blocks, actors predict, Parquet out.

Each actor loads the run's Predictor once (its backend choice, as `bertfit predict`) and predicts the blocks
sent to it, so the model is read once per actor, not once per block. The output is a folder of Parquet files
(Ray writes one per block), read back whole by `pandas.read_parquet(folder)` or `pyarrow.dataset`. Ray reads
blocks in parallel and numbers no rows, so the input names an id column. With `address` (ray://host:10001 or
auto) the run folder, the input and the output must be paths every node can reach (a shared file system);
without it a local Ray is started on this machine. Needs `pip install bertfit[scale-out]`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bertfit.config import DataConfig
from bertfit.errors import BertfitError
from bertfit.infer.bulk import BulkJob, predict_chunk
from bertfit.infer.predictor import Predictor

log = logging.getLogger(__name__)


class PredictBlocks:
    """A Ray Data actor: the run's Predictor, loaded once, applied to each block (a pyarrow Table)."""

    def __init__(self, run: str, job: BulkJob, backend: str, batch_size: int, threads: int | None):
        self.predictor = Predictor(run, batch_size=batch_size, backend=backend, threads=threads)
        self.job = job

    def __call__(self, block: Any) -> Any:
        return predict_chunk(self.predictor, self.job, block.to_pydict(), None)


def predict_with_ray(run: Path, job: BulkJob, address: str | None = None, actors: int = 2,
                     backend: str = "auto", batch_size: int = 64, cpus_per_actor: float = 1.0) -> Path:
    """Predict `job.source` into the folder `job.out` with `actors` Ray actors; blocks of `job.chunk_rows` rows.
    Returns the output folder; the rows keep the input's order."""
    try:
        import ray
    except ImportError:
        raise BertfitError("--engine ray needs Ray Data: pip install 'bertfit[scale-out]'") from None
    if job.id_column is None:
        raise BertfitError("id_column: Ray reads blocks in parallel and numbers no rows; name the input's id column "
                           "(--id-column) so each prediction can be joined back")
    if job.shard != (0, 1):
        raise BertfitError("shard: Ray spreads the work itself; leave --shard out with --engine ray")
    remote = "://" in str(job.out)
    if not remote and Path(job.out).exists():
        raise BertfitError(f"out: {job.out} exists; with --engine ray the output is a new folder of Parquet files, "
                           "so choose another path or remove it")
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # output files in input order
    cpus_per_actor = actor_cpus(ray.cluster_resources().get("CPU", 1.0), actors, cpus_per_actor)
    threads = max(1, int(cpus_per_actor))
    blocks = _read(ray, job.source).map_batches(
        PredictBlocks, batch_size=job.chunk_rows, batch_format="pyarrow", concurrency=actors, num_cpus=cpus_per_actor,
        fn_constructor_kwargs={"run": str(Path(run).resolve()), "job": job, "backend": backend,
                               "batch_size": batch_size, "threads": threads})
    if remote:
        blocks.write_parquet(str(job.out))
        return job.out
    out = Path(job.out)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        blocks.write_parquet(str(staging))
        staging.rename(out)  # the folder appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("ray: predictions of %s written to %s", job.source, out)
    return out


def actor_cpus(cluster_cpus: float, actors: int, wanted: float) -> float:
    """CPUs each actor reserves: `wanted`, lowered so that the actors leave one CPU to the tasks that read and write
    the blocks (actors holding every CPU of a small cluster starve those tasks, and the job waits for ever)."""
    fits = max(0.1, (cluster_cpus - 1) / actors) if cluster_cpus > 1 else cluster_cpus / (actors + 1)
    if fits < wanted:
        log.info("ray: %d actors on %g CPUs reserve %.2g CPU each, leaving one to read and write", actors,
                 cluster_cpus, fits)
    return min(wanted, fits)


def _read(ray: Any, source: Path) -> Any:
    fmt = DataConfig().file_format(Path(str(source)))
    if fmt == "parquet":
        return ray.data.read_parquet(str(source))
    if fmt == "csv":
        return ray.data.read_csv(str(source))
    if fmt == "jsonl":
        return ray.data.read_json(str(source), lines=True)
    raise BertfitError(f"file: {source} is not Parquet, CSV or JSONL (by its extension), which --engine ray reads")
