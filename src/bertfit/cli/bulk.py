"""`bertfit predict --file F --out O`: the file predicted in chunks (resumable, sharded) or on Ray."""

from __future__ import annotations

import argparse
from pathlib import Path

from bertfit.errors import BertfitError

BULK_FLAGS = ("id_column", "keep", "resume", "shard", "address", "no_text")


def add_bulk_arguments(predict: argparse.ArgumentParser) -> None:
    """The flags of `predict --file --out`: a file is read, predicted and written a chunk at a time."""
    predict.add_argument("--id-column", help="--file/--out: input column carried into the output to join predictions "
                                             "back (default: the row number, from 1, as column row)")
    predict.add_argument("--keep", help="--file/--out: further input columns carried into the output, comma-separated")
    predict.add_argument("--no-text", action="store_true", help="--file/--out: leave the text out of the output "
                                                                "(most of a large output is its texts)")
    predict.add_argument("--chunk-rows", type=int, default=10_000,
                         help="--file/--out: rows read, predicted and written at a time (memory holds one chunk)")
    predict.add_argument("--resume", action="store_true",
                         help="continue an interrupted --file/--out prediction from its finished chunks (OUT.parts)")
    predict.add_argument("--shard", help="i/N: predict only chunks whose number mod N is i (one of N jobs, e.g. a "
                                         "Slurm array); the same --chunk-rows in every job")
    predict.add_argument("--engine", choices=("local", "ray"), default="local",
                         help="local: this process, in chunks; ray: Ray Data actors (--out becomes a folder of "
                              "Parquet files; needs bertfit[scale-out] and --id-column)")
    predict.add_argument("--address", help="--engine ray: the cluster (ray://host:10001, or auto); default: a local Ray")
    predict.add_argument("--actors", type=int, default=2, help="--engine ray: model replicas")


def wants_bulk(args: argparse.Namespace) -> bool:
    """A file with an output and no loose texts goes through the chunked path; its flags need both."""
    bulk = args.file is not None and args.out is not None and not args.texts
    used = [name for name in BULK_FLAGS if getattr(args, name)] + (["engine"] if args.engine != "local" else [])
    if used and not bulk:
        raise BertfitError(f"--{used[0].replace('_', '-')} needs --file FILE and --out OUT (and no texts as arguments)")
    return bulk


def predict_bulk(args: argparse.Namespace, text_columns: tuple[str, ...]) -> int:
    from bertfit.infer.bulk import BulkJob, parse_shard

    job = BulkJob(Path(args.file), Path(args.out), text_columns, id_column=args.id_column,
                  keep=tuple(c.strip() for c in args.keep.split(",") if c.strip()) if args.keep else (),
                  with_text=not args.no_text, chunk_rows=args.chunk_rows,
                  shard=parse_shard(args.shard) if args.shard else (0, 1))
    if args.engine == "ray":
        from bertfit.infer.ray_job import predict_with_ray

        out = predict_with_ray(args.run, job, address=args.address, actors=args.actors, backend=args.backend,
                               batch_size=args.batch_size)
        print(f"predictions of {args.file} written to {out} (a folder of Parquet files)")
        return 0
    from bertfit.infer.bulk import predict_file
    from bertfit.infer.predictor import Predictor

    job.check_paths()
    predictor = Predictor(args.run, device=args.device, batch_size=args.batch_size, backend=args.backend)
    try:
        result = predict_file(predictor, job, resume=args.resume)
    except KeyboardInterrupt:
        print(f"interrupted: finished chunks are kept in {job.parts}; add --resume to continue", flush=True)
        raise
    print(f"{result.output_rows} predictions written to {result.out} (backend {result.backend}; {result.chunks} "
          f"chunks predicted now, {result.resumed_chunks} done before)")
    return 0
