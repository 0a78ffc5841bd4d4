"""bench_probe_features: which encoder and features should the feedback probe use? (issue 20; gold DEV only)

    python benchmarks/bench_probe_features.py [--encoder minilm] [--encoder /path/to/all-mpnet-base-v2] \
        [--c 1.0 --c 4.0] [--variants base base+sims]

Everything here reads the gold set's dev split only: the test split stays for bench_labels. Each variant is
scored by nested cross-validation over conversations: an outer 5-fold split holds rows out; on the other rows the
labeller's own recipe runs (inner cross-fitting tunes the negative / positive thresholds, then the probe is fitted
on all of them) and labels the held-out rows. Negative F1 is read on the uniformly drawn dev rows (prevalence
matters) and on all dev rows, each with a 95% bootstrap interval. The baseline is the default: MiniLM, ``base``.

Variants: ``base`` = embedding of the next message + keyword one-hot (the shipped probe); ``+sims`` adds its cosine
similarity to the query and to the response tail (a re-asked query or a quoted reply is a correction cue);
``+len`` adds log word count and a question-mark flag.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from wildreward.extract.classifier import cross_fit  # noqa: E402
from wildreward.extract.labellers import agreement, bootstrap_interval, confident_label, tune_thresholds  # noqa: E402
from wildreward.extract.probe import fit_probe, keyword_features, probe_probs  # noqa: E402

CHARS = 1000


def features(encoder: str, rows: list[dict]) -> dict[str, np.ndarray]:
    from wildreward.extract.mine import SimilarityScorer
    from wildreward.models import resolve_model

    encode = SimilarityScorer(resolve_model(encoder)).encode
    feedback = [(r["feedback"] or "")[:CHARS] for r in rows]
    fb, query = encode(feedback), encode([(r["query"] or "")[:CHARS] for r in rows])
    tail = encode([(r["response"] or "")[-CHARS:] for r in rows])
    sims = np.hstack([(fb * query).sum(1, keepdims=True), (fb * tail).sum(1, keepdims=True)])
    length = np.array([[np.log1p(len(f.split())), float("?" in f)] for f in feedback])
    base = np.hstack([fb, keyword_features(feedback)])
    return {"base": base, "base+sims": np.hstack([base, sims]), "base+sims+len": np.hstack([base, sims, length])}


def outer_fold(row_id: str, folds: int = 5) -> int:
    # A different salt from the labeller's inner folds, so the inner cross-fitting has all its folds.
    conversation = row_id.rsplit("_turn", 1)[0]
    return int(hashlib.sha256(f"outer:{conversation}".encode()).hexdigest()[:8], 16) % folds


def nested_predictions(rows: list[dict], x: np.ndarray, labels: np.ndarray, c: float) -> list[int | None]:
    outer = np.array([outer_fold(r["id"]) for r in rows])
    pred: list[int | None] = [None] * len(rows)
    for k in range(5):
        train, held = np.flatnonzero(outer != k), np.flatnonzero(outer == k)
        xt, yt = x[train], labels[train]

        def fit_predict(a, b, _k, xt=xt, yt=yt):
            return probe_probs(xt[b], *fit_probe(xt[a], yt[a], c)).tolist()

        decision = tune_thresholds(cross_fit([rows[i] for i in train], 5, fit_predict), yt.tolist())
        for i, p in zip(held, probe_probs(x[held], *fit_probe(xt, yt, c))):
            pred[i] = confident_label(p, 0.0, decision)
    return pred


def scored(pred: list[int | None], gold: list[int]) -> dict:
    res = agreement(pred, gold)
    return res | {"negative_f1_ci": bootstrap_interval(pred, gold, "negative_f1")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chatlogs", default="../shared/data/chatlogs")
    ap.add_argument("--encoder", action="append", help="alias or local path (repeatable; default minilm)")
    ap.add_argument("--c", action="append", type=float, help="probe C (repeatable; default 1.0)")
    ap.add_argument("--variants", nargs="+", default=["base", "base+sims", "base+sims+len"])
    args = ap.parse_args()
    from wildreward.extract.gold import load_gold

    rows = load_gold(args.chatlogs, ["dev"])
    labels = np.array([r["label"] for r in rows])
    uniform = [i for i, r in enumerate(rows) if r["stratum"] == "uniform"]
    results = {}
    for encoder in args.encoder or ["minilm"]:
        start = time.time()
        feats = features(encoder, rows)
        encode_s = time.time() - start
        for c in args.c or [1.0]:
            for name in args.variants:
                pred = nested_predictions(rows, feats[name], labels, c)
                key = f"{Path(encoder).name} C={c:g} {name}"
                results[key] = {"encode_s": round(encode_s, 1),
                                "uniform": scored([pred[i] for i in uniform], labels[uniform].tolist()),
                                "all": scored(pred, labels.tolist())}
                print(key, results[key]["uniform"]["negative_f1"], flush=True)
    write_results("bench_probe_features", results, markdown(results, len(rows), len(uniform)))


def markdown(results: dict, n: int, n_uniform: int) -> str:
    def ci(r):
        lo, hi = r["negative_f1_ci"]
        return f"{r['negative_f1']:.3f} [{lo:.2f}, {hi:.2f}]"

    lines = [f"Gold dev only ({n} turns, {n_uniform} uniform), nested 5x5-fold cross-validation by conversation.", "",
             "| encoder, C, features | negative F1, uniform | 3-way acc, uniform | positive F1, uniform | "
             "negative F1, all dev | encode s |", "|---|---|---|---|---|---|"]
    for key, r in results.items():
        u = r["uniform"]
        lines.append(f"| {key} | {ci(u)} | {u['accuracy3']:.3f} | {u['positive_f1']:.3f} | {ci(r['all'])} | "
                     f"{r['encode_s']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
