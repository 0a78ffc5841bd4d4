"""Hindsight-mining similarity: batched ``SimilarityScorer`` vs the original's pair-by-pair encoding.

Compared, on the same MiniLM model loaded once: ``SimilarityScorer.__call__`` (every distinct feedback text encoded
once, in length-sorted chunks of at most ``--batch-tokens`` padded tokens, similarities as dot products) against
``score_pairwise`` (the original script: one ``encode`` call of the two texts per candidate pair).

Candidates come from the first ``--turns`` (default 10,000) real ShareGPT turns (``package:sharegpt`` through
``wildreward.extract.read`` and ``turns``, rule filters applied as in the pipeline, so these are the turns that
would reach mining). No annotator is involved: EVERY pair (turn i, turn i+k), 1 <= k <= ``--lookahead`` (2), of
the same conversation is a candidate. This is the worst case for mining, as if every turn were neutral and had a
positive future turn; real runs score a fraction of these pairs.

Reported: pairs/s of each, the speed ratio (target: batched >= 20x pair-by-pair) and the max |difference| of the
similarities on the pairs both scored. Pair-by-pair on all candidates would take many minutes on a small CPU, so it
is timed on a random subset of ``--pairwise-sample`` (default 1,500, >= 1,000) candidates and its rate is
extrapolated per pair; ``--pairwise-sample 0`` scores every candidate both ways.

Both run on the GPU when there is one (sentence-transformers picks it). ``benchmarks/gpu_check.sh`` runs this script
there with ``--source`` (these turns' ids and feedback texts in a turns file that ``--prepare`` writes: that machine
lacks the ShareGPT package) and ``--encoder`` (MiniLM's config and tokenizer with random weights: the real ones are
too big to carry, and speed does not depend on their values).

Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_mining.py [--turns 10000] [--pairwise-sample 1500]``;
results go to benchmarks/results/bench_mining.json and .md.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for _key, _value in {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_key, _value)


def all_pairs(turns: list[dict], lookahead: int) -> list[dict]:
    """Every (turn, turn + k) pair of a conversation, k = 1..lookahead turn indices, in the candidate format."""
    by_position = {(t["conversation_id"], t["turn_index"]): t for t in turns}
    pairs = []
    for (conv, index), turn in by_position.items():
        for k in range(1, lookahead + 1):
            future = by_position.get((conv, index + k))
            if future is not None:
                pairs.append({"id": turn["id"], "future_id": future["id"], "offset": k, "future_label": 5,
                              "text": turn["feedback"], "future_text": future["feedback"]})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--lookahead", type=int, default=2)
    parser.add_argument("--pairwise-sample", type=int, default=1500,
                        help="candidates timed pair by pair (0 = all of them)")
    parser.add_argument("--batch-tokens", type=int, default=2048, help="mining.batch_tokens (GPUs: 65536)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="package:sharegpt", help="chat logs, or a saved .turns.jsonl.gz")
    parser.add_argument("--encoder", default="minilm", help="a model alias or a sentence-transformers folder")
    parser.add_argument("--name", default="bench_mining")
    args = parser.parse_args()

    import numpy as np

    from benchmarks.common import PeakMemory, kept_turns, timed, write_results
    from wildreward.extract.mine import SimilarityScorer, score_pairwise
    from wildreward.models import resolve_model

    load_before = os.getloadavg()
    timings: dict = {}
    with timed(timings, "read_turns_s"):
        turns = kept_turns(args.source, args.turns)
    candidates = all_pairs(turns, args.lookahead)
    distinct = len({t for c in candidates for t in (c["text"], c["future_text"])})
    print(f"[bench] {len(turns)} turns -> {len(candidates)} candidate pairs ({distinct} distinct texts)", flush=True)

    with timed(timings, "model_load_s"):
        scorer = SimilarityScorer(resolve_model(args.encoder), args.batch_tokens)
    device = str(scorer.model.device)
    if device.startswith("cuda"):
        import torch
        device = torch.cuda.get_device_name(0)
    scorer([candidates[0]])                     # warm-up, not timed
    score_pairwise(scorer.model, [candidates[0]])

    with PeakMemory() as mem_batched, timed(timings, "batched_s"):
        batched = scorer(candidates)
    print(f"[bench] batched: {timings['batched_s']} s", flush=True)
    load_mid = os.getloadavg()  # the two phases may see different loads on a shared machine

    sample = args.pairwise_sample if 0 < args.pairwise_sample < len(candidates) else len(candidates)
    picked = sorted(random.Random(args.seed).sample(range(len(candidates)), sample))
    with PeakMemory() as mem_pairwise, timed(timings, "pairwise_s"):
        pairwise = score_pairwise(scorer.model, [candidates[i] for i in picked])
    print(f"[bench] pair-by-pair on {sample}: {timings['pairwise_s']} s", flush=True)
    load_after = os.getloadavg()

    batched_rate = len(candidates) / timings["batched_s"]
    pairwise_rate = sample / timings["pairwise_s"]
    ratio = batched_rate / pairwise_rate
    diff = np.abs(np.array([batched[i] for i in picked]) - np.array(pairwise))
    out = {
        "config": {"turns": len(turns), "lookahead": args.lookahead, "candidates": len(candidates),
                   "distinct_texts": distinct, "pairwise_sample": sample,
                   "pairwise_extrapolated": sample < len(candidates), "batch_tokens": args.batch_tokens,
                   "encoder": args.encoder, "source": args.source, "device": device, "seed": args.seed},
        **timings,
        "pairs_per_s": {"batched": round(batched_rate, 1), "pairwise": round(pairwise_rate, 2)},
        "pairwise_extrapolated_all_s": round(len(candidates) / pairwise_rate, 1),
        "speed_ratio": round(ratio, 2), "target_ratio": 20, "target_met": ratio >= 20,
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "peak_pss_mb": {"batched": mem_batched.peak_mb, "pairwise": mem_pairwise.peak_mb},
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_between": [round(x, 2) for x in load_mid],
        "loadavg_after": [round(x, 2) for x in load_after],
    }
    extrapolated = (f"timed on a random subset of {sample} candidates (seed {args.seed}) and extrapolated per pair "
                    f"to all {len(candidates)}: ~{out['pairwise_extrapolated_all_s']} s"
                    if sample < len(candidates) else "timed on every candidate")
    md = f"""
MiniLM similarity of hindsight-mining candidates: batched `SimilarityScorer` vs the original's pair-by-pair
`score_pairwise`, same loaded model (`{args.encoder}` on {device}). Candidates: every (turn i, turn i+k),
k <= {args.lookahead}, of the same conversation among the first {len(turns)} rule-filtered ShareGPT turns
= {len(candidates)} pairs, {distinct} distinct feedback texts (worst case: as if every turn were neutral with a
positive future).
Pair-by-pair was {extrapolated}.

| scorer | pairs | seconds | pairs/s | peak PSS (MB) |
|---|---|---|---|---|
| batched (`SimilarityScorer`) | {len(candidates)} | {timings['batched_s']} | {batched_rate:.1f} | {mem_batched.peak_mb} |
| pair-by-pair (`score_pairwise`) | {sample} | {timings['pairwise_s']} | {pairwise_rate:.2f} | {mem_pairwise.peak_mb} |

**Speed ratio: {ratio:.1f}x** (target >= 20x: {'met' if ratio >= 20 else 'missed'}).
Max |similarity difference| on the {sample} pairs both scored: {out['max_abs_diff']:.2e}
(mean {out['mean_abs_diff']:.2e}).

Load average (1/5/15 min) before {out['loadavg_before']}, between the two phases {out['loadavg_between']}, after
{out['loadavg_after']} on {os.cpu_count()} CPUs (a higher load in one phase than the other skews the ratio).
"""  # noqa: E501 (markdown table rows)
    path = write_results(args.name, out, md)
    print(md)
    print(f"[bench] wrote {path}")


if __name__ == "__main__":
    main()
