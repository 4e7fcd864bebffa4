#!/usr/bin/env bash
# One prepared check of bertfit on a GPU, at most 8 minutes on one GPU (docs/speed.md, "Check a GPU machine"):
#   1. env          GPU, driver, torch, transformers
#   2. unpack       .gpu-bundle (python scripts/gpu_bundle.py pack, beforehand, where pip reaches a registry):
#                   wheels for the service, the embedded model (fp16 -> float32), AG News
#   3. pytest-gpu   pytest -m gpu tests/gpu (bf16/fp16 vs fp32, resume, pinned batches, compile,
#                   Predictor + service, ONNX export, torchrun + NCCL)
#   4. demo-cuda    configs/demo.yaml on CUDA: test accuracy against the CPU demo's 90.17% (within 0.5 points)
#   5. train-speed  bench/train_speed.py: bertfit vs Trainer (max_length and dynamic padding) on a
#                   bert-base-sized model (BertConfig(), random init) at 128 tokens in bf16
# Every step runs under `timeout` (SIGINT, then SIGKILL) within what is left of --budget; a step that
# no longer fits is skipped. bench/out/gpu_check.json is rewritten after every step, so a stopped run
# keeps what finished; with $OUT set (the device tool) the JSON and the logs are copied there too.
#
#   bash scripts/gpu_check.sh --dry-run        # print every step, run nothing
#   bash scripts/gpu_check.sh                  # on the GPU machine, with .gpu-bundle carried
#   bash scripts/gpu_check.sh --smoke          # tiny sizes on the CPU: checks the script, measures nothing
set -u
cd "$(dirname "$0")/.."

main() {  # the whole script is one function, read before it runs: editing the file meanwhile cannot break a run

DRY_RUN=0 SMOKE=0 BUDGET=480
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --smoke) SMOKE=1 ;;
        --budget) BUDGET="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --dry-run, --smoke, --budget SECONDS)" >&2; exit 2 ;;
    esac
    shift
done

PY=${PYTHON:-python3}
SITE=${BERTFIT_GPU_SITE:-/tmp/bertfit-site}
LOGS=bench/out/gpu_check
KILL_AFTER=15   # seconds between a step's SIGINT and its SIGKILL
RESERVE=15      # seconds kept for the report and the copies at the end
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
       TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -d .gpu-bundle/data ] && export BERTFIT_DATA_DIR="$PWD/.gpu-bundle/data"

DEMO_FLAGS="--output_dir $LOGS/runs --cache_dir $LOGS/cache --train.progress false --train.tensorboard false --overwrite"
SPEED_FLAGS="--model bert-base-random --rows 14000 --batch-size 128 --precision bf16 --eval-rows 1000"
SPEED_VARIANTS="bertfit,trainer-maxlen,trainer-dynamic,bertfit-compile"
DEMO_DEVICE=cuda
if [ "$SMOKE" = 1 ]; then
    DEMO_FLAGS="$DEMO_FLAGS --data.max_train_rows 200 --data.max_eval_rows 100 --train.epochs 1"
    SPEED_FLAGS="--rows 120 --eval-rows 50 --precision fp32"
    SPEED_VARIANTS="bertfit,trainer-dynamic"
    DEMO_DEVICE=cpu
fi

# name | seconds at most | command
STEPS=(
    "env|30|nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; $PY -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())'"
    "unpack|60|$PY scripts/gpu_bundle.py unpack --site $SITE"
    "pytest-gpu|190|$PY -m pytest -m gpu tests/gpu -q -rs --durations=15 -p no:cacheprovider --junitxml $LOGS/pytest-gpu.xml"
    "demo-cuda|90|$PY -m bertfit train --config configs/demo.yaml --train.device $DEMO_DEVICE $DEMO_FLAGS"
    "train-speed|165|$PY bench/train_speed.py $SPEED_FLAGS --variants $SPEED_VARIANTS --max-seconds 140"
)
[ "$SMOKE" = 1 ] && STEPS=("${STEPS[0]}" "${STEPS[@]:2}")  # --smoke: this machine's packages, no bundle

if [ "$DRY_RUN" = 1 ]; then
    echo "gpu_check.sh --dry-run: budget ${BUDGET}s; each step under timeout --signal=INT --kill-after=${KILL_AFTER}s"
    echo "env: PYTHONPATH=$PYTHONPATH BERTFIT_DATA_DIR=${BERTFIT_DATA_DIR:-(shared/data)}"
    for step in "${STEPS[@]}"; do
        IFS='|' read -r name seconds command <<< "$step"
        echo "step $name (at most ${seconds}s): $command"
    done
    echo "report: $PY scripts/gpu_check_report.py $LOGS -> bench/out/gpu_check.json (after every step; copied to \$OUT when set)"
    exit 0
fi

rm -rf "$LOGS" bench/out/train_speed.json
mkdir -p "$LOGS"
printf 'step\texit_code\tseconds\tlimit_seconds\n' > "$LOGS/steps.tsv"
STARTED=$(date +%s)
for step in "${STEPS[@]}"; do
    IFS='|' read -r name seconds command <<< "$step"
    left=$(( BUDGET - RESERVE - KILL_AFTER - ($(date +%s) - STARTED) ))
    limit=$(( seconds < left ? seconds : left ))
    if [ "$limit" -lt 20 ]; then
        printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >> "$LOGS/steps.tsv"
        echo "== $name: skipped, ${left}s of the budget left"
        continue
    fi
    echo "== $name (at most ${limit}s)"
    begun=$(date +%s)
    timeout --signal=INT --kill-after="$KILL_AFTER" "$limit" bash -c "$command" > "$LOGS/$name.log" 2>&1
    code=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$code" "$(( $(date +%s) - begun ))" "$limit" >> "$LOGS/steps.tsv"
    tail -n 5 "$LOGS/$name.log"
    echo "== $name: exit code $code after $(( $(date +%s) - begun ))s"
    $PY scripts/gpu_check_report.py "$LOGS" > /dev/null || echo "report failed (see above)"
done
$PY scripts/gpu_check_report.py "$LOGS"
if [ -n "${OUT:-}" ]; then
    cp bench/out/gpu_check.json "$OUT/" 2>/dev/null
    [ -f bench/out/train_speed.json ] && cp bench/out/train_speed.json "$OUT/"
    tar -czf "$OUT/gpu_check_logs.tar.gz" -C bench/out gpu_check --exclude gpu_check/runs --exclude gpu_check/cache
fi
}

main "$@"
