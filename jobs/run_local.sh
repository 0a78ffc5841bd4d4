#!/usr/bin/env bash
# The README's main command: start a loopback Ray head, submit the pipeline with `ray job submit`, stream its
# logs, print where the outputs are, stop Ray. Extra arguments are dotted config overrides.
#   bash jobs/run_local.sh                       # embedded default -> outputs/default
#   OUT=/tmp/run1 bash jobs/run_local.sh annotator.mode=freeform
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
OUT=${OUT:-$PWD/outputs/default}
CONFIG=${CONFIG:-jobs/configs/extract_default.yaml}
PORT=${RAY_PORT:-6379}
DASH=${RAY_DASHBOARD_PORT:-8265}

ray start --head --num-cpus="${NUM_CPUS:-2}" --num-gpus=0 --port="$PORT" --dashboard-host=127.0.0.1 \
    --dashboard-port="$DASH" --disable-usage-stats >/dev/null
trap 'ray stop --force >/dev/null 2>&1 || true' EXIT
echo "run_local: Ray head up on 127.0.0.1:$PORT (dashboard http://127.0.0.1:$DASH)"

id="wildreward-extract-$(date +%Y%m%d-%H%M%S)"
# `ray job submit` uploads the repo (honouring .gitignore), follows the job's logs until it ends and exits 1 if
# the job failed.
if ! ray job submit --address "http://127.0.0.1:$DASH" --working-dir . --submission-id "$id" \
    -- python jobs/extract.py --config "$CONFIG" "output_dir=$OUT" "$@"; then
    echo "run_local: job $id FAILED (logs above; Ray's own logs under /tmp/ray/session_latest/logs)"; exit 1
fi
echo "run_local: job $id SUCCEEDED"
echo "run_local: outputs in $OUT (train/, test/, stats.json, dataset_card.md, funnel.png, stages/, quarantine/)"
