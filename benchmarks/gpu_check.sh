#!/usr/bin/env bash
# The GPU checks in one run: tests/test_gpu.py, then benchmarks/bench_gpu.py, on a GPU machine without network whose
# Python already has CUDA torch and transformers (but not Ray, pydantic or DeepSpeed).
#
#   bash benchmarks/gpu_check.sh --prepare   # here, with network: fill .gpu/ (git-ignored) with what the run needs:
#                                            # wheels (Python 3.12), SmolLM2's tokenizer, the WildChat sample
#   bash benchmarks/gpu_check.sh             # there, from the repo root with .gpu/ beside it; logs and results go
#                                            # to $OUT (default ./gpu_check_out)
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR=.gpu
TOKENIZER=$GPU_DIR/cache/models/smollm2-135m-instruct  # where wildreward.models looks for the converted SmolLM2

if [[ "${1:-}" == "--prepare" ]]; then
    PY=${PY:-.venv/bin/python}
    mkdir -p .git/info "$GPU_DIR/whl" "$TOKENIZER" "$GPU_DIR/shared/data/chatlogs"
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
    cp "${WILDREWARD_SHARED:-../shared}/data/chatlogs/wildchat_sample.jsonl" "$GPU_DIR/shared/data/chatlogs/"
    du -sh "$GPU_DIR"
    exit 0
fi

OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$GPU_DIR"/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export WILDREWARD_CACHE=$PWD/$GPU_DIR/cache WILDREWARD_SHARED=$PWD/$GPU_DIR/shared
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
status=0
timeout 240 python3 -m pytest tests/test_gpu.py -p no:cacheprovider -rA --timeout 200 2>&1 | tee "$OUT/tests.log" || status=1
timeout 300 python3 benchmarks/bench_gpu.py --tokenizer "$TOKENIZER" 2>&1 | tee "$OUT/bench.log" || status=1
cp benchmarks/results/bench_gpu.json benchmarks/results/bench_gpu.md "$OUT/" 2>/dev/null || true
exit $status
