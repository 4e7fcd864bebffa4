"""`bertfit predict | merge | export | serve | push`: the commands that use and ship a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

from bertfit.cli.bulk import add_bulk_arguments, predict_bulk, wants_bulk
from bertfit.errors import BertfitError, require
from bertfit.infer import BACKEND_ALIASES, BACKENDS, backend_name

BACKEND_CHOICES = (*BACKENDS, *BACKEND_ALIASES)
BACKEND_HELP = ("auto: on a CPU, the exported variant whose accuracy passed the export's check (the --target auto "
                "choice, else onnx-int8, then onnx-fp32), else PyTorch; the log says why. torch = pytorch, onnx = onnx-fp32")


def add_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="labels and probabilities for texts or a file")
    predict.add_argument("run", type=Path)
    predict.add_argument("texts", nargs="*", help="texts to classify")
    predict.add_argument("--file", type=Path, help="CSV/TSV/JSONL/Parquet file of texts")
    predict.add_argument("--text-column", help="--file: the column(s) holding the text, comma-separated (default: the "
                                                "run's data.text_columns, joined as training joined them; else text)")
    predict.add_argument("--out", type=Path, help="with --file: Parquet, TSV or JSONL by extension, else CSV, written a chunk "
                                                  "at a time; with texts: CSV (default: print)")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--device", default="auto")
    predict.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    add_bulk_arguments(predict)
    predict.set_defaults(handler=_predict)

    merge = commands.add_parser("merge", help="write a standalone model folder with LoRA adapters merged in")
    merge.add_argument("run", type=Path, help="run directory or model folder")
    merge.add_argument("out", type=Path, help="folder to write the merged model to")
    merge.set_defaults(handler=_merge)
    _add_export(commands)
    _add_serve(commands)
    push = commands.add_parser("push", help="publish a run's model folder and card to the Hugging Face Hub")
    push.add_argument("run", type=Path)
    push.add_argument("repo_id", help="user/name or org/name; created if it does not exist")
    push.add_argument("--hf", action="store_true", help="publish the stock sentence-transformers folder "
                                                        "(`export --hf`) instead of bertfit's own")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--message", help="the commit message")
    push.add_argument("--endpoint", help="a Hub other than huggingface.co (default: HF_ENDPOINT)")
    push.set_defaults(handler=_push)


def _add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a run for CPU serving (ONNX, OpenVINO, CTranslate2), check it, "
                                                "and with --target auto pick the fastest for this machine")
    export.add_argument("run", type=Path)
    export.add_argument("--target", choices=("onnx", "openvino", "ct2", "auto"),
                        help="engine to export (ONNX is always written); auto: every engine available here in fp32 "
                             "and int8, timed, the fastest within --max-accuracy-loss becomes what serve uses")
    export.add_argument("--onnx", action="store_true", help="same as --target onnx")
    export.add_argument("--hf", type=Path, metavar="DIR",
                        help="write a plain sentence-transformers folder (stock modules, no remote code) giving the "
                             "run's probabilities; says what it cannot carry (windows, head+tail, the stack)")
    export.add_argument("--int8", action="store_true", help="also write int8 copies (dynamic quantisation; auto: always)")
    export.add_argument("--max-rows", type=int, help="check on at most N held-out rows, validation then test "
                                                     "(default 4000: enough to tell 0.5 points apart)")
    export.add_argument("--batch-size", type=int, default=64)
    export.add_argument("--max-accuracy-loss", type=float, default=0.5,
                        help="accuracy points a variant may lose against PyTorch and still serve (auto's choice, "
                             "and what predict and serve use)")
    export.add_argument("--threads", type=int, default=1, help="auto: CPU threads per model call while timing")
    export.add_argument("--time-batch", type=int, default=10, help="auto: texts per model call while timing "
                                                                   "(about what serve merges under load)")
    export.add_argument("--time-rows", type=int, default=200, help="auto: held-out texts per timing round")
    export.add_argument("--time-rounds", type=int, default=3, help="auto: interleaved timing rounds")
    export.add_argument("--student", type=Path, metavar="RUN", help="a static student of this run (`bertfit distill RUN "
                                                                    "--student static`): checked and timed as variant "
                                                                    "static, served only within --max-accuracy-loss")
    export.set_defaults(handler=_export)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="HTTP service (FastAPI): POST /predict, GET /health, /metadata, / (a page)")
    serve.add_argument("run", type=Path)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    serve.add_argument("--device", default="auto")
    serve.add_argument("--threads", type=int, help="CPU threads per model call (default: all cores)")
    serve.add_argument("--max-batch", type=int, default=32, help="texts per model call when batching requests")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to join")
    serve.add_argument("--max-texts", type=int, default=256, help="texts per request")
    serve.add_argument("--max-text-chars", type=int, default=20_000, help="characters per text")
    serve.add_argument("--max-body-bytes", type=int, default=2_000_000, help="request body size")
    serve.add_argument("--max-queued-texts", type=int, default=4096, help="texts waiting for the model (beyond: 503)")
    serve.add_argument("--request-timeout-s", type=float, default=10.0,
                       help="seconds a connection has to send a whole request (headers and body)")
    serve.add_argument("--keep-alive-s", type=float, default=5.0, help="seconds an idle keep-alive connection stays open")
    serve.add_argument("--api-key-env", default="BERTFIT_API_KEY",
                       help="environment variable holding the API key; when set, requests need header X-API-Key")
    serve.add_argument("--allow-public", action="store_true",
                       help="serve a non-loopback --host without an API key (anyone who reaches it can use the model)")
    serve.set_defaults(handler=_serve)


def _export(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.deploy.export import export_run

    target = args.target or ("onnx" if args.onnx else None)
    if args.hf is not None:
        _export_hf(args.run, args.hf)
        if target is None:
            return 0
    if target is None:
        raise BertfitError("choose an export target: --target auto (measure every backend here) or --onnx "
                           "(add --int8 for a quantised copy)")
    meta = export_run(args.run, int8=args.int8, max_rows=args.max_rows, batch_size=args.batch_size, target=target,
                      max_accuracy_loss=args.max_accuracy_loss, threads=args.threads, time_batch=args.time_batch,
                      time_rows=args.time_rows, time_rounds=args.time_rounds, student=args.student)
    check = meta.check
    print(f"exported to {args.run / 'export'} ({', '.join(sorted(set(meta.files.values())))})")
    print(f"check on {check['rows']} held-out rows ({check['split']}): torch accuracy {check['torch_accuracy']:.4f}")
    timings = (meta.selection or {}).get("timings", {})
    for variant in meta.files:
        c = check[variant]
        low, high = c["accuracy_change_interval_points"]
        speed = f", {timings[variant]['vs_torch']:.2f}x PyTorch" if variant in timings else ""
        print(f"  {variant}: accuracy {c['accuracy']:.4f} ({c['accuracy_change_points']:+.2f} points, 95% "
              f"[{low:+.2f}, {high:+.2f}]), labels differ on {c['disagreement']:.2%}{speed}")
    for variant, reason in (meta.selection or {}).get("skipped", {}).items():
        print(f"  {variant}: skipped ({reason})")
    served, passed_over = meta.served_variant()
    for reason in passed_over:
        print(f"  not served: {reason}")
    print(f"predict and serve use on a CPU: {backend_name(served)}")
    return 0


def _export_hf(run: Path, out: Path) -> None:
    from bertfit.deploy.hf_export import export_hf

    written = export_hf(run, out)
    print(f"sentence-transformers folder written to {written.folder}: SentenceTransformer(folder).encode(texts) "
          "gives calibrated logits (see its README.md)")
    for item in written.lost:
        print(f"  not carried: {item}")


def _push(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.deploy.push import push_run

    url = push_run(args.run, args.repo_id, plain=args.hf, private=args.private or None, endpoint=args.endpoint,
                   message=args.message)
    print(f"pushed {args.run} to {args.repo_id}: {url}")
    return 0


def _serve(args: argparse.Namespace, _: list[str]) -> int:
    import os

    require("serve", "bertfit serve", "fastapi", "uvicorn")
    from bertfit.deploy.serve import ServeSettings, serve

    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts,
                             max_text_chars=args.max_text_chars, max_body_bytes=args.max_body_bytes,
                             max_queued_texts=args.max_queued_texts, request_timeout_s=args.request_timeout_s,
                             keep_alive_s=args.keep_alive_s, api_key=os.environ.get(args.api_key_env) or None)
    print(f"serving {args.run} on http://{args.host}:{args.port} (docs: /docs); Ctrl-C stops after in-flight requests")
    serve(args.run, settings, host=args.host, port=args.port, allow_public=args.allow_public, backend=args.backend,
          device=args.device, threads=args.threads)
    return 0


def _predict(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.infer.files import check_out_path, read_texts, write_predictions
    from bertfit.infer.predictor import Predictor, run_text_columns

    if args.out is not None:
        check_out_path(args.out)
    bulk = wants_bulk(args)
    texts = list(args.texts)
    if args.file is not None:
        columns = tuple(c.strip() for c in args.text_column.split(",")) if args.text_column else run_text_columns(args.run)
        if bulk:
            return predict_bulk(args, columns)
        texts += read_texts(args.file, columns)
    if not texts:
        raise BertfitError("nothing to predict: give texts as arguments or --file FILE")
    predictor = Predictor(args.run, device=args.device, batch_size=args.batch_size, backend=args.backend)
    predictions = predictor.predict(texts)
    if args.out is not None:
        write_predictions(args.out, predictions)
        print(f"{len(predictions)} predictions written to {args.out} (backend {predictor.backend_name})")
        return 0
    for p in predictions:
        probabilities = ", ".join(f"{k}={v:.3f}" for k, v in p.probabilities.items())
        label = p.label if p.label_probabilities is None else \
            "|".join(f"{k}({v:.3f})" for k, v in p.label_probabilities.items()) or "(none)"
        print(f"{label}\t{p.confidence:.3f}\t{probabilities}\t{p.text[:80]}")
    return 0


def _merge(args: argparse.Namespace, _: list[str]) -> int:
    from bertfit.deploy.merge import save_merged

    print(f"merged model written to {save_merged(args.run, args.out)}")
    return 0
