#!/usr/bin/env bash
# The GPU checks in one run, on a GPU machine without network whose Python already has CUDA torch, transformers and
# sentence-transformers (but not Ray, pydantic or DeepSpeed).
#
#   bash benchmarks/gpu_check.sh --prepare   # here, with network: fill .gpu/ (git-ignored) with what the run needs:
#                                            # wheels (Python 3.12), SmolLM2's tokenizer, MiniLM's config and
#                                            # tokenizer, the WildChat sample, 10k ShareGPT turns for mining
#   bash benchmarks/gpu_check.sh [PARTS]     # there, from the repo root with .gpu/ beside it; logs and results go
#                                            # to $OUT (default ./gpu_check_out)
#
# PARTS is a comma list of: tests (tests/test_gpu.py), modes (constrained vs freeform annotation, issue 2), mining
# (batched vs pair-by-pair MiniLM, issue 2), annotate, score, train (bench_gpu.py's throughput steps). The default,
# "tests,modes,mining", fits one 10-minute call with the machine's start; annotate/score/train were measured on
# an H100 on 2026-11-27 (benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR=.gpu
TOKENIZER=$GPU_DIR/cache/models/smollm2-135m-instruct  # where wildreward.models looks for the converted SmolLM2
MINILM=$GPU_DIR/cache/models/minilm-random               # MiniLM's files without weights; random ones made there
TURNS=$GPU_DIR/shared/data/sharegpt_turns.jsonl.gz

if [[ "${1:-}" == "--prepare" ]]; then
    PY=${PY:-.venv/bin/python}
    mkdir -p .git/info "$GPU_DIR/whl" "$TOKENIZER" "$MINILM" "$GPU_DIR/shared/data/chatlogs"
    grep -qx "/$GPU_DIR/" .git/info/exclude 2>/dev/null || echo "/$GPU_DIR/" >> .git/info/exclude
    # Versions as installed here; pydantic-core is the one compiled wheel.
    pins=()
    for name in pydantic pydantic-core annotated-types typing-inspection hjson py3langid; do
        pins+=("$name==$($PY -c "import importlib.metadata as m; print(m.version('$name'))")")
    done
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$GPU_DIR/whl" "${pins[@]}"
    # DeepSpeed ships as a source archive: build a wheel without compiled ops (they are JIT-built on the GPU).
    DS_BUILD_OPS=0 $PY -m pip wheel -q --no-deps --no-build-isolation -w "$GPU_DIR/whl" \
        "deepspeed==$($PY -c "import importlib.metadata as m; print(m.version('deepspeed'))")"
    src=$($PY -c "from wildreward.models import resolve_model; print(resolve_model('smollm2'))")
    find "$src" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} "$TOKENIZER/" \;  # no weights: tests build theirs
    src=$($PY -c "from wildreward.models import resolve_model; print(resolve_model('minilm'))")
    (cd "$src" && find . -type f \( -name '*.json' -o -name '*.txt' \) ! -name data_config.json \
        -exec cp --parents {} "$OLDPWD/$MINILM/" \;)
    cp "${WILDREWARD_SHARED:-../shared}/data/chatlogs/wildchat_sample.jsonl" "$GPU_DIR/shared/data/chatlogs/"
    HF_HUB_OFFLINE=1 $PY benchmarks/bench_mining.py --write-turns "$TURNS"
    du -sh "$GPU_DIR"
    exit 0
fi

PARTS=",${1:-tests,modes,mining},"
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$GPU_DIR"/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export WILDREWARD_CACHE=$PWD/$GPU_DIR/cache WILDREWARD_SHARED=$PWD/$GPU_DIR/shared
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
status=0
if [[ $PARTS == *,tests,* ]]; then
    timeout 240 python3 -m pytest tests/test_gpu.py -p no:cacheprovider -rA --timeout 200 2>&1 | tee "$OUT/tests.log" || status=1
fi
steps=$(echo "$PARTS" | tr ',' '\n' | grep -xE 'annotate|score|train|modes' | paste -sd, - || true)
if [[ -n $steps ]]; then
    name=bench_gpu_${steps//,/_}
    timeout 330 python3 benchmarks/bench_gpu.py --tokenizer "$TOKENIZER" --only "$steps" --name "$name" 2>&1 \
        | tee "$OUT/bench_gpu.log" || status=1
    cp benchmarks/results/"$name".* "$OUT/" 2>/dev/null || true
fi
if [[ $PARTS == *,mining,* ]]; then
    python3 -c "import sys; from transformers import BertConfig, BertModel; \
BertModel(BertConfig.from_pretrained(sys.argv[1])).save_pretrained(sys.argv[1])" "$MINILM"  # random weights
    timeout 180 python3 benchmarks/bench_mining.py --turns-file "$TURNS" --encoder "$MINILM" --batch-tokens 65536 \
        --name bench_mining_gpu 2>&1 | tee "$OUT/bench_mining.log" || status=1
    cp benchmarks/results/bench_mining_gpu.* "$OUT/" 2>/dev/null || true
fi
exit $status
