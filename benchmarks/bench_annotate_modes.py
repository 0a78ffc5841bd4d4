"""Constrained vs freeform feedback annotation: same model, same real turns.

Compared: ``FeedbackAnnotator`` in ``constrained`` mode (one forward pass, label = argmax of the next-token
distribution over "1".."5") against ``freeform`` mode (the paper's way: the model reasons, then ``[[n]]`` is parsed),
both on the SAME model (default SmolLM2-135M-Instruct, ``annotator.model=smollm2``) and the SAME N real turns: the
first N turns of ``wildchat_sample.jsonl`` that pass the paper's rule filters (read, turns and filters of
``wildreward.extract``).

Reported: rows/s of each mode (model load and a one-batch warm-up excluded; by default both modes share ONE
loaded backend, so one vLLM engine serves both), their ratio (target: constrained >= 10x freeform), the freeform
parse rate, label agreement on rows where both modes gave a label, and each mode's label distribution. Rows are fed
in chunks of ``--batch-size`` (the pipeline's ``annotator.batch_size``, default 8), as a Ray Data actor would get
them. Between the two modes the vLLM prefix cache is reset, so freeform does not reuse the constrained prompts' KV
cache.

``--freeform-backend`` runs freeform on another backend (its own loaded model): on CPUs the fastest backend differs
by mode (transformers for one forward pass, vLLM for decoding), and a user picks the best one for the mode they run.

Run (vLLM on CPU by default; ``--backend hf`` for transformers; results go to benchmarks/results/):

    HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 python benchmarks/bench_annotate_modes.py [--n 200] [--backend vllm]
        [--freeform-backend vllm|hf] [--max-field-chars 1000] [--max-tokens 256] [--batch-size 8] [--temperature 0.5]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/x.py` from the repo root

for _key, _value in {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0",
                     "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_key, _value)

WILDCHAT = (Path(os.environ.get("WILDREWARD_SHARED", Path(__file__).resolve().parents[2] / "shared"))
            / "data" / "chatlogs" / "wildchat_sample.jsonl")


def annotate_timed(annotator, rows: list[dict], batch_size: int) -> tuple[list[dict], float]:
    out, start = [], time.perf_counter()
    for i in range(0, len(rows), batch_size):
        out.extend(annotator(rows[i:i + batch_size]))
    return out, time.perf_counter() - start


def reset_prefix_cache(backend) -> bool:
    llm = getattr(backend, "llm", None)
    if llm is not None and hasattr(llm, "reset_prefix_cache"):
        llm.reset_prefix_cache()
        return True
    return False


def distribution(results: list[dict]) -> dict:
    counts = Counter(str(r["label"]) if r["label"] is not None else "none" for r in results)
    return dict(sorted(counts.items()))


def cohen_kappa(a: list[int], b: list[int]) -> float | None:
    if not a:
        return None
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    return None if expected == 1 else round((observed - expected) / (1 - expected), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="real turns annotated by each mode")
    parser.add_argument("--backend", choices=["vllm", "hf"], default="vllm")
    parser.add_argument("--freeform-backend", choices=["vllm", "hf"], help="default: the same as --backend")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-field-chars", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=256, help="freeform generation budget")
    parser.add_argument("--temperature", type=float, default=0.5, help="freeform sampling temperature (paper 0.5)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per annotator call (annotator.batch_size)")
    parser.add_argument("--data", type=Path, default=WILDCHAT)
    parser.add_argument("--name", default="bench_annotate_modes", help="results/<name>.json/.md")
    args = parser.parse_args()

    from benchmarks.common import kept_turns, timed, write_results
    from wildreward.extract.annotate import RATINGS, FeedbackAnnotator
    from wildreward.extract.backends import make_backend
    from wildreward.extract.config import AnnotatorConfig

    load_before = os.getloadavg()
    rows = kept_turns(str(args.data), args.n)
    print(f"[bench] {len(rows)} real turns from {args.data}", flush=True)
    cfg = AnnotatorConfig(backend=args.backend, model=args.model, mode="constrained", batch_size=args.batch_size,
                          max_field_chars=args.max_field_chars, max_tokens=args.max_tokens,
                          temperature=args.temperature)
    free_cfg = cfg.model_copy(update={"mode": "freeform", "backend": args.freeform_backend or args.backend})
    backends = {"constrained": cfg.backend, "freeform": free_cfg.backend}
    timings: dict = {}
    with timed(timings, "model_load_s"):
        backend = make_backend(cfg, RATINGS)  # one engine / model for both modes, unless --freeform-backend differs
        free_backend = backend if free_cfg.backend == cfg.backend else make_backend(free_cfg, RATINGS)
    annotators = {"constrained": FeedbackAnnotator(cfg, backend), "freeform": FeedbackAnnotator(free_cfg, free_backend)}

    results, seconds, loads, cache_reset = {}, {}, {}, False
    for mode, annotator in annotators.items():
        cache_reset = reset_prefix_cache(annotator.backend) or cache_reset
        annotator(rows[:1])  # warm-up (kernels, allocator); not timed
        cache_reset = reset_prefix_cache(annotator.backend) or cache_reset
        print(f"[bench] {mode}: annotating {len(rows)} rows", flush=True)
        results[mode], seconds[mode] = annotate_timed(annotator, rows, args.batch_size)
        print(f"[bench] {mode}: {seconds[mode]:.1f} s", flush=True)
        loads[mode] = [round(x, 2) for x in os.getloadavg()]  # at the end of each mode
    load_after = os.getloadavg()

    rate = {mode: len(rows) / seconds[mode] for mode in results}
    ratio = rate["constrained"] / rate["freeform"]
    free = results["freeform"]
    parsed = sum(r["label"] is not None for r in free)
    backend_errors = sum(r["error"] is not None and not r["error"].startswith("unparseable") for r in free)
    both = [(c["label"], f["label"]) for c, f in zip(results["constrained"], free)
            if c["label"] is not None and f["label"] is not None]
    agree = sum(c == f for c, f in both)
    out = {
        "config": {"n": len(rows), "backend": backends, "model": args.model,
                   "max_field_chars": args.max_field_chars, "freeform_max_tokens": args.max_tokens,
                   "freeform_temperature": args.temperature, "batch_size": args.batch_size,
                   "data": str(args.data), "prefix_cache_reset_between_modes": cache_reset},
        **timings,
        "seconds": {m: round(s, 2) for m, s in seconds.items()},
        "rows_per_s": {m: round(r, 3) for m, r in rate.items()},
        "throughput_ratio": round(ratio, 2), "target_ratio": 10, "target_met": ratio >= 10,
        "freeform_parse_rate": round(parsed / len(rows), 4), "freeform_parsed": parsed,
        "freeform_backend_errors": backend_errors,
        "constrained_errors": sum(r["error"] is not None for r in results["constrained"]),
        "agreement": {"rows_both_labelled": len(both), "agree": agree,
                      "rate": round(agree / len(both), 4) if both else None,
                      "cohen_kappa": cohen_kappa([c for c, _ in both], [f for _, f in both])},
        "label_distribution": {m: distribution(r) for m, r in results.items()},
        "freeform_examples": [r["annotation"] for r in free[:3]],
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after_each_mode": loads,
        "loadavg_after": [round(x, 2) for x in load_after],
    }
    dist = out["label_distribution"]
    labels = ["1", "2", "3", "4", "5", "none"]
    on_backends = (f"both modes on one loaded `{cfg.backend}` backend" if free_backend is backend else
                   f"constrained on `{cfg.backend}`, freeform on `{free_cfg.backend}`")
    md = f"""
Constrained vs freeform `FeedbackAnnotator`, {args.model}, {on_backends}, the first {len(rows)} rule-filtered
turns of `{args.data.name}`; max_field_chars={args.max_field_chars},
freeform max_tokens={args.max_tokens}, temperature={args.temperature}, {args.batch_size} rows per call. Model load
({out['model_load_s']} s) and a one-row warm-up are not timed.

| mode | backend | seconds | rows/s |
|---|---|---|---|
| constrained | {backends['constrained']} | {seconds['constrained']:.1f} | {rate['constrained']:.3f} |
| freeform | {backends['freeform']} | {seconds['freeform']:.1f} | {rate['freeform']:.3f} |

**Throughput ratio constrained/freeform: {ratio:.1f}x** (target >= 10x: {'met' if ratio >= 10 else 'missed'}).

Freeform parse rate: {parsed}/{len(rows)} = {parsed / len(rows):.1%} ({backend_errors} backend errors).
Agreement where both modes gave a label: {agree}/{len(both)}
({(agree / len(both)) if both else float('nan'):.1%}; Cohen's kappa {out['agreement']['cohen_kappa']}).

| label | {' | '.join(labels)} |
|---|{'---|' * len(labels)}
| constrained | {' | '.join(str(dist['constrained'].get(k, 0)) for k in labels)} |
| freeform | {' | '.join(str(dist['freeform'].get(k, 0)) for k in labels)} |

Load average (1/5/15 min) before {out['loadavg_before']}, at the end of each mode {loads} on {os.cpu_count()} CPUs
(the machine is shared: a load above the CPU count slows both modes and adds noise to the ratio).
"""
    path = write_results(args.name, out, md)
    print(md)
    print(f"[bench] wrote {path}")


if __name__ == "__main__":  # vLLM on CPU spawns its EngineCore by re-importing this module
    main()
