#!/usr/bin/env bash
# The README's main command: start a loopback Ray head, submit the pipeline (extract -> train -> eval -> serve) as
# one job with `ray job submit`, stream its logs, print where the outputs are, stop Ray.
# Extra arguments are dotted overrides of jobs/configs/pipeline_default.yaml, addressed by stage:
#   bash jobs/run_local.sh                                   # embedded default -> outputs/default
#   OUT=/tmp/run1 bash jobs/run_local.sh extract.annotator.mode=freeform train.optim.lr=1e-4 eval.max_pairs=50
#   bash jobs/run_local.sh 'stages=[extract,train,eval,serve,dpo]'   # add a few online-DPO steps
# Re-running with the same OUT skips the finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
OUT=${OUT:-$PWD/outputs/default}
CONFIG=${PIPELINE_CONFIG:-jobs/configs/pipeline_default.yaml}
SHARED=${WILDREWARD_SHARED:-$(cd .. && pwd)/shared}
PORT=${RAY_PORT:-6379}
DASH=${RAY_DASHBOARD_PORT:-8265}

# The job runs in an uploaded copy of the repo: give it absolute paths for everything outside it.
args=("output_dir=$OUT" "dpo.prompts.chatlogs=[$SHARED/data/chatlogs/lmsys_chat_sample.jsonl]")
if [ -d "$SHARED/data/benchmarks" ]; then
    args+=("eval.data_dir=$SHARED/data")
else
    echo "run_local: no benchmarks at $SHARED/data/benchmarks (set WILDREWARD_SHARED): eval skipped"
    args+=("stages=[extract,train,serve]")
fi

ray start --head --num-cpus="${NUM_CPUS:-2}" --num-gpus=0 --port="$PORT" --dashboard-host=127.0.0.1 \
    --dashboard-port="$DASH" --disable-usage-stats >/dev/null
trap 'ray stop --force >/dev/null 2>&1 || true' EXIT
echo "run_local: Ray head up on 127.0.0.1:$PORT (dashboard http://127.0.0.1:$DASH)"

# `ray job submit` uploads the repo (honouring .gitignore), follows the job's logs until it ends and exits 1 if
# the job failed.
id="wildreward-pipeline-$(date +%Y%m%d-%H%M%S)"
if ! ray job submit --address "http://127.0.0.1:$DASH" --working-dir . --submission-id "$id" -- \
    python jobs/pipeline.py --config "$CONFIG" "${args[@]}" "$@"; then
    echo "run_local: job $id FAILED (logs above; Ray's own logs under /tmp/ray/session_latest/logs)"; exit 1
fi
echo "run_local: job $id SUCCEEDED"
echo "run_local: outputs in $OUT:"
echo "  extract/  data set (train/, test/, stats.json, dataset_card.md, funnel.png, stages/, quarantine/)"
echo "  train/    reward model in train/model (HF format + wildreward.json); metrics.jsonl, eval.json, curves.png"
echo "  eval/     report.md, report.json, threshold_accuracy.png, reliability.png"
echo "  serve/    check.json (served scores = offline scores); pipeline.json (stage timings)"
