"""One GPU, the library's own code, real WildChat input: how fast the three model-heavy steps run.

- annotate: ``HFBackend`` in constrained mode (one prefill per row, logits of the last position only) on the real
  feedback prompts -> rows/s, prompt tokens/s, MFU. This is the per-actor figure of ``capacity_model.py``, for the
  transformers backend (vLLM, not installable on the GPU machine, would batch better).
- score: ``RewardModel`` in bf16 (length-sorted batches of at most 16k padded tokens) on real (history, query,
  response) turns at max_length 4096 -> rows/s for one Serve replica or eval actor.
- train: ``DeepSpeedEngine`` ZeRO-2 bf16 with DeepSpeed's fused Adam, ordinal loss, length-grouped micro-batches,
  gradient checkpointing -> tokens/s, MFU, peak GPU memory.
- modes: ``FeedbackAnnotator`` constrained vs freeform on one loaded ``HFBackend`` and the same real turns (issue
  2's ratio, target >= 10x). Random weights would rarely stop early, so every freeform row is made to generate
  exactly N tokens (``min_new_tokens``), for each N of ``--freeform-tokens``: the ratio is reported per output
  length. The paper's prompt asks for one or two sentences then ``[[n]]`` (about 40-80 tokens); 256 is our CPU
  benchmark's budget.

The hub is unreachable, so the weights are random; speed does not depend on their values. The shapes are real:
Qwen3-4B (the paper's WildReward-4B base) for annotate and score, Qwen3-1.7B for train (4B full fine-tuning with
fp32 Adam states needs more than one 80 GB card without offload). The vocabulary is SmolLM2's (49k, the tokenizer
we carry) instead of Qwen's 152k, which leaves the per-token cost within a few percent.

MFU counts 2·N FLOPs per token and layer-wise causal attention (2·T²·d per layer) for a forward pass, three times
that for a training step, against the card's dense bf16 peak (989 TFLOP/s for H100/H200 SXM).

Run on a GPU machine: ``python benchmarks/bench_gpu.py --tokenizer DIR`` (``benchmarks/gpu_check.sh`` does it);
``--shape tiny --device cpu`` is a dry run of every step on a CPU.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.common import kept_turns, timed, write_results  # noqa: E402
from wildreward.testing.fake_cluster import free_port  # noqa: E402

PEAK_BF16_TFLOPS = 989.0
SHAPES = {  # Qwen3 sizes: hidden, layers, MLP, query heads, KV heads (head_dim 128)
    "qwen3-4b": dict(hidden_size=2560, num_hidden_layers=36, intermediate_size=9728, num_attention_heads=32,
                     num_key_value_heads=8),
    "qwen3-0.6b": dict(hidden_size=1024, num_hidden_layers=28, intermediate_size=3072, num_attention_heads=16,
                       num_key_value_heads=8),
    "qwen3-1.7b": dict(hidden_size=2048, num_hidden_layers=28, intermediate_size=6144, num_attention_heads=16,
                       num_key_value_heads=8),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, intermediate_size=256, num_attention_heads=2,
                 num_key_value_heads=1),
}
SHARED = Path(os.environ.get("WILDREWARD_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def qwen3_config(shape: str, tok, num_labels: int):
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=len(tok), head_dim=128 if shape != "tiny" else 64, max_position_embeddings=8192,
                       tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, num_labels=num_labels,
                       problem_type="multi_label_classification", **SHAPES[shape])


def flops_per_token(config, tokens: int, passes: int = 1) -> float:
    """Matrix FLOPs of a forward pass per token at sequence length ``tokens`` (x3 for forward+backward)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    attn_width = config.num_attention_heads * config.head_dim
    kv_width = config.num_key_value_heads * config.head_dim
    per_layer = 2 * h * (2 * attn_width + 2 * kv_width) + 2 * 3 * h * config.intermediate_size
    attention = 2 * tokens * attn_width  # QK^T and AV, causal: half of 2 x 2·T·d per token
    return passes * layers * (per_layer + attention)  # the (last-position) vocabulary projection is negligible


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build_rm_dir(shape: str, tok, out: Path, device: str) -> tuple[Path, object]:
    """A random Qwen3-shaped reward model saved the way training exports it; its ``model.*`` weights also load as
    a causal LM (tied embeddings), so the annotator reads the same folder."""
    from transformers import AutoModelForSequenceClassification

    from wildreward.rm import OrdinalRewardModel, save_reward_model

    config = qwen3_config(shape, tok, num_labels=4)
    with torch.device(device):
        net = AutoModelForSequenceClassification.from_config(config, dtype=torch.bfloat16)
    save_reward_model(OrdinalRewardModel(net.eval(), "independent", 5), tok, out, max_length=4096,
                      truncation="middle")
    del net
    if device == "cuda":
        torch.cuda.empty_cache()
    return out, config


def bench_annotate(model_dir: Path, config, turns: list[dict], batch_sizes: list[int], device: str) -> list[dict]:
    from wildreward.extract.annotate import RATINGS, build_feedback_prompt
    from wildreward.extract.backends import HFBackend, render_prompts
    from wildreward.extract.config import AnnotatorConfig

    prompts = [build_feedback_prompt(t, "constrained", 4000) for t in turns]
    out = []
    backend = None
    for bs in batch_sizes:
        cfg = AnnotatorConfig(model=str(model_dir), batch_size=bs, batch_tokens=1 << 20)  # rows alone set the size
        if backend is None:
            backend = HFBackend(cfg, RATINGS)
        backend.cfg = cfg  # same weights, another batch size
        lengths = [len(ids) for ids in render_prompts(backend.tokenizer, prompts)]
        backend.choice_probs(prompts[:2 * bs], RATINGS)  # warm-up: kernels, allocator
        sync(device)
        start = time.perf_counter()
        results = backend.choice_probs(prompts, RATINGS)
        sync(device)
        wall = time.perf_counter() - start
        errors = sum(r.error is not None for r in results)
        flops = sum(n * flops_per_token(config, n) for n in lengths)
        out.append({"batch_size": bs, "rows": len(prompts), "errors": errors, "wall_s": round(wall, 2),
                    "rows_per_s": round(len(prompts) / wall, 2), "prompt_tokens_per_s": round(sum(lengths) / wall),
                    "mean_prompt_tokens": round(sum(lengths) / len(lengths), 1),
                    "mfu": round(flops / wall / (PEAK_BF16_TFLOPS * 1e12), 4)})
        print("annotate", out[-1], flush=True)
    del backend
    return out


def bench_score(model_dir: Path, config, turns: list[dict], device: str) -> dict:
    from wildreward.rm import RewardModel

    rm = RewardModel(model_dir, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    examples = [{"history": t["history"], "query": t["query"], "response": t["response"]} for t in turns]
    texts = rm.texts(examples)
    lengths = [len(ids) for ids in rm.tokenizer(texts, verbose=False)["input_ids"]]
    rm.logits_for_texts(texts[:16])
    sync(device)
    start = time.perf_counter()
    logits = rm.logits_for_texts(texts)
    sync(device)
    wall = time.perf_counter() - start
    flops = sum(n * flops_per_token(config, n) for n in lengths)
    result = {"rows": len(texts), "finite": bool(torch.isfinite(logits).all()), "wall_s": round(wall, 2),
              "rows_per_s": round(len(texts) / wall, 2), "tokens_per_s": round(sum(lengths) / wall),
              "mean_tokens": round(sum(lengths) / len(lengths), 1), "max_tokens": max(lengths),
              "mfu": round(flops / wall / (PEAK_BF16_TFLOPS * 1e12), 4)}
    print("score", result, flush=True)
    return result


def bench_train(shape: str, tok, turns: list[dict], micro_batch: int, steps: int, checkpointing: bool,
                device: str) -> dict:
    import numpy as np
    import torch.distributed as dist
    from transformers import AutoModelForSequenceClassification

    from wildreward.rm import OrdinalRewardModel
    from wildreward.train.config import DistConfig, OptimConfig
    from wildreward.train.data import collate, encode_rows, group_by_length
    from wildreward.train.engine import build_engine, train_micro_batch

    rng = random.Random(0)
    rows = [{**t, "label": rng.randint(1, 4)} for t in turns]  # labels do not change the cost
    encoded = encode_rows(rows, tok, max_length=4096, truncation="middle")
    batches = [collate([encoded[i] for i in b], tok.pad_token_id)
               for b in group_by_length([len(e["input_ids"]) for e in encoded], micro_batch, np.random.default_rng(0))]
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"})
    config = qwen3_config(shape, tok, num_labels=3)
    with torch.device(device):
        net = AutoModelForSequenceClassification.from_config(config)
    if checkpointing:
        net.gradient_checkpointing_enable()
    gpu = device == "cuda"
    engine = build_engine(OrdinalRewardModel(net, "independent", 4),
                          DistConfig(num_workers=1, use_gpu=gpu, strategy="deepspeed", zero_stage=2,
                                     precision="bf16"),
                          OptimConfig(lr=1e-5), micro_batch=micro_batch, grad_accum=1, total_steps=steps + 3,
                          device=torch.device(device))
    warmup = 3
    for batch in batches[:warmup]:
        train_micro_batch(engine, batch)
    sync(device)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    timed_batches = batches[warmup:warmup + steps]
    start = time.perf_counter()
    losses = [train_micro_batch(engine, batch)[0] for batch in timed_batches]
    sync(device)
    wall = time.perf_counter() - start
    real = sum(b["real_tokens"] for b in timed_batches)
    padded = sum(b["padded_tokens"] for b in timed_batches)
    flops = sum(b["input_ids"].shape[0] * b["input_ids"].shape[1] *
                flops_per_token(config, b["input_ids"].shape[1], passes=3) for b in timed_batches)
    result = {"shape": shape, "params_b": round(sum(p.numel() for p in net.parameters()) / 1e9, 3),
              "optimizer": type(engine.engine.basic_optimizer).__name__, "micro_batch": micro_batch,
              "gradient_checkpointing": checkpointing,
              "steps": len(timed_batches), "rows_per_s": round(micro_batch * len(timed_batches) / wall, 2),
              "real_tokens_per_s": round(real / wall), "padding_efficiency": round(real / padded, 3),
              "mfu": round(flops / wall / (PEAK_BF16_TFLOPS * 1e12), 4), "loss_finite": all(map(np.isfinite, losses)),
              "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if gpu else None}
    print("train", result, flush=True)
    dist.destroy_process_group()
    return result


def bench_modes(model_dir: Path, turns: list[dict], batch_size: int, lengths: list[int], device: str) -> dict:
    from wildreward.extract.annotate import RATINGS, FeedbackAnnotator
    from wildreward.extract.backends import HFBackend
    from wildreward.extract.config import AnnotatorConfig

    cfg = AnnotatorConfig(model=str(model_dir), batch_size=batch_size, batch_tokens=1 << 20, mode="constrained")
    backend = HFBackend(cfg, RATINGS)

    def run(annotator) -> tuple[float, int]:
        annotator(turns[:batch_size])  # warm-up at the timed batch size
        sync(device)
        start = time.perf_counter()
        out = annotator(turns)
        sync(device)
        errors = sum(r["label"] is None and not (r["error"] or "").startswith("unparseable") for r in out)
        return time.perf_counter() - start, errors

    wall, errors = run(FeedbackAnnotator(cfg, backend))
    result = {"rows": len(turns), "batch_size": batch_size, "constrained": {
        "wall_s": round(wall, 2), "rows_per_s": round(len(turns) / wall, 2), "errors": errors}, "freeform": []}
    print("modes constrained", result["constrained"], flush=True)
    for n in lengths:
        backend.cfg = cfg.model_copy(update={"mode": "freeform", "max_tokens": n})  # generate() reads its budget
        backend.model.generation_config.min_new_tokens = n  # so every row generates exactly n tokens
        free_wall, free_errors = run(FeedbackAnnotator(backend.cfg, backend))
        result["freeform"].append({"new_tokens": n, "wall_s": round(free_wall, 2),
                                   "rows_per_s": round(len(turns) / free_wall, 2), "errors": free_errors,
                                   "ratio": round(free_wall / wall, 2)})
        print("modes freeform", result["freeform"][-1], flush=True)
    backend.model.generation_config.min_new_tokens = None
    return result


def render(results: dict) -> str:
    lines = [f"Device: {results['device']}. Weights random, shapes real (see bench_gpu.py); WildChat sample input.",
             "", "| step | setting | rows/s | tokens/s | MFU |", "| --- | --- | ---: | ---: | ---: |"]
    for r in results.get("annotate", []):
        lines.append(f"| annotate (HFBackend, constrained) | {results['shape']}, batch {r['batch_size']}, "
                     f"{r['mean_prompt_tokens']} tokens/prompt | {r['rows_per_s']} | {r['prompt_tokens_per_s']} | "
                     f"{r['mfu']:.1%} |")
    if "score" in results:
        r = results["score"]
        lines.append(f"| score (RewardModel bf16) | {results['shape']}, max_length 4096, {r['mean_tokens']} "
                     f"tokens/row | {r['rows_per_s']} | {r['tokens_per_s']} | {r['mfu']:.1%} |")
    if "train" in results:
        r = results["train"]
        ckpt = "on" if r["gradient_checkpointing"] else "off"
        lines.append(f"| train (ZeRO-2 bf16, {r['optimizer']}) | {r['shape']} ({r['params_b']}B), micro-batch "
                     f"{r['micro_batch']}, grad. checkpointing {ckpt} | {r['rows_per_s']} | "
                     f"{r['real_tokens_per_s']} | {r['mfu']:.1%} |")
        lines += ["", f"Train: padding efficiency {r['padding_efficiency']}, peak GPU memory "
                      f"{r['peak_gpu_memory_gb']} GB."]
    if "modes" in results:
        r = results["modes"]
        c = r["constrained"]
        lines += ["", f"Constrained vs freeform (`FeedbackAnnotator`, HFBackend, {results['shape']}, {r['rows']} real "
                      f"turns, batch {r['batch_size']}); constrained {c['rows_per_s']} rows/s:", "",
                  "| freeform tokens per row | freeform rows/s | constrained / freeform | target >= 10x |",
                  "| ---: | ---: | ---: | --- |"]
        for f in r["freeform"]:
            lines.append(f"| {f['new_tokens']} | {f['rows_per_s']} | {f['ratio']}x | "
                         f"{'met' if f['ratio'] >= 10 else 'missed'} |")
    lines += ["", "Phase times (s): " + ", ".join(f"{k} {v}" for k, v in results["times_s"].items())]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", required=True, help="a tokenizer folder (SmolLM2's; the model dirs copy it)")
    p.add_argument("--sample", default=str(SHARED / "data" / "chatlogs" / "wildchat_sample.jsonl"))
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--shape", choices=["paper", "tiny"], default="paper")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-sizes", default="8,32")
    p.add_argument("--train-micro-batch", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=12)
    p.add_argument("--train-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--work-dir", default="/tmp/bench_gpu")
    p.add_argument("--name", help="results/<name>.json/.md (default: bench_gpu, or bench_gpu_dry_run for --shape tiny)")
    p.add_argument("--modes-rows", type=int, default=200, help="turns annotated by each mode")
    p.add_argument("--modes-batch-size", type=int, default=16)
    p.add_argument("--freeform-tokens", default="64,256", help="freeform output lengths, one timed run each")
    p.add_argument("--only", default="annotate,score,train,modes")
    args = p.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    turns = kept_turns(args.sample, args.rows)
    big, train_shape = ("qwen3-4b", "qwen3-1.7b") if args.shape == "paper" else ("tiny", "tiny")
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    results: dict = {"device": device_name, "shape": big, "rows": len(turns), "times_s": {}}
    only = args.only.split(",")
    times = results["times_s"]
    if {"annotate", "score", "modes"} & set(only):
        with timed(times, "build_and_save_model"):
            model_dir, config = build_rm_dir(big, tok, Path(args.work_dir) / big, args.device)
        if "annotate" in only:
            with timed(times, "annotate"):
                results["annotate"] = bench_annotate(model_dir, config, turns,
                                                     [int(b) for b in args.batch_sizes.split(",")], args.device)
        if "score" in only:
            with timed(times, "score"):
                results["score"] = bench_score(model_dir, config, turns, args.device)
        if "modes" in only:
            with timed(times, "modes"):
                results["modes"] = bench_modes(model_dir, turns[:args.modes_rows], args.modes_batch_size,
                                               [int(n) for n in args.freeform_tokens.split(",")], args.device)
    if "train" in only:
        with timed(times, "train"):
            results["train"] = bench_train(train_shape, tok, turns, args.train_micro_batch, args.train_steps,
                                           args.train_checkpointing, args.device)
    name = args.name or ("bench_gpu" if args.shape == "paper" else "bench_gpu_dry_run")
    print(write_results(name, results, render(results)))


if __name__ == "__main__":
    main()
