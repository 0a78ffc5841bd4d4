"""Draw the gold feedback sample and write reading sheets for the people (or agents) who label it.

    python benchmarks/make_gold_sample.py --chatlogs ../shared/data/chatlogs --out /tmp/gold_work

Writes ``sample.jsonl`` (id, source, split, stratum, feedback_sha: the skeleton of
``wildreward/gold/feedback_gold.jsonl``) and ``batch_NN.md`` sheets that show each turn's context, cut to a
readable length. The sheets hold the sources' text, so they stay out of the repository.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from wildreward.extract.annotate import cut_middle
from wildreward.extract.gold import candidate_turns, digest, sample_gold, split_of

SHOW_CHARS = {"history": 400, "query": 2000, "response": 2500, "feedback": 2000}


def sheet_entry(turn: dict) -> str:
    history = turn["history"][-2:]
    lines = [f"## {turn['id']}", f"(history: {len(turn['history'])} earlier messages; last ones shown)"]
    lines += [f"[{m['role']}] {cut_middle(m['content'] or '', SHOW_CHARS['history'])}" for m in history]
    for field, title in (("query", "USER QUERY"), ("response", "ASSISTANT RESPONSE"),
                         ("feedback", "USER'S NEXT MESSAGE")):
        lines += [f"### {title}", cut_middle(turn[field], SHOW_CHARS[field])]
    return "\n".join(lines) + "\n\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chatlogs", default="../shared/data/chatlogs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--uniform", type=int, default=850)
    ap.add_argument("--enriched", type=int, default=350)
    ap.add_argument("--batches", type=int, default=7)
    ap.add_argument("--seed", type=int, default=20261203)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    turns = candidate_turns(args.chatlogs)
    rows = sample_gold(turns, args.uniform, args.enriched, args.seed)
    by_source = {}
    for t in turns:
        by_source[t["source"]] = by_source.get(t["source"], 0) + 1
    print(f"{len(turns)} candidate turns {by_source}; sampled {len(rows)}")
    with open(out / "sample.jsonl", "w") as fh:
        for t in rows:
            fh.write(json.dumps({"id": t["id"], "source": t["source"], "split": split_of(t["conversation_id"]),
                                 "stratum": t["stratum"], "feedback_sha": digest(t["feedback"])}) + "\n")
    size = -(-len(rows) // args.batches)
    for b in range(args.batches):
        chunk = rows[b * size:(b + 1) * size]
        (out / f"batch_{b:02d}.md").write_text("".join(sheet_entry(t) for t in chunk))
        (out / f"batch_{b:02d}.ids").write_text("\n".join(t["id"] for t in chunk) + "\n")


if __name__ == "__main__":
    main()
