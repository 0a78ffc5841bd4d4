"""bench_rm_signal: does the reward model learn from the labels? (issue 20)

    python benchmarks/bench_rm_signal.py --run outputs/default --big-run /tmp/rm_big [--make-big]

For each pipeline run (a folder with extract/ and train/ from `jobs/run_local.sh` or `wildreward pipeline`):
its label distribution, the held-out consistency AUC (satisfied vs dissatisfied turns of its extract test
split) and pair accuracy on RM-Bench, LLMBar, XSTest and HH-harmless on every pair, against the random and
length baselines, each with a 95% bootstrap interval. A model beats a baseline only when the paired interval of
the difference lies above zero. ``--make-big`` first makes the second run: the main job's recipe (classifier
labels, MiniLM RM) on every ShareGPT conversation instead of the main job's sample.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from wildreward.eval.metrics import roc_auc  # noqa: E402

BENCHMARKS = ["rm_bench", "llmbar", "xstest", "hh_harmless"]
BASELINES = ("random", "length")


def make_big_run(out: Path, chatlogs: Path, data_dir: Path) -> None:
    from wildreward.config import load_config
    from wildreward.pipeline import PipelineConfig, run_pipeline

    cfg = load_config(PipelineConfig, "jobs/configs/pipeline_default.yaml", [
        f"output_dir={out}", "stages=[labeller,extract,train]", "extract.read.max_conversations=null",
        f"labeller.chatlogs_dir={chatlogs}", f"eval.data_dir={data_dir}", "extract.split.test_size=1000"])
    run_pipeline(cfg)


def evaluate(run: Path, data_dir: Path) -> Path:
    from wildreward.eval.config import EvalConfig
    from wildreward.eval.pipeline import run_eval

    out = run / "eval_all_pairs"
    if not (out / "report.json").exists():
        run_eval(EvalConfig(output_dir=str(out), model_dir=str(run / "train" / "model"), data_dir=str(data_dir),
                            benchmarks=BENCHMARKS, max_pairs=None, consistency_data=str(run / "extract" / "test")))
    return out


def outcomes(chosen: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """1 right, 0 wrong, 0.5 tie, NaN when either score failed."""
    out = np.where(chosen > rejected, 1.0, np.where(chosen < rejected, 0.0, 0.5))
    out[np.isnan(chosen) | np.isnan(rejected)] = np.nan
    return out


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple:
    """95% percentile interval of the mean of ``values`` (NaN left out), resampling whole clusters (an RM-Bench
    prompt's nine pairs, an XSTest prompt's pairs) so that related pairs do not narrow the interval."""
    keep = ~np.isnan(values)
    values, clusters = values[keep], clusters[keep]
    ids, index = np.unique(clusters, return_inverse=True)
    sums = np.bincount(index, weights=values, minlength=len(ids))
    counts = np.bincount(index, minlength=len(ids))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def benchmark_rows(pair_scores: Path) -> dict:
    table = pq.read_table(pair_scores).to_pandas()
    scorers = [c[:-len("_chosen")] for c in table.columns if c.endswith("_chosen")]
    out = {}
    for bench, part in table.groupby("benchmark"):
        clusters = np.array([re.split(r"[/:]", p)[0] for p in part["pair_id"]])
        res = {"pairs": len(part)}
        acc = {s: outcomes(part[f"{s}_chosen"].to_numpy(float), part[f"{s}_rejected"].to_numpy(float))
               for s in scorers}
        for s in scorers:
            res[s] = {"accuracy": float(np.nanmean(acc[s])), "ci95": cluster_bootstrap(acc[s], clusters),
                      "ties": int(np.sum(acc[s] == 0.5))}
        model = next(s for s in scorers if s not in BASELINES)
        for base in BASELINES:
            if base in acc:
                lo, hi = cluster_bootstrap(acc[model] - acc[base], clusters)
                res[model][f"minus_{base}_ci95"] = (lo, hi)
                res[model][f"beats_{base}"] = lo > 0
        out[bench] = res
    return out


def consistency_row(path: Path) -> dict:
    table = pq.read_table(path).to_pandas()
    scorers = [c for c in table.columns if c not in ("id", "label", "positive")]
    positive = table["positive"].to_numpy()
    out = {"rows": len(table), "positive": int(positive.sum())}
    rng = np.random.default_rng(0)
    for s in scorers:
        scores = table[s].to_numpy(float)
        boots = []
        for _ in range(1000):
            idx = rng.integers(0, len(scores), len(scores))
            if 0 < positive[idx].sum() < len(idx):
                boots.append(roc_auc(scores[idx], positive[idx]))
        out[s] = {"auc": roc_auc(scores, positive), "ci95": (float(np.percentile(boots, 2.5)),
                                                             float(np.percentile(boots, 97.5)))}
    return out


def run_summary(run: Path, data_dir: Path) -> dict:
    stats = json.loads((run / "extract" / "stats.json").read_text())
    ev = evaluate(run, data_dir)
    levels = pq.read_table(run / "extract" / "train", columns=["label"])["label"].to_pylist()
    return {"labeller": stats["annotate"].get("backend"), "turns_labelled": stats["annotate"]["annotated"],
            "annotator_labels": stats["annotate"]["labels"], "train_rows": len(levels),
            "train_labels": {str(k): levels.count(k) for k in sorted(set(levels))},
            "consistency": consistency_row(ev / "consistency_scores.parquet"),
            "benchmarks": benchmark_rows(ev / "pair_scores.parquet")}


def markdown(runs: dict) -> str:
    lines = []
    for name, r in runs.items():
        model = next(k for k in r["consistency"] if k not in ("rows", "positive") and k not in BASELINES)
        c = r["consistency"][model]
        lines += [f"## {name}", "",
                  f"Labeller `{r['labeller']}` labelled {r['turns_labelled']} turns: {r['annotator_labels']}; "
                  f"RM trained on {r['train_rows']} rows (levels {r['train_labels']}).", "",
                  f"Held-out consistency AUC (satisfied vs dissatisfied, {r['consistency']['rows']} rows): "
                  f"**{c['auc']:.3f}** [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]", "",
                  "| benchmark | pairs | RM | random | length | RM beats random | RM beats length |",
                  "|---|---|---|---|---|---|---|"]
        for bench, b in r["benchmarks"].items():
            def cell(s):
                return f"{b[s]['accuracy']:.3f} [{b[s]['ci95'][0]:.3f}, {b[s]['ci95'][1]:.3f}]"
            lines.append(f"| {bench} | {b['pairs']} | {cell(model)} | {cell('random')} | {cell('length')} | "
                         f"{'yes' if b[model]['beats_random'] else 'no'} | "
                         f"{'yes' if b[model]['beats_length'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", default=[], help="pipeline output dir (repeatable)")
    ap.add_argument("--big-run", help="output dir of the run on all ShareGPT turns")
    ap.add_argument("--make-big", action="store_true", help="make --big-run first")
    ap.add_argument("--data-dir", default="../shared/data")
    args = ap.parse_args()
    data_dir = Path(args.data_dir).resolve()
    runs = [Path(r).resolve() for r in args.run]
    if args.big_run:
        big = Path(args.big_run).resolve()
        if args.make_big:
            make_big_run(big, data_dir / "chatlogs", data_dir)
        runs.append(big)
    results = {str(r): run_summary(r, data_dir) for r in runs}
    write_results("bench_rm_signal", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
