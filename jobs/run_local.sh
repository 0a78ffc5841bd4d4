#!/usr/bin/env bash
# The README's main command: start a loopback Ray head, submit the pipeline (labeller -> extract -> train -> eval ->
# serve) as one job with `ray job submit`, stream its logs, print where the outputs are, stop Ray.
# Extra arguments are dotted overrides of jobs/configs/pipeline_default.yaml, addressed by stage:
#   bash jobs/run_local.sh                                   # embedded default -> outputs/default
#   OUT=/tmp/run1 bash jobs/run_local.sh extract.annotator.mode=freeform train.optim.lr=1e-4 eval.max_pairs=50
#   bash jobs/run_local.sh 'stages=[extract,train,eval,serve,dpo]'   # add a few online-DPO steps
# Re-running with the same OUT skips the finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 \
    ARROW_DEFAULT_MEMORY_POOL=jemalloc  # the Ray workers inherit it from `ray start` (see wildreward/ray_compat.py)
OUT=${OUT:-$PWD/outputs/default}
CONFIG=${PIPELINE_CONFIG:-jobs/configs/pipeline_default.yaml}
SHARED=${WILDREWARD_SHARED:-$(cd .. && pwd)/shared}
PORT=${RAY_PORT:-6379}
DASH=${RAY_DASHBOARD_PORT:-8265}

# The job runs in an uploaded copy of the repo: give it absolute paths for everything outside it.
# The labeller reads the gold turns' text from the shared chat logs; eval reads the benchmarks there.
if [ ! -d "$SHARED/data/chatlogs" ] || [ ! -d "$SHARED/data/benchmarks" ]; then
    echo "run_local: no shared data at $SHARED/data (chatlogs/, benchmarks/); set WILDREWARD_SHARED" >&2
    exit 1
fi
args=("output_dir=$OUT" "dpo.prompts.chatlogs=[$SHARED/data/chatlogs/lmsys_chat_sample.jsonl]"
      "eval.data_dir=$SHARED/data" "labeller.chatlogs_dir=$SHARED/data/chatlogs")

# A private temp dir marks this script's Ray processes: on exit only they are stopped (`ray stop` would end every
# Ray on the machine), and no other `ray.init()` here mistakes this head for its own cluster.
RAY_TMP=$(mktemp -d /tmp/wrray_XXXXXX)
stop_ray() {  # the processes whose command line names RAY_TMP, and their descendants
    local all="" queue kids pid
    queue=$(pgrep -f -- "$RAY_TMP" || true)
    while [ -n "${queue// }" ]; do
        all="$all $queue" kids=""
        for pid in $queue; do kids="$kids $(pgrep -P "$pid" || true)"; done
        queue="$kids"
    done
    if [ -n "${all// }" ]; then
        kill $all 2>/dev/null || true
        for _ in 1 2 3 4 5; do sleep 1; kill -0 $all 2>/dev/null || break; done
        kill -9 $all 2>/dev/null || true
    fi
    [ -n "${KEEP_RAY_LOGS:-}" ] || rm -rf "$RAY_TMP"
}
trap stop_ray EXIT
# The dashboard agent's default port (52365) is taken when another Ray runs here: use a free one.
AGENT_PORT=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
# --node-ip-address keeps GCS, raylet and the client server on loopback too, not only the dashboard.
ray start --head --num-cpus="${NUM_CPUS:-2}" --num-gpus=0 --port="$PORT" --node-ip-address=127.0.0.1 \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASH" --dashboard-agent-listen-port="$AGENT_PORT" \
    --temp-dir="$RAY_TMP" --disable-usage-stats >/dev/null
echo "run_local: Ray head up on 127.0.0.1:$PORT (dashboard http://127.0.0.1:$DASH)"

# jobs/submit.py submits as `ray job submit` does, uploading the repo (honouring .gitignore), and passes the env vars
# the config names for secrets (the HTTP annotator's api_key_env) from this shell to the job, values never printed.
# The head's job agent can take a while to come up on a busy machine ("No available agent"), so submission is
# retried; then the logs are followed until the job ends.
id="wildreward-pipeline-$(date +%Y%m%d-%H%M%S)"
address="http://127.0.0.1:$DASH"
for attempt in $(seq 20); do
    ray job status --address "$address" "$id" >/dev/null 2>&1 && break  # an earlier try got through after all
    if python jobs/submit.py --address "$address" --submission-id "$id" -- \
        python jobs/pipeline.py --config "$CONFIG" "${args[@]}" "$@" >"$RAY_TMP/submit.out" 2>"$RAY_TMP/submit.err"; then
        grep -h "forwarded\|warning" "$RAY_TMP/submit.out" "$RAY_TMP/submit.err" || true
        break
    fi
    [ "$attempt" = 20 ] && { cat "$RAY_TMP/submit.err" >&2; echo "run_local: could not submit the job" >&2; exit 1; }
    sleep 3
done
echo "run_local: submitted job $id"
ray job logs --address "$address" --follow "$id" || true
status=""
for _ in $(seq 60); do  # the log stream can end a moment before the job's final status is recorded
    # From the job API, not the CLI's text: a failed job's status output ends with its logs, whose words could match.
    status=$(python -c "import sys; from ray.job_submission import JobSubmissionClient as C
print(C(sys.argv[1]).get_job_status(sys.argv[2]).value.lower())" "$address" "$id" 2>/dev/null || true)
    case "$status" in succeeded|failed|stopped) break ;; esac
    sleep 2
done
if [ "$status" != succeeded ]; then
    KEEP_RAY_LOGS=1
    echo "run_local: job $id FAILED (logs above; Ray's own logs under $RAY_TMP/session_latest/logs)" >&2; exit 1
fi
echo "run_local: job $id SUCCEEDED"
echo "run_local: outputs in $OUT:"
echo "  extract/  data set (train/, test/, stats.json, dataset_card.md, funnel.png, stages/, quarantine/)"
echo "  train/    reward model in train/model (HF format + wildreward.json); metrics.jsonl, eval.json, curves.png"
echo "  eval/     report.md, report.json, threshold_accuracy.png, reliability.png"
echo "  serve/    check.json (served scores = offline scores); pipeline.json (stage timings)"
