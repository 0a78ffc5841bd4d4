#!/usr/bin/env bash
# The README's main command: start a loopback Ray head, submit the pipeline stages with `ray job submit` (extract,
# then train on its output, then eval of the trained model on the benchmarks in ../shared/data when present),
# stream their logs, print where the outputs are, stop Ray.
# Extra arguments are dotted config overrides prefixed with their stage:
#   bash jobs/run_local.sh                                   # embedded default -> outputs/default
#   OUT=/tmp/run1 bash jobs/run_local.sh extract.annotator.mode=freeform train.optim.lr=1e-4 eval.max_pairs=50
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
OUT=${OUT:-$PWD/outputs/default}
EXTRACT_CONFIG=${EXTRACT_CONFIG:-jobs/configs/extract_default.yaml}
TRAIN_CONFIG=${TRAIN_CONFIG:-jobs/configs/train_default.yaml}
EVAL_CONFIG=${EVAL_CONFIG:-jobs/configs/eval_default.yaml}
SHARED=${WILDREWARD_SHARED:-$(cd .. && pwd)/shared}
PORT=${RAY_PORT:-6379}
DASH=${RAY_DASHBOARD_PORT:-8265}

extract_args=() train_args=() eval_args=()
for arg in "$@"; do
    case "$arg" in
        extract.*) extract_args+=("${arg#extract.}") ;;
        train.*) train_args+=("${arg#train.}") ;;
        eval.*) eval_args+=("${arg#eval.}") ;;
        *) echo "run_local: override '$arg' must start with extract., train. or eval." >&2; exit 2 ;;
    esac
done

ray start --head --num-cpus="${NUM_CPUS:-2}" --num-gpus=0 --port="$PORT" --dashboard-host=127.0.0.1 \
    --dashboard-port="$DASH" --disable-usage-stats >/dev/null
trap 'ray stop --force >/dev/null 2>&1 || true' EXIT
echo "run_local: Ray head up on 127.0.0.1:$PORT (dashboard http://127.0.0.1:$DASH)"

# `ray job submit` uploads the repo (honouring .gitignore), follows the job's logs until it ends and exits 1 if
# the job failed.
submit() {  # stage, entry point, args...
    local stage=$1 entry=$2; shift 2
    local id="wildreward-$stage-$(date +%Y%m%d-%H%M%S)"
    if ! ray job submit --address "http://127.0.0.1:$DASH" --working-dir . --submission-id "$id" -- \
        python "$entry" "$@"; then
        echo "run_local: job $id FAILED (logs above; Ray's own logs under /tmp/ray/session_latest/logs)"; exit 1
    fi
    echo "run_local: job $id SUCCEEDED"
}

submit extract jobs/extract.py --config "$EXTRACT_CONFIG" "output_dir=$OUT/extract" ${extract_args[@]+"${extract_args[@]}"}
echo "run_local: data set in $OUT/extract (train/, test/, stats.json, dataset_card.md, funnel.png, stages/, quarantine/)"
submit train jobs/train_rm.py --config "$TRAIN_CONFIG" "output_dir=$OUT/train" "data.train=[$OUT/extract/train]" \
    "data.test=[$OUT/extract/test]" ${train_args[@]+"${train_args[@]}"}
echo "run_local: reward model in $OUT/train/model (HF format + wildreward.json); metrics.jsonl, eval.json, curves.png in $OUT/train"
if [ -d "$SHARED/data/benchmarks" ]; then
    submit eval jobs/eval_rm.py --config "$EVAL_CONFIG" "output_dir=$OUT/eval" "model_dir=$OUT/train/model" \
        "data_dir=$SHARED/data" "consistency_data=$OUT/extract/test" ${eval_args[@]+"${eval_args[@]}"}
    echo "run_local: evaluation in $OUT/eval (report.md, report.json, threshold_accuracy.png, reliability.png)"
else
    echo "run_local: no benchmarks at $SHARED/data/benchmarks (set WILDREWARD_SHARED): eval skipped"
fi
