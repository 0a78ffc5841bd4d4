"""The GPU paths, without Ray: what only a CUDA device shows (bf16 on the card, NCCL, DeepSpeed's JIT-built fused
Adam, models and batches landing on the device). Ray Train, Serve and Data wire these same objects together and are
tested on CPU in the rest of the suite. CI has no GPU, so these skip there; ``benchmarks/gpu_check.sh`` runs them on
a GPU machine together with ``benchmarks/bench_gpu.py``.
"""
import pytest
import torch

from wildreward.testing.fake_cluster import free_port
from tests.conftest import write_toy_rm_data

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
DEVICE = "cuda"

EXAMPLES = [
    {"history": [], "query": "What is the capital of France?", "response": "Paris."},
    {"history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
     "query": "Write a haiku about rain.",
     "response": "Soft rain on the roof,\nthe gutters hum a low song,\nsleep comes."},
    {"history": [], "query": "Fix my code: print(1/0)", "response": "Division by zero raises ZeroDivisionError."},
    # longer than the model's max_length: truncated on the device path exactly as on CPU
    {"history": [{"role": "user", "content": "context " * 400}, {"role": "assistant", "content": "ok " * 300}],
     "query": "Summarise the above. " * 20, "response": "A summary. " * 50},
]


@pytest.fixture(scope="module")
def decoder_rm(tiny_lm, tmp_path_factory) -> str:
    """An exported reward model on the tiny Llama (last-token pooling, as Qwen/Llama RMs on GPU clusters), with a
    score head large enough that scores spread over the range."""
    from wildreward.rm import build_model, save_reward_model

    torch.manual_seed(0)
    model, tok = build_model(tiny_lm, "independent", 5)
    torch.nn.init.normal_(model.backbone.score.weight, std=0.2)
    return str(save_reward_model(model.eval(), tok, tmp_path_factory.mktemp("rm"), max_length=384,
                                 truncation="middle"))


def toy_micro_batches(tokenizer, tmp_path, micro_batch: int) -> list[dict]:
    import pyarrow.parquet as pq

    from wildreward.train.data import collate, encode_rows

    rows = pq.read_table(write_toy_rm_data(tmp_path, train_rows=64, test_rows=8) / "train").to_pylist()
    encoded = encode_rows(rows, tokenizer, max_length=256, truncation="middle")
    return [collate(encoded[i:i + micro_batch], tokenizer.pad_token_id) for i in range(0, len(encoded), micro_batch)]


def train_and_measure(engine, batches, epochs: int) -> tuple[float, float]:
    """Mean loss of the first and of the last epoch over fixed micro-batches."""
    from wildreward.train.engine import train_micro_batch

    means = []
    for _ in range(epochs):
        means.append(sum(train_micro_batch(engine, b)[0] for b in batches) / len(batches))
    return means[0], means[-1]


def test_reward_model_scores_in_bf16_on_gpu_as_in_fp32_on_cpu(decoder_rm):
    from wildreward.rm import RewardModel

    cpu = RewardModel(decoder_rm).score(EXAMPLES)
    rm = RewardModel(decoder_rm, device=DEVICE, dtype=torch.bfloat16)
    weight = next(rm.model.parameters())
    assert weight.device.type == "cuda" and weight.dtype == torch.bfloat16
    gpu = rm.score(EXAMPLES)
    assert all(1.0 <= s <= 5.0 for s in gpu)
    assert max(cpu) - min(cpu) > 0.2, "the fixture should give distinct scores"
    assert max(abs(a - b) for a, b in zip(cpu, gpu)) < 0.1, (cpu, gpu)


def test_ddp_engine_learns_in_bf16_autocast_on_gpu(tiny_lm, tmp_path, monkeypatch):
    from wildreward import ray_compat as rc
    from wildreward.rm import build_model
    from wildreward.train.config import DistConfig, OptimConfig
    from wildreward.train.engine import build_engine

    # One worker without Ray: Ray Train's prepare_model would only move the model to the worker's device.
    monkeypatch.setattr(rc, "prepare_ddp_model", lambda model: model.to(DEVICE))
    torch.manual_seed(0)
    model, tok = build_model(tiny_lm, "independent", 4)
    batches = toy_micro_batches(tok, tmp_path, micro_batch=16)
    engine = build_engine(model, DistConfig(num_workers=1, use_gpu=True, strategy="ddp", precision="bf16"),
                          OptimConfig(lr=1e-3, warmup_ratio=0.0, schedule="constant"), micro_batch=16, grad_accum=2,
                          total_steps=100, device=torch.device(DEVICE))
    first, last = train_and_measure(engine, batches, epochs=25)
    assert last < 0.5 * first, (first, last)
    logits = engine.eval_logits(batches[0])
    assert logits.device.type == "cpu" and logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_deepspeed_zero2_bf16_trains_with_fused_adam_on_gpu(tiny_lm, tmp_path, monkeypatch):
    pytest.importorskip("deepspeed")
    import torch.distributed as dist

    from wildreward.rm import build_model
    from wildreward.train.config import DistConfig, OptimConfig, TrainConfig
    from wildreward.train.engine import build_engine, consolidated_state_dict

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    torch.cuda.set_device(0)
    dist_cfg = DistConfig(num_workers=1, use_gpu=True, strategy="deepspeed", zero_stage=2, precision="bf16")
    torch.manual_seed(0)
    model, tok = build_model(tiny_lm, "independent", 4)
    batches = toy_micro_batches(tok, tmp_path, micro_batch=16)
    try:
        engine = build_engine(model, dist_cfg, OptimConfig(lr=1e-3, warmup_ratio=0.0, schedule="constant"),
                              micro_batch=16, grad_accum=2, total_steps=100, device=torch.device(DEVICE))
        assert dist.get_backend() == "nccl"
        # On a GPU the config asks for DeepSpeed's own CUDA Adam (torch_adam off), compiled on first use.
        assert type(engine.engine.basic_optimizer).__name__ == "FusedAdam"
        first, last = train_and_measure(engine, batches, epochs=25)
        assert last < 0.5 * first, (first, last)
        engine.save(tmp_path / "ckpt", {"step": 1})
        cfg = TrainConfig(dist=dist_cfg, batch={"global_batch_size": 32, "micro_batch_size": 16})
        master = consolidated_state_dict(tmp_path / "ckpt", cfg)
        live = engine.full_state_dict()
        assert live.keys() == master.keys()
        for name, tensor in live.items():  # bf16 weights on the device vs the fp32 master copy on disk
            torch.testing.assert_close(tensor.float(), master[name], atol=1e-2, rtol=1e-2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_rollout_on_gpu_feeds_dpo_log_probs(tiny_lm):
    from wildreward.dpo.loop import encode_pairs
    from wildreward.dpo.loss import dpo_loss, sequence_logps
    from wildreward.dpo.rollout import RolloutEngine

    engine = RolloutEngine(tiny_lm, "hf", max_prompt_tokens=64, max_response_tokens=12, use_chat_template=True, seed=0)
    assert engine.model.device.type == "cuda"
    prompts = [{"id": "p0", "messages": [{"role": "user", "content": "Name a colour."}]},
               {"id": "p1", "messages": [{"role": "user", "content": "What is 2+2? Answer briefly."}]}]
    samples = engine.generate(prompts, n=2, temperature=1.0, top_p=1.0)
    assert [(s["prompt_id"], s["sample_index"]) for s in samples] == [("p0", 0), ("p0", 1), ("p1", 0), ("p1", 1)]
    assert all(1 <= len(s["response_ids"]) <= 12 for s in samples)

    # New weights from the (CPU) trainer land on the GPU engine.
    state = {k: v.detach().cpu() * 1.01 for k, v in engine.model.state_dict().items()}
    assert engine.load_weights(state) == len(state)
    name, tensor = next(iter(engine.model.state_dict().items()))
    assert tensor.device.type == "cuda" and torch.equal(tensor.cpu(), state[name])

    pairs = [{"prompt_ids": samples[i]["prompt_ids"], "chosen_ids": samples[i]["response_ids"],
              "rejected_ids": samples[i + 1]["response_ids"]} for i in (0, 2)]
    batch = encode_pairs(pairs, engine.tokenizer.pad_token_id)
    cpu_model = engine.model.to("cpu").float()
    with torch.no_grad():
        expected = sequence_logps(cpu_model, **batch)
    policy = cpu_model.to(DEVICE)
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    logps = sequence_logps(policy, **batch)
    torch.testing.assert_close(logps.detach().cpu(), expected, atol=1e-3, rtol=1e-4)
    loss, metrics = dpo_loss(logps[:2], logps[2:], logps[:2].detach(), logps[2:].detach(), beta=0.1)
    assert abs(loss.item() - 0.6931) < 1e-3 and metrics["reward_margin"] == 0.0  # policy == reference: log 2
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(g.device.type == "cuda" and torch.isfinite(g).all() for g in grads)


def test_hf_annotator_rates_in_bf16_on_gpu(tiny_lm):
    from wildreward.extract.annotate import RATINGS
    from wildreward.extract.backends import HFBackend
    from wildreward.extract.config import AnnotatorConfig

    backend = HFBackend(AnnotatorConfig(model=tiny_lm, batch_size=2, max_tokens=8), RATINGS)
    weight = next(backend.model.parameters())
    assert backend.device == "cuda" and weight.device.type == "cuda" and weight.dtype == torch.bfloat16
    conversations = [[{"role": "user", "content": f"Rate turn {i}: " + "word " * (5 + 40 * i)}] for i in range(4)]
    conversations.append([{"role": "user", "content": "long " * 5000}])  # over the 4096-token context
    results = backend.choice_probs(conversations, RATINGS)
    assert "prompt too long" in results[-1].error
    for result in results[:-1]:
        assert result.error is None and len(result.probs) == 5 and abs(sum(result.probs) - 1.0) < 1e-3
    texts = backend.generate(conversations[:2])
    assert all(r.error is None and isinstance(r.text, str) for r in texts)
