#!/usr/bin/env bash
# The GPU checks in one run, on a GPU machine without network whose Python (3.12) already has CUDA torch,
# transformers, sentence-transformers, aiohttp and grpcio, but not Ray, pydantic, DeepSpeed or FastAPI.
#
#   bash benchmarks/gpu_check.sh --prepare [PARTS]   # here, with network: fill .gpu/ (git-ignored) with what those
#                                                    # parts need: wheels, tokenizers, saved real turns
#   bash benchmarks/gpu_check.sh [PARTS]             # there, from the repo root with .gpu/ beside it; logs and
#                                                    # results go to $OUT (default ./gpu_check_out)
#
# PARTS is a comma list, run in this order:
#   mining    bench_mining.py: batched vs pair-by-pair MiniLM (random weights), 10k ShareGPT turns (issue 2)
#   serve     bench_serve.py: Ray Serve vs the FastAPI baseline, Qwen3-0.6B-shaped RM in bf16 (issue 4)
#   modes     bench_gpu.py: constrained vs freeform annotation, Qwen3-4B shape, 200 WildChat turns (issue 2)
#   annotate, score, train   bench_gpu.py's throughput steps (measured on an H100 on 2026-11-27)
#   tests     tests/test_gpu.py
# The default, "mining,serve,modes,tests", should fit one 10-minute call; the benchmarks come first so their
# results are in $OUT even if the tests run out of time. Ray's wheel is 79 MB, over the 64 MiB a call may carry:
# --prepare repacks it without the Java jars, RLlib, Tune, LLM and the dashboard's web client (42 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR=.gpu
TOKENIZER=$GPU_DIR/cache/models/smollm2-135m-instruct  # where wildreward.models looks for the converted SmolLM2
MINILM=$GPU_DIR/cache/models/minilm-random               # MiniLM's files without weights; random ones made there
DATA=$GPU_DIR/data
DEFAULT_PARTS=mining,serve,modes,tests

if [[ "${1:-}" == "--prepare" ]]; then
    PARTS=",${2:-$DEFAULT_PARTS},"
    PY=${PY:-.venv/bin/python}
    LOGS=${WILDREWARD_SHARED:-../shared}/data/chatlogs
    rm -rf "$GPU_DIR"
    mkdir -p .git/info "$GPU_DIR/whl" "$TOKENIZER" "$MINILM" "$DATA"
    grep -qx "/$GPU_DIR/" .git/info/exclude 2>/dev/null || echo "/$GPU_DIR/" >> .git/info/exclude
    version() { $PY -c "import importlib.metadata as m; print(m.version('$1'))"; }
    # Versions as installed here.
    names=(pydantic pydantic-core annotated-types typing-inspection hjson)
    [[ $PARTS == *,serve,* ]] && names+=(jsonschema jsonschema-specifications referencing rpds-py fastapi starlette
                                         uvicorn grpcio grpcio-reflection protobuf)
    pins=()
    for name in "${names[@]}"; do pins+=("$name==$(version "$name")"); done
    download() {
        $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$1" "${@:2}"
    }
    download "$GPU_DIR/whl" "${pins[@]}"
    if [[ $PARTS == *,tests,* || $PARTS == *,train,* ]]; then
        # DeepSpeed ships as a source archive: build a wheel without compiled ops (they are JIT-built on the GPU).
        DS_BUILD_OPS=0 $PY -m pip wheel -q --no-deps --no-build-isolation -w "$GPU_DIR/whl" "deepspeed==$(version deepspeed)"
    fi
    if [[ $PARTS == *,serve,* ]]; then
        tmp=$(mktemp -d)
        download "$tmp" "ray==$(version ray)"
        $PY - "$tmp"/ray-*.whl "$GPU_DIR/whl" <<'EOF'
import base64, csv, hashlib, io, sys, zipfile
from pathlib import Path

src = Path(sys.argv[1])
drop = ("ray/jars/", "ray/rllib/", "ray/tune/", "ray/llm/", "ray/dashboard/client/")
rows = []
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(Path(sys.argv[2]) / src.name, "w", zipfile.ZIP_DEFLATED) as zout:
    for info in zin.infolist():
        if info.filename.endswith(".dist-info/RECORD"):
            record = info.filename
        elif not info.filename.startswith(drop):
            data = zin.read(info)
            zout.writestr(info, data)  # the ZipInfo keeps the executables' mode bits
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append([info.filename, f"sha256={digest}", str(len(data))])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows + [[record, "", ""]])
    zout.writestr(record, out.getvalue())
EOF
        rm -rf "$tmp"
    fi
    src=$($PY -c "from wildreward.models import resolve_model; print(resolve_model('smollm2'))")
    find "$src" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} "$TOKENIZER/" \;  # no weights: tests build theirs
    src=$($PY -c "from wildreward.models import resolve_model; print(resolve_model('minilm'))")
    (cd "$src" && find . -type f \( -name '*.json' -o -name '*.txt' \) ! -name data_config.json \
        -exec cp --parents {} "$OLDPWD/$MINILM/" \;)
    HF_HUB_OFFLINE=1 $PY - "$LOGS" "$DATA" "$PARTS" <<'EOF'
import sys
from benchmarks.common import kept_turns, save_turns

logs, data, parts = sys.argv[1:]
save_turns(f"{data}/wildchat.turns.jsonl.gz", kept_turns(f"{logs}/wildchat_sample.jsonl", 512))
if ",mining," in parts:
    save_turns(f"{data}/sharegpt.turns.jsonl.gz", kept_turns("package:sharegpt", 10_000),
               ("id", "conversation_id", "turn_index", "feedback"))
if ",serve," in parts:
    save_turns(f"{data}/serve.turns.jsonl.gz", [t for name in ("wildchat_sample", "chatbot_arena_sample",
                                                              "lmsys_chat_sample")
                                                for t in kept_turns(f"{logs}/{name}.jsonl", 200)])
EOF
    du -sh "$GPU_DIR"
    size=$(( $(du -sb "$GPU_DIR" | cut -f1) + $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) ))
    if (( size > 64 * 2**20 )); then
        echo "error: .gpu/ plus the repository is $size bytes, over the 64 MiB a device call carries" >&2
        exit 1
    fi
    exit 0
fi

PARTS=",${1:-$DEFAULT_PARTS},"
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$GPU_DIR"/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export WILDREWARD_CACHE=$PWD/$GPU_DIR/cache RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled
export RAY_USAGE_STATS_ENABLED=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
status=0
if [[ $PARTS == *,mining,* ]]; then
    # Random weights first; a failure here must not stop the later parts (set -e), so both run in one group.
    { python3 -c "import sys; from transformers import BertConfig, BertModel; \
BertModel(BertConfig.from_pretrained(sys.argv[1])).save_pretrained(sys.argv[1])" "$MINILM" &&
      timeout 150 python3 benchmarks/bench_mining.py --source "$DATA/sharegpt.turns.jsonl.gz" --encoder "$MINILM" \
        --batch-tokens 65536 --name bench_mining_gpu; } 2>&1 | tee "$OUT/bench_mining.log" || status=1
    cp benchmarks/results/bench_mining_gpu.* "$OUT/" 2>/dev/null || true
fi
if [[ $PARTS == *,serve,* ]]; then
    timeout 240 python3 benchmarks/bench_serve.py --device cuda --backbone qwen3-0.6b --tokenizer "$TOKENIZER" \
        --source "$DATA/serve.turns.jsonl.gz" --name bench_serve_gpu 2>&1 | grep -v ' -- POST ' \
        | tee "$OUT/bench_serve.log" || status=1
    cp benchmarks/results/bench_serve_gpu.* "$OUT/" 2>/dev/null || true
fi
steps=$(echo "$PARTS" | tr ',' '\n' | grep -xE 'modes|annotate|score|train' | paste -sd, - || true)
if [[ -n $steps ]]; then
    name=bench_gpu_${steps//,/_}
    timeout 330 python3 benchmarks/bench_gpu.py --tokenizer "$TOKENIZER" --sample "$DATA/wildchat.turns.jsonl.gz" \
        --only "$steps" --name "$name" 2>&1 | tee "$OUT/bench_gpu.log" || status=1
    cp benchmarks/results/"$name".* "$OUT/" 2>/dev/null || true
fi
if [[ $PARTS == *,tests,* ]]; then
    timeout 240 python3 -m pytest tests/test_gpu.py -p no:cacheprovider -rA --timeout 200 2>&1 | tee "$OUT/tests.log" || status=1
fi
exit $status
