"""Prediction over a large file: texts/s and peak memory for one process, shards, Ray actors and Spark.

    python bench/bulk_predict.py --run runs/demo-ag-news                  # 100,000 texts, every engine
    python bench/bulk_predict.py --run runs/demo-ag-news --rows 2000 --modes process,shards
    python bench/bulk_predict.py --run runs/static --rows 1000000 --modes process --growth 10

The input is the official AG News test rows repeated to --rows (Parquet, columns id and text). Each mode runs
in processes of its own, timed from start to the last output written: `process` one `bertfit predict --file
--out`; `shards` N of them at once with --shard i/N; `ray-N` --engine ray with N actors (a local Ray);
`spark` bertfit.infer.spark.predict_udf in a local[2] Spark session. Peak memory is the resident memory of
the mode's processes and all their descendants together (Ray's raylet and workers, Spark's JVM and Python
workers), sampled every 0.2 s. Every mode's labels are compared with the one-process output. --growth K also runs the
one-process mode on a file K times smaller and records both peaks: bounded memory means they stay close.
Writes bench/out/bulk_predict.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import common
from common import ROOT

SPARK_JOB = """
import sys
from pyspark.sql import SparkSession
from bertfit.infer.spark import predict_udf
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.sql.execution.arrow.maxRecordsPerBatch", "2048").getOrCreate())
frame = spark.read.parquet(sys.argv[2])
frame.withColumn("label", predict_udf(sys.argv[1])("text")).select("id", "label").write.parquet(sys.argv[3])
"""


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bulk_predict.py", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo-ag-news", help="a trained run")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--modes", default="process,shards,ray-1,ray-2,spark",
                        help="comma-separated: process, shards, ray-N, spark")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--growth", type=int, default=0, help="also one process on --rows / K rows (memory growth)")
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=common.OUT / "bulk_predict")
    parser.add_argument("--out", type=Path, default=common.OUT / "bulk_predict.json")
    return parser.parse_args()


def write_input(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, _ = common.ag_news_test()
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("text", pa.string())])) as writer:
        for start in range(0, rows, 50_000):
            ids = list(range(start, min(rows, start + 50_000)))
            writer.write_table(pa.table({"id": ids, "text": [texts[i % len(texts)] for i in ids]}))


def tree_rss(pids: list[int]) -> int:
    """Bytes resident in these processes and all their descendants (Ray's raylet and workers, Spark's JVM and
    Python workers), summed; shared pages count in each process, so this bounds the memory from above."""
    import psutil

    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_processes(commands: list[list[str]]) -> tuple[float, float]:
    """(wall seconds, peak resident MB of the commands and their descendants together, sampled every 0.2 s)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "false", "PYSPARK_PYTHON": sys.executable}  # Spark's workers need bertfit
    started = time.perf_counter()
    processes = [subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL) for command in commands]
    peak = 0
    while any(process.poll() is None for process in processes):
        peak = max(peak, tree_rss([process.pid for process in processes if process.poll() is None]))
        time.sleep(0.2)
    for command, process in zip(commands, processes):
        if process.returncode != 0:
            raise SystemExit(f"failed: {' '.join(command)}")
    return time.perf_counter() - started, peak / 2**20


def mode_commands(mode: str, args: argparse.Namespace, source: Path, out: Path) -> list[list[str]]:
    predict = [sys.executable, "-m", "bertfit", "predict", str(args.run), "--file", str(source), "--no-text",
               "--id-column", "id", "--chunk-rows", str(args.chunk_rows)]
    if mode == "process":
        return [[*predict, "--out", str(out / "predictions.parquet")]]
    if mode == "shards":
        return [[*predict, "--out", str(out / f"shard{i}.parquet"), "--shard", f"{i}/{args.shards}"]
                for i in range(args.shards)]
    if mode.startswith("ray-"):
        return [[*predict, "--out", str(out / "ray"), "--engine", "ray", "--actors", mode.removeprefix("ray-")]]
    if mode == "spark":
        return [[sys.executable, "-c", SPARK_JOB, str(args.run.resolve()), str(source), str(out / "spark")]]
    raise SystemExit(f"unknown mode {mode!r}")


def labels_by_id(folder: Path) -> dict[int, str]:
    import pyarrow.parquet as pq

    table = pq.read_table(folder, columns=["id", "label"])
    return dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist()))


def main() -> None:
    args = _arguments()
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.work / f"input-{args.rows}.parquet"
    if not source.is_file():
        write_input(source, args.rows)
    results, reference = {}, None
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        out = args.work / f"{mode}-{args.rows}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        out.mkdir(parents=True)
        seconds, peak = run_processes(mode_commands(mode, args, source, out))
        labels = labels_by_id(out)
        reference = reference if reference is not None else labels
        agree = sum(labels.get(i) == label for i, label in reference.items()) / len(reference)
        results[mode] = {"seconds": round(seconds, 1), "texts_per_second": round(args.rows / seconds, 1),
                         "peak_rss_mb": round(peak), "rows_out": len(labels), "labels_equal_to_first_mode": agree}
        print(f"{mode}: {args.rows / seconds:,.0f} texts/s, peak {peak:,.0f} MB, {len(labels):,} rows, "
              f"labels equal to the first mode's: {agree:.4%}", flush=True)
    if args.growth:
        small_rows = args.rows // args.growth
        small = args.work / f"input-{small_rows}.parquet"
        write_input(small, small_rows)
        out = args.work / f"growth-{small_rows}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        out.mkdir(parents=True)
        _, small_peak = run_processes(mode_commands("process", args, small, out))
        results["growth"] = {"rows": [small_rows, args.rows], "peak_rss_mb": [round(small_peak),
                                                                            results.get("process", {}).get("peak_rss_mb")]}
        print(f"memory: {small_rows:,} rows peak {small_peak:,.0f} MB; {args.rows:,} rows peak "
              f"{results.get('process', {}).get('peak_rss_mb')} MB")
    report = {**common.provenance(), "run": str(args.run), "rows": args.rows, "chunk_rows": args.chunk_rows,
              "modes": results}
    print(f"written to {common.write_json(args.out, report)}")


if __name__ == "__main__":
    main()
