"""``run_eval``: a reward model (and baselines) on preference benchmarks, calibration and cross-sample consistency.

    load benchmarks (seeded subsets) + consistency rows -> one list of (history, query, reply) examples
    -> scores per scorer (the RM in a Ray Data actor pool or at a served endpoint; identical examples once)
    -> report.json, report.md, threshold_accuracy.png, reliability.png, pair_scores.parquet, consistency_scores.parquet
       (and ppe_correctness_scores.parquet: one row per PPE correctness reply)

Scorers: ``rm`` (model_dir or endpoint), ``second_rm`` (second_model_dir, if set), one per entry of ``scorers``
(any reward model: see :mod:`wildreward.eval.scorers`), ``length`` (the longer reply wins) and ``random`` (seeded
uniform scores).
"""
from __future__ import annotations

import collections
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wildreward.config import save_config
from wildreward.eval import report as rep
from wildreward.eval.benchmarks import default_path, flatten_rm_bench, load_benchmark, ppe_correctness_files
from wildreward.eval.config import EvalConfig
from wildreward.eval.config import ScorerSpec
from wildreward.eval.score import (Scored, deduplicate, length_scores, random_scores, resolve_scorers,
                                   score_examples)
from wildreward.eval.scorers import describe_source
from wildreward.logs import stage_logger
from wildreward.storage import Location, read_table

CONSISTENCY_COLUMNS = ("id", "history", "query", "response", "label")
CALIBRATION_NOTE = ("On RM-Bench normal pairs (chosen and rejected in the same style), as the paper: Platt scaling of "
                    "the margin fitted on a seeded half of the pairs (randomly swapped so both labels occur), ECE on "
                    "the other half; accuracy by margin threshold on all of them, margins in reward units. ECE "
                    "measures calibration, not accuracy: a coin-flip scorer is calibrated at 0.5.")


log = stage_logger("eval")


def seeded_subset(records: list, max_n: int | None, seed: int, name: str) -> list:
    """At most ``max_n`` records, in file order; the draw depends on the benchmark name, so adding or removing
    another benchmark does not change this one's subset."""
    if max_n is None or len(records) <= max_n:
        return records
    keep = np.random.default_rng([seed, zlib.crc32(name.encode())]).choice(len(records), max_n, replace=False)
    return [records[i] for i in sorted(keep)]


def load_benchmarks(cfg: EvalConfig) -> dict[str, dict]:
    """Per benchmark: counts, the items to score ("pairs": pair records, RM-Bench flattened to nine pairs a prompt;
    PPE correctness: one record a prompt with its K replies) and the "examples" to score, in order. A benchmark
    whose file is absent gets only "path" and "status" ("not evaluated (file absent: <path>)")."""
    out = {}
    for name in cfg.benchmarks:
        path = cfg.paths.get(name) or default_path(name, cfg.data_dir)
        try:
            loaded = load_benchmark(name, path)
        except FileNotFoundError as err:
            out[name] = {"path": str(path), "status": f"not evaluated (file absent: {err.filename or path})"}
            log(f"{name}: {out[name]['status']}")
            continue
        records = seeded_subset(loaded.records, cfg.max_pairs, cfg.seed, name)
        items = flatten_rm_bench(records) if name == "rm_bench" else records
        out[name] = {"path": str(path), "status": "evaluated", "loaded": len(loaded.records),
                     "evaluated": len(records), "not_sampled": len(loaded.records) - len(records),
                     "skipped": len(loaded.skipped),
                     "skip_reasons": dict(collections.Counter(s["reason"] for s in loaded.skipped)),
                     "pairs": items, "examples": benchmark_examples(name, items)}
        if name == "ppe_correctness":
            out[name]["sets_absent"] = [k for k, f in ppe_correctness_files(path).items() if f is None]
        log(f"{name}: {len(loaded.records)} loaded, {len(records)} evaluated, {len(loaded.skipped)} rows skipped "
            f"({path})")
    return out


def load_consistency(cfg: EvalConfig) -> dict:
    """Rows of an extracted data set with a binary label: positive (label >= positive_min_label) or negative
    (label <= negative_max_label); rows in between or without a label are left out and counted."""
    table = read_table(cfg.consistency_data)
    missing = [c for c in CONSISTENCY_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"consistency_data {cfg.consistency_data} lacks column(s) {', '.join(missing)}")
    rows = table.select(list(CONSISTENCY_COLUMNS)).to_pylist()
    labelled = [r for r in rows if r["label"] is not None
                and (r["label"] >= cfg.positive_min_label or r["label"] <= cfg.negative_max_label)]
    used = seeded_subset(labelled, cfg.max_consistency_rows, cfg.seed, "consistency")
    log(f"consistency: {len(rows)} rows, {len(used)} used ({len(rows) - len(labelled)} without a binary label)")
    return {"path": cfg.consistency_data, "rows": len(rows), "without_binary_label": len(rows) - len(labelled),
            "not_sampled": len(labelled) - len(used), "examples": used,
            "positive": np.array([r["label"] >= cfg.positive_min_label for r in used], dtype=bool)}


def pair_examples(pairs: list[dict]) -> list[dict]:
    """All chosen replies, then all rejected ones."""
    return [{"history": p["history"], "query": p["query"], "response": p[side]}
            for side in ("chosen", "rejected") for p in pairs]


def benchmark_examples(name: str, items: list[dict]) -> list[dict]:
    """What a benchmark's items need scored: PPE correctness every reply of every prompt in order, the others
    :func:`pair_examples`."""
    if name == "ppe_correctness":
        return [{"history": r["history"], "query": r["query"], "response": reply} for r in items
                for reply in r["responses"]]
    return pair_examples(items)


def score_all(examples: list[dict], cfg: EvalConfig,
              specs: list[ScorerSpec] | None = None) -> tuple[dict[str, Scored], dict[str, str]]:
    """Scores of every scorer, and a description of where each came from. ``specs``: the model scorers already
    resolved (default: ``cfg.model_scorers()``, resolved here)."""
    pool = {"batch_size": cfg.batch_size, "num_actors": cfg.num_actors, "num_cpus": cfg.num_cpus,
            "num_gpus": cfg.num_gpus, "dtype": cfg.dtype}
    scored, sources = {}, {}
    for spec in specs if specs is not None else resolve_scorers(cfg.model_scorers()):
        sources[spec.name] = describe_source(spec)
        log(f"{spec.name}: scoring with {sources[spec.name]}")
        scored[spec.name] = score_examples(examples, spec=spec, **pool)
    scored["length"] = length_scores(examples)
    sources["length"] = "baseline: reply length in characters (the longer reply wins)"
    scored["random"] = random_scores(examples, cfg.seed)
    sources["random"] = f"baseline: uniform random scores (seed {cfg.seed})"
    for name, s in scored.items():
        if examples and all(v is None for v in s.scores):
            raise RuntimeError(f"{name} scored none of the {len(examples)} examples; first error: {s.errors[0]}")
    return scored, sources


def as_array(scores: list[float | None]) -> np.ndarray:
    return np.array([np.nan if s is None else s for s in scores], dtype=np.float64)


def nullable(values) -> pa.Array:
    """NaN (not scored) -> null in the Parquet outputs."""
    return pa.array(np.asarray(values, dtype=np.float64), from_pandas=True)


def split_scores(scored: dict[str, Scored], sizes: dict[str, int]) -> dict[str, dict[str, np.ndarray]]:
    """Scores over all examples, per scorer -> per part (a benchmark, "consistency") -> per scorer, NaN = failed."""
    out, start = {}, 0
    for part, size in sizes.items():
        out[part] = {name: as_array(s.scores[start:start + size]) for name, s in scored.items()}
        start += size
    return out


def bootstrap_seed(seed: int, name: str) -> int:
    """Per-benchmark bootstrap seed: adding or removing a benchmark leaves the others' intervals unchanged."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**32


def benchmark_results(name: str, pairs: list[dict], scores: dict[str, np.ndarray], tie_eps: float, *,
                      n_boot: int = 1000, seed: int = 0) -> dict:
    """Per scorer, the benchmark's metrics with bootstrap intervals (see :mod:`wildreward.eval.report`)."""
    n, out = len(pairs), {}
    boot = {"n_boot": n_boot, "seed": bootstrap_seed(seed, name)}
    for scorer, values in scores.items():
        chosen, rejected = values[:n], values[n:]
        if name == "rm_bench":
            out[scorer] = rep.rm_bench_result(pairs, chosen, rejected, tie_eps, **boot)
        elif name == "ppe_correctness":
            out[scorer] = rep.best_of_k_result(pairs, values, tie_eps, **boot)
        else:
            out[scorer] = rep.accuracy_result(pairs, chosen, rejected, name, tie_eps, **boot)
    return out


def benchmark_report(cfg: EvalConfig, benches: dict, parts: dict) -> dict:
    """report["benchmarks"]: counts and per-scorer results, or just path and status when not evaluated."""
    return {name: {k: v for k, v in b.items() if k not in ("pairs", "examples")}
            | ({"scorers": benchmark_results(name, b["pairs"], parts[name], cfg.tie_eps, n_boot=cfg.n_bootstrap,
                                             seed=cfg.seed)} if "pairs" in b else {})
            for name, b in benches.items()}


def pair_table(benches: dict, parts: dict) -> pa.Table:
    """One row per scored pair of the pair benchmarks (PPE correctness has its own table)."""
    paired = {name: b for name, b in benches.items() if "pairs" in b and name != "ppe_correctness"}
    pairs = [p for b in paired.values() for p in b["pairs"]]
    columns = {key: [p[key] for p in pairs] for key in ("benchmark", "subset", "pair_id")}
    for scorer in next(iter(parts.values()), {}):
        halves = [(parts[name][scorer][:len(b["pairs"])], parts[name][scorer][len(b["pairs"]):])
                  for name, b in paired.items()]
        columns[f"{scorer}_chosen"] = nullable(np.concatenate([c for c, _ in halves] or [np.zeros(0)]))
        columns[f"{scorer}_rejected"] = nullable(np.concatenate([r for _, r in halves] or [np.zeros(0)]))
    return pa.table(columns)


def response_table(records: list[dict], scores: dict[str, np.ndarray]) -> pa.Table:
    """PPE correctness: one row per reply with its correctness label and every scorer's score."""
    rows = [(r["subset"], r["pair_id"], i, c) for r in records for i, c in enumerate(r["correct"])]
    return pa.table({"set": [r[0] for r in rows], "prompt_id": [r[1] for r in rows],
                     "response_index": [r[2] for r in rows], "correct": [bool(r[3]) for r in rows]}
                    | {s: nullable(v) for s, v in scores.items()})


def calibration(cfg: EvalConfig, pairs: list[dict], scores: dict[str, np.ndarray]) -> dict:
    normal = np.array([p["chosen_idx"] == p["rejected_idx"] for p in pairs], dtype=bool)
    n = len(pairs)
    return {"note": CALIBRATION_NOTE, "scorers": {
        s: rep.calibration_result(v[:n][normal], v[n:][normal], seed=cfg.seed, n_bins=cfg.n_bins,
                                  thresholds=cfg.thresholds) for s, v in scores.items()}}


def consistency_results(cfg: EvalConfig, cons: dict, scores: dict[str, np.ndarray]) -> tuple[dict, pa.Table]:
    rows = cons["examples"]
    result = {**{k: v for k, v in cons.items() if k not in ("examples", "positive")},
              "note": f"Binary labels: label >= {cfg.positive_min_label} positive, <= {cfg.negative_max_label} "
                      "negative; ROC-AUC of the raw scores across queries.",
              "scorers": {s: rep.consistency_result(v, cons["positive"]) for s, v in scores.items()}}
    table = pa.table({"id": [r["id"] for r in rows], "label": [r["label"] for r in rows],
                      "positive": cons["positive"]} | {s: nullable(v) for s, v in scores.items()})
    return result, table


def run_eval(cfg: EvalConfig) -> dict:
    out = Location.parse(cfg.output_dir)
    specs = resolve_scorers(cfg.model_scorers())  # checkpoints and services checked before data or Ray
    save_config(cfg, out, "eval")
    benches = load_benchmarks(cfg)
    consistency = load_consistency(cfg) if cfg.consistency_data else None
    examples = [ex for b in benches.values() for ex in b.get("examples", [])]
    examples += consistency["examples"] if consistency else []
    n_unique = len(deduplicate(examples)[0])
    log(f"{len(examples)} examples to score, {n_unique} distinct")
    scored, sources = score_all(examples, cfg, specs)
    sizes = {name: len(b["examples"]) for name, b in benches.items() if "examples" in b}
    parts = split_scores(scored, sizes | ({"consistency": len(consistency["examples"])} if consistency else {}))
    errors = {name: collections.Counter(e for e in s.errors if e) for name, s in scored.items()}
    report = {"tie_eps": cfg.tie_eps, "n_bootstrap": cfg.n_bootstrap, "examples": len(examples),
              "distinct_examples": n_unique,
              "scorers": {n: {"source": sources[n], "failed_examples": sum(errors[n].values()),
                              "errors": dict(errors[n].most_common(5))} for n in scored},
              "benchmarks": benchmark_report(cfg, benches, parts)}
    if "pairs" in benches.get("rm_bench", {}):
        report["calibration"] = calibration(cfg, benches["rm_bench"]["pairs"], parts["rm_bench"])
    with (out / "pair_scores.parquet").open_write() as fh:
        pq.write_table(pair_table(benches, parts), fh)
    if "pairs" in benches.get("ppe_correctness", {}):
        with (out / "ppe_correctness_scores.parquet").open_write() as fh:
            pq.write_table(response_table(benches["ppe_correctness"]["pairs"], parts["ppe_correctness"]), fh)
    if consistency:
        report["consistency"], table = consistency_results(cfg, consistency, parts["consistency"])
        with (out / "consistency_scores.parquet").open_write() as fh:
            pq.write_table(table, fh)
    rep.write_report(report, out)
    log(f"report: {out / 'report.md'}")
    return report
