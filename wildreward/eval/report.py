"""Scores -> the evaluation report: accuracies per benchmark and subset, calibration, consistency; written as
report.json, report.md and two PNG plots.

Scores arrive as float arrays with NaN for an example a scorer failed on. A pair (an RM-Bench prompt: all six
replies) with a missing score is left out of that scorer's metrics and counted as ``failed``.
"""
from __future__ import annotations

import json
import math
import numpy as np

from wildreward.eval.benchmarks import RM_BENCH_DOMAIN_OF, RM_BENCH_DOMAINS
from wildreward.eval.metrics import (REWARDBENCH_SECTIONS, accuracy_at_coverage, best_of_k, bootstrap_ci,
                                     pair_outcomes, pairwise_accuracy, platt_calibration, rewardbench_sections,
                                     rewardbench_weights, roc_auc, threshold_accuracy)
from wildreward.plots import pyplot
from wildreward.storage import Location, save_png

# Subsets pooled into named groups (LLMBar: RewardBench's Chat-Hard split into its natural and adversarial parts).
GROUPS = {"llmbar": {"natural": ("llmbar-natural",), "adversarial": ("llmbar-adver",)}}
BASELINES = ("length", "random")  # every other scorer is a model, whose margins the threshold curve reads
MIN_CALIBRATION_PAIRS = 10


# ---------------------------------------------------------------- metrics per scorer

def with_interval(res: dict, outcomes: np.ndarray, n_boot: int, seed: int) -> dict:
    """``res`` plus "lo" / "hi": the bootstrap 95% interval of the mean of the per-pair outcomes."""
    ci = bootstrap_ci(outcomes, n_boot=n_boot, seed=seed)
    return {**res, "lo": ci["lo"], "hi": ci["hi"]}


def accuracy_result(pairs: list[dict], chosen: np.ndarray, rejected: np.ndarray, benchmark: str,
                    tie_eps: float, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Pair accuracy overall, per subset and per group, on the pairs this scorer scored, each with its bootstrap
    interval (pairs resampled); RewardBench also gets the official section score (:func:`weighted_rewardbench`)."""
    ok = np.isfinite(chosen) & np.isfinite(rejected)
    subsets = np.array([p["subset"] for p in pairs])
    out = {"scored": int(ok.sum()), "failed": int((~ok).sum())}
    if not ok.any():
        return out
    outcomes = np.full(len(pairs), np.nan)
    outcomes[ok] = pair_outcomes(chosen[ok], rejected[ok], tie_eps)

    def acc(mask: np.ndarray) -> dict | None:
        mask = mask & ok
        return (with_interval(pairwise_accuracy(chosen[mask], rejected[mask], tie_eps), outcomes[mask], n_boot, seed)
                if mask.any() else None)

    out["overall"] = acc(np.ones(len(pairs), bool))
    out["subsets"] = {s: acc(subsets == s) for s in sorted(set(subsets))}
    groups = {g: acc(np.array([s.startswith(prefixes) for s in subsets]))
              for g, prefixes in GROUPS.get(benchmark, {}).items()}
    out["groups"] = {g: r for g, r in groups.items() if r}
    if benchmark == "rewardbench":
        out["weighted"] = weighted_rewardbench(outcomes[ok], subsets[ok], n_boot, seed)
    return out


def weighted_rewardbench(outcomes: np.ndarray, subsets: np.ndarray, n_boot: int, seed: int) -> dict:
    """The official RewardBench score: the mean of the Chat / Chat Hard / Safety / Reasoning section scores, each
    the count-weighted mean of its subsets' accuracies (weights in :mod:`~wildreward.eval.metrics`), with a
    bootstrap interval (pairs resampled within their subset). Sections with no scored subset are listed in
    ``sections_absent`` and the score is then over the others only (``complete`` False)."""
    weights = rewardbench_weights(set(subsets.tolist()))
    outside = sorted(set(subsets.tolist()) - set(weights))
    out = {"sections_absent": [s for s in REWARDBENCH_SECTIONS
                               if not any(t in weights for t in REWARDBENCH_SECTIONS[s])],
           "outside_sections": outside}
    out["complete"] = not out["sections_absent"]
    if not weights:
        return out
    keep = np.isin(subsets, list(weights))
    ci = bootstrap_ci(outcomes[keep], subsets[keep], weights, n_boot=n_boot, seed=seed)
    per_subset = {t: float(outcomes[subsets == t].mean()) for t in weights}
    return {**out, "value": ci["value"], "lo": ci["lo"], "hi": ci["hi"], "n": ci["n"],
            "sections": rewardbench_sections(per_subset)}


RM_BENCH_KEYS = ("easy", "normal", "hard", "avg")


def rm_bench_prompt_values(outcomes: np.ndarray) -> np.ndarray:
    """[n, 3, 3] outcome matrices (chosen style i vs rejected style j) -> per prompt [easy, normal, hard, avg]."""
    lower, upper = np.tril_indices(3, k=-1), np.triu_indices(3, k=1)
    return np.stack([outcomes[:, lower[0], lower[1]].mean(1), np.diagonal(outcomes, axis1=1, axis2=2).mean(1),
                     outcomes[:, upper[0], upper[1]].mean(1), outcomes.mean((1, 2))], axis=1)


def rm_bench_group(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> dict:
    """Easy / normal / hard / avg as the mean over ``groups`` of the per-group means, each with "<key>_lo/_hi"."""
    ci = bootstrap_ci(values, groups, n_boot=n_boot, seed=seed)
    out = {"n": len(values)}
    for k, key in enumerate(RM_BENCH_KEYS):
        out.update({key: ci["value"][k], f"{key}_lo": ci["lo"][k], f"{key}_hi": ci["hi"][k]})
    return out


def rm_bench_result(pairs: list[dict], chosen: np.ndarray, rejected: np.ndarray, tie_eps: float, *,
                    n_boot: int = 1000, seed: int = 0) -> dict:
    """RM-Bench easy / normal / hard / avg, per file ("subsets"), per RM-Bench domain ("domains") and overall as
    the RM-Bench paper reports it: the mean over domains of the per-domain values ("overall"; "pooled" is the mean
    over all prompts instead). Domains without data (math is not in ours) are listed in "domains_absent"; intervals
    resample prompts within their domain. ``pairs`` come from
    :func:`~wildreward.eval.benchmarks.flatten_rm_bench`: nine per prompt, pair 3i + j = chosen i vs rejected j."""
    chosen, rejected = chosen.reshape(-1, 3, 3), rejected.reshape(-1, 3, 3)
    by_chosen, by_rejected = chosen[:, :, 0], rejected[:, 0, :]  # [prompt, style]
    ok = np.isfinite(by_chosen).all(1) & np.isfinite(by_rejected).all(1)
    files = np.array([p["subset"] for p in pairs[::9]])
    domains = np.array([p.get("domain", RM_BENCH_DOMAIN_OF.get(p["subset"], p["subset"])) for p in pairs[::9]])
    out = {"scored": int(ok.sum()), "failed": int((~ok).sum())}
    if not ok.any():
        return out
    outcomes = pair_outcomes(by_chosen[ok][:, :, None], by_rejected[ok][:, None, :], tie_eps)
    values, files, domains = rm_bench_prompt_values(outcomes), files[ok], domains[ok]
    ties = int(np.sum(outcomes == 0.5))
    out["overall"] = {**rm_bench_group(values, domains, n_boot, seed), "ties": ties,
                      "tie_rate": ties / outcomes.size, "domains": sorted(set(domains.tolist()))}
    out["domains_absent"] = [d for d in RM_BENCH_DOMAINS if d not in set(domains.tolist())]
    out["pooled"] = {k: float(values[:, i].mean()) for i, k in enumerate(RM_BENCH_KEYS)}

    def part(mask: np.ndarray) -> dict:
        res = rm_bench_group(values[mask], np.zeros(int(mask.sum())), n_boot, seed)
        return {**res, "matrix": outcomes[mask].mean(0).tolist(), "tie_rate": float((outcomes[mask] == 0.5).mean())}

    out["subsets"] = {f: part(files == f) for f in sorted(set(files.tolist()))}
    out["domains"] = {d: part(domains == d) for d in sorted(set(domains.tolist()))}
    return out


def best_of_k_result(records: list[dict], scores: np.ndarray, tie_eps: float, *, n_boot: int = 1000,
                     seed: int = 0) -> dict:
    """PPE correctness per set and overall (mean over sets, as PPE averages its benchmarks), two metrics:
    "best_of_k", the correctness of the reply this scorer ranks first among a prompt's K (ties: the mean over the
    tied replies), and "pair_accuracy" on the set's sampled conflict pairs (correct vs wrong reply, ties half).
    ``scores`` follow the records' replies in order. A prompt with a reply the scorer failed on is left out."""
    sizes = [len(r["responses"]) for r in records]
    per_prompt = np.split(scores, np.cumsum(sizes)[:-1]) if records else []
    ok = np.array([np.isfinite(s).all() for s in per_prompt], dtype=bool)
    out = {"scored": int(ok.sum()), "failed": int((~ok).sum())}
    if not ok.any():
        return out
    kept = [(r, s) for r, s, good in zip(records, per_prompt, ok) if good]
    values, tied = best_of_k([s for _, s in kept], [r["correct"] for r, _ in kept])
    sets = np.array([r["subset"] for r, _ in kept])
    margins = [(s[i] - s[j]) * (1 if r["correct"][i] else -1) for r, s in kept for i, j in r["conflict_pairs"]]
    pair_sets = np.array([r["subset"] for r, _ in kept for _ in r["conflict_pairs"]])
    pair_values = pair_outcomes(np.array(margins), 0.0, tie_eps) if margins else np.array([])

    def metric(vals: np.ndarray, groups: np.ndarray, mask: np.ndarray) -> dict | None:
        return bootstrap_ci(vals[mask], groups[mask], n_boot=n_boot, seed=seed) if mask.any() else None

    def summary(mask: np.ndarray, pair_mask: np.ndarray) -> dict:
        return {"best_of_k": metric(values, sets, mask), "prompts": int(mask.sum()), "ties": int(tied[mask].sum()),
                "k": sorted({len(r["responses"]) for (r, _), m in zip(kept, mask) if m}),
                "pair_accuracy": metric(pair_values, pair_sets, pair_mask) if len(pair_values) else None,
                "pair_ties": int(np.sum(pair_values[pair_mask] == 0.5)) if len(pair_values) else 0}

    out["overall"] = summary(np.ones(len(kept), bool), np.ones(len(pair_values), bool))
    out["subsets"] = {name: summary(sets == name, pair_sets == name) for name in sorted(set(sets.tolist()))}
    return out


def calibration_result(chosen: np.ndarray, rejected: np.ndarray, *, seed: int, n_bins: int,
                       thresholds: list[float]) -> dict:
    """Platt scaling fitted on half the pairs, ECE and reliability bins on the other half, and accuracy by
    margin threshold on all of them (paper §3.4)."""
    ok = np.isfinite(chosen) & np.isfinite(rejected)
    if ok.sum() < MIN_CALIBRATION_PAIRS:
        return {"n": int(ok.sum()), "error": f"fewer than {MIN_CALIBRATION_PAIRS} scored pairs"}
    c, r = chosen[ok], rejected[ok]
    return {"n": int(ok.sum()), **platt_calibration(c, r, seed=seed, n_bins=n_bins),
            "thresholds": threshold_accuracy(c - r, thresholds), "confident": accuracy_at_coverage(c - r)}


def consistency_result(scores: np.ndarray, positive: np.ndarray) -> dict:
    """ROC-AUC of the raw scores against the binary labels (paper §3.5)."""
    ok = np.isfinite(scores)
    n_pos, n_neg = int(positive[ok].sum()), int((~positive[ok]).sum())
    out = {"scored": int(ok.sum()), "failed": int((~ok).sum()), "positive": n_pos, "negative": n_neg}
    if n_pos and n_neg:
        out["auc"] = roc_auc(scores[ok], positive[ok].astype(int))
    else:
        out["error"] = "needs scored rows of both classes"
    return out


# ---------------------------------------------------------------- summary columns

# The summary table's columns, in order: the paper's Table 1 plus the local benchmarks.
SUMMARY_COLUMNS = {"rm_bench": ("RM-B Easy", "RM-B Normal", "RM-B Hard"), "rewardbench": ("RewardBench",),
                   "judgebench_gpt4o": ("JudgeBench GPT-4o",), "judgebench_claude": ("JudgeBench Claude",),
                   "ppe_human": ("PPE Human",), "ppe_correctness": ("PPE Correctness",), "llmbar": ("LLMBar",),
                   "xstest": ("XSTest",), "hh_harmless": ("HH Harmless",)}


def cell(value: float | None, lo: float | None = None, hi: float | None = None, **extra) -> dict:
    return {"value": value, "lo": lo, "hi": hi, **extra}


def headline_cells(benchmark: str, res: dict) -> dict[str, dict]:
    """The numbers of one benchmark that go into the summary (:data:`SUMMARY_COLUMNS`) and the breakdown table
    (RM-B Avg, RewardBench pair accuracy, LLMBar natural / adversarial, XSTest should-refuse / should-respond),
    each as :func:`cell`."""
    if "overall" not in res:
        return {}
    o = res["overall"]
    if benchmark == "rm_bench":
        return {f"RM-B {k.capitalize()}": cell(o[k], o[f"{k}_lo"], o[f"{k}_hi"]) for k in RM_BENCH_KEYS}
    if benchmark == "ppe_correctness":
        b = o["best_of_k"]
        return {"PPE Correctness": cell(b["value"], b["lo"], b["hi"])}

    def acc(r: dict | None) -> dict | None:
        return cell(r["accuracy"], r["lo"], r["hi"]) if r else None

    sub, grp = res.get("subsets", {}), res.get("groups", {})
    named = {
        "llmbar": {"LLMBar": acc(o), "LLMBar Natural": acc(grp.get("natural")),
                   "LLMBar Adv.": acc(grp.get("adversarial"))},
        "xstest": {"XSTest": acc(o), "XSTest Should-Refuse": acc(sub.get("xstest-should-refuse")),
                   "XSTest Should-Respond": acc(sub.get("xstest-should-respond"))},
        "hh_harmless": {"HH Harmless": acc(o)},
        "rewardbench": {"RewardBench (pairs)": acc(o)},
        "judgebench_gpt4o": {"JudgeBench GPT-4o": acc(o)}, "judgebench_claude": {"JudgeBench Claude": acc(o)},
        "ppe_human": {"PPE Human": acc(o)},
    }.get(benchmark, {benchmark: acc(o)})
    weighted = res.get("weighted", {})
    if "value" in weighted:
        named["RewardBench"] = cell(weighted["value"], weighted["lo"], weighted["hi"],
                                    complete=weighted["complete"])
    return {k: v for k, v in named.items() if v is not None}


def headline(benchmark: str, res: dict) -> dict[str, float]:
    """The point values of :func:`headline_cells` (what the ablation table reads)."""
    return {k: v["value"] for k, v in headline_cells(benchmark, res).items()}


def summary_table(report: dict) -> dict[str, dict[str, dict]]:
    """scorer -> {column: {"value", "lo", "hi"}}: the run's one summary table.

    Columns are those of :data:`SUMMARY_COLUMNS` for every benchmark in the report, then the breakdown columns of
    :func:`headline_cells`, then "Consistency AUC" and "ECE (RM-B Normal)" when computed. Accuracies are in [0, 1]
    with their bootstrap 95% interval in "lo" / "hi" (None for AUC and ECE). A benchmark that was not evaluated
    has value None and a "note" (e.g. "not evaluated (file absent: <path>)"); "RewardBench" also carries
    "complete" (False when a section had no pair). Scorer names are whatever the report holds."""
    rows: dict[str, dict[str, dict]] = {}
    for name in report["scorers"]:
        row = rows.setdefault(name, {})
        for bench, b in report["benchmarks"].items():
            if "scorers" not in b:
                row.update({c: cell(None, note=b["status"]) for c in SUMMARY_COLUMNS.get(bench, (bench,))})
                continue
            cells = headline_cells(bench, b["scorers"][name])
            row.update({c: cells.get(c, cell(None, note="no scored pair")) for c in SUMMARY_COLUMNS.get(bench, ())})
            row.update({c: v for c, v in cells.items() if c not in row})
        cons = (report.get("consistency") or {}).get("scorers", {}).get(name, {})
        if "auc" in cons:
            row["Consistency AUC"] = cell(cons["auc"])
        cal = (report.get("calibration") or {}).get("scorers", {}).get(name, {})
        if "ece" in cal:
            row["ECE (RM-B Normal)"] = cell(cal["ece"])
    return rows


# ---------------------------------------------------------------- writing

def jsonable(value):
    """NaN (an empty bin, a threshold keeping no pair) -> null, so report.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def interval(value: float | None, lo: float | None, hi: float | None) -> str:
    """"71.2 [65.0, 77.1]" in percent; "–" when there is no value."""
    if value is None or not math.isfinite(value):
        return "–"
    return pct(value) + (f" [{pct(lo)}, {pct(hi)}]" if lo is not None else "")


def accuracy_cell(res: dict | None) -> str:
    if not res:
        return "–"
    ties = res.get("ties", 0)
    return interval(res["accuracy"], res.get("lo"), res.get("hi")) + (f" ({ties} ties)" if ties else "")


def rm_bench_rows(res: dict) -> list[list]:
    rows = []
    for label, part in [*((f"domain {d}", r) for d, r in res["domains"].items()),
                        *((f"file {f}", r) for f, r in res["subsets"].items()),
                        ("all (mean over domains)", res["overall"])]:
        rows.append([label, part["n"], *(interval(part[k], part[f"{k}_lo"], part[f"{k}_hi"])
                                         for k in RM_BENCH_KEYS), pct(part["tie_rate"])])
    return rows


def rm_bench_section(b: dict, scorers: list[str]) -> list[str]:
    text = []
    for s in scorers:
        res = b["scorers"][s]
        if "overall" not in res:
            continue
        absent = ", ".join(res["domains_absent"]) or "none"
        text += [f"{s} (RM-Bench domains absent from the data, so not in the averages: {absent}; the Safety domain "
                 "pools the safety-refuse and safety-response files; pooled over all prompts instead: "
                 + ", ".join(f"{k} {pct(v)}" for k, v in res["pooled"].items()) + "):", "",
                 table(["part", "prompts", *RM_BENCH_KEYS, "ties %"], rm_bench_rows(res)), ""]
    return text


def ppe_correctness_section(b: dict, scorers: list[str]) -> list[str]:
    def metric(m: dict | None) -> str:
        return interval(m["value"], m["lo"], m["hi"]) if m else "–"

    text = ["Best of K: correctness of the reply the scorer ranks first among each prompt's K (top-score ties: the "
            "mean over the tied replies); pair accuracy: sampled conflict pairs (correct vs wrong reply). Overall: "
            "mean over the sets evaluated." + (f" Sets not evaluated (file absent): {', '.join(b['sets_absent'])}."
                                                if b.get("sets_absent") else ""), ""]
    for s in scorers:
        res = b["scorers"][s]
        if "overall" not in res:
            continue
        rows = [[name, r["prompts"], ",".join(map(str, r["k"])), metric(r["best_of_k"]), r["ties"],
                 metric(r["pair_accuracy"]), r["pair_ties"]]
                for name, r in [*res["subsets"].items(), ("all (mean over sets)", res["overall"])]]
        text += [f"{s}:", "", table(["set", "prompts", "K", "best of K", "top ties", "pair accuracy", "pair ties"],
                                    rows), ""]
    return text


def rewardbench_section(b: dict, scorers: list[str]) -> list[str]:
    rows = []
    for s in scorers:
        w = b["scorers"][s].get("weighted", {})
        if "value" in w:
            rows.append([s, interval(w["value"], w["lo"], w["hi"]),
                         *(pct(w["sections"][sec]) if sec in w["sections"] else "–"
                           for sec in REWARDBENCH_SECTIONS),
                         ", ".join(w["sections_absent"]) or "none", ", ".join(w["outside_sections"]) or "none"])
    if not rows:
        return []
    return ["Official score: mean of the four section scores, each the count-weighted mean of its subsets "
            "(weights of allenai/reward-bench rewardbench/constants.py; math-prm weighs as much as the six code "
            "subsets together).", "",
            table(["scorer", "weighted", *REWARDBENCH_SECTIONS, "sections absent", "subsets outside sections"], rows),
            ""]


def benchmark_section(name: str, b: dict, scorers: list[str]) -> str:
    if "scorers" not in b:
        return "\n".join([f"### {name}", f"{b['status']}.", ""])
    unit = {"rm_bench": "prompts", "ppe_correctness": "prompts"}.get(name, "pairs")
    skipped = ", ".join(f"{reason}: {n}" for reason, n in b["skip_reasons"].items()) or "none"
    counts = table(["scorer", f"{unit} scored", "failed"],
                   [[s, b["scorers"][s]["scored"], b["scorers"][s]["failed"]] for s in scorers])
    text = [f"### {name}", f"`{b['path']}`: {b['loaded']} {unit} loaded, {b['evaluated']} evaluated "
            f"({b['not_sampled']} left out by max_pairs); rows skipped by the loader: {skipped}.", "", counts, ""]
    if name == "rm_bench":
        return "\n".join(text + rm_bench_section(b, scorers))
    if name == "ppe_correctness":
        return "\n".join(text + ppe_correctness_section(b, scorers))
    if name == "rewardbench":
        text += rewardbench_section(b, scorers)
    ref = next((b["scorers"][s] for s in scorers if "overall" in b["scorers"][s]), None)
    if ref is None:
        return "\n".join(text)
    # (row label, where the row's result sits in a scorer's result)
    parts = ([(sub, ("subsets", sub)) for sub in ref["subsets"]]
             + [(f"{g} (pooled)", ("groups", g)) for g in ref.get("groups", {})] + [("all", ("overall", None))])

    def pick(res: dict, where: tuple[str, str | None]) -> dict | None:
        kind, key = where
        if kind not in res:
            return None
        return res[kind] if key is None else res[kind].get(key)

    rows = [[label, (pick(ref, where) or {}).get("n", "–"), *(accuracy_cell(pick(b["scorers"][s], where))
                                                              for s in scorers)] for label, where in parts]
    return "\n".join(text + [table(["subset", "pairs", *scorers], rows), ""])


def summary_lines(report: dict, scorers: list[str]) -> list[str]:
    """The summary table (the paper's columns) and the breakdown table (the other headline numbers)."""
    summary = summary_table(report)
    columns = list(dict.fromkeys(c for row in summary.values() for c in row))
    main = [c for c in columns if any(c in cols for cols in SUMMARY_COLUMNS.values())]
    rest = [c for c in columns if c not in main]

    def show(c: dict | None, column: str) -> str:
        if c is None:
            return "–"
        if c["value"] is None:
            return "not evaluated" if c.get("note", "").startswith("not evaluated") else "–"
        if column == "Consistency AUC":
            return f"{c['value']:.3f}"
        return interval(c["value"], c["lo"], c["hi"]) + ("*" if c.get("complete") is False else "")

    lines = ["## Summary", "", "Accuracy % with its bootstrap 95% interval [lo, hi]. RM-B: mean over the RM-Bench "
             "domains present; RewardBench: the official section-weighted score (* when a section had no pair).", "",
             table(["scorer", *main], [[s, *(show(summary[s].get(c), c) for c in main)] for s in scorers]), ""]
    notes = {b: v["status"] for b, v in report["benchmarks"].items() if "scorers" not in v}
    lines += [f"- {b}: {status}" for b, status in notes.items()] + ([""] if notes else [])
    if rest:
        lines += ["Breakdown:", "", table(["scorer", *rest], [[s, *(show(summary[s].get(c), c) for c in rest)]
                                                             for s in scorers]), ""]
    return lines


def write_markdown(report: dict, path: Location) -> None:
    scorers = list(report["scorers"])
    lines = ["# Reward-model evaluation", "",
             "Pointwise scores, a pair is right when R(chosen) > R(rejected); ties (|margin| <= "
             f"{report['tie_eps']:g}) count half. Accuracies and ECE in %; intervals: percentile bootstrap, "
             f"{report.get('n_bootstrap', '?')} resamples (pairs; RM-Bench: prompts; within subsets, domains or sets "
             "where the score averages over them).", ""]
    lines += [f"- **{s}**: {info['source']}" for s, info in report["scorers"].items()]
    lines += ["", *summary_lines(report, scorers)]
    lines += ["## Benchmarks", ""] + [benchmark_section(n, b, scorers) for n, b in report["benchmarks"].items()]
    cal = report.get("calibration")
    if not cal:
        lines += ["## Calibration", "", "Not computed: it needs rm_bench among the benchmarks.", ""]
    else:
        lines += ["## Calibration (RM-Bench normal pairs)", "", cal["note"], ""]
        rows = [[s, c.get("n", 0), pct(c.get("ece")), *(f"{c[k]:.3f}" if k in c else "–" for k in ("a", "b")),
                 c.get("error", "")] for s, c in cal["scorers"].items()]
        lines += [table(["scorer", "pairs", "ECE", "a", "b", "note"], rows), ""]
        curves = {s: c["thresholds"] for s, c in cal["scorers"].items() if s not in BASELINES and "thresholds" in c}
        if curves:
            header = ["threshold", *(f"{s} {k}" for s in curves for k in ("acc", "coverage"))]
            thresholds = [t["threshold"] for t in next(iter(curves.values()))]
            rows = [[f"{t:g}", *(pct(curves[s][i][m]) for s in curves for m in ("accuracy", "coverage"))]
                    for i, t in enumerate(thresholds)]
            lines += [table(header, rows), "", "![threshold accuracy](threshold_accuracy.png)",
                      "![reliability](reliability.png)", ""]
        confident = {s: c["confident"] for s, c in cal["scorers"].items() if "confident" in c}
        if confident:  # scale-free: the same shares of most confident pairs for every scorer
            coverages = [r["coverage"] for r in next(iter(confident.values()))]
            rows = [[s, *(pct(r["accuracy"]) for r in rows)] for s, rows in confident.items()]
            lines += ["Accuracy on the most confident pairs (largest |margin|), by share of pairs kept:", "",
                      table(["scorer", *(f"top {100 * q:g}%" for q in coverages)], rows), ""]
    cons = report.get("consistency")
    if cons:
        lines += ["## Cross-sample consistency", "", cons["note"], ""]
        rows = [[s, c["scored"], c["failed"], c["positive"], c["negative"],
                 f"{c['auc']:.3f}" if "auc" in c else c.get("error", "–")] for s, c in cons["scorers"].items()]
        lines += [table(["scorer", "scored", "failed", "positive", "negative", "ROC-AUC"], rows), ""]
    errors = {s: info["errors"] for s, info in report["scorers"].items() if info["errors"]}
    if errors:
        lines += ["## Scoring errors (examples left out)", ""]
        lines += [f"- {s}: {n} x `{msg}`" for s, errs in errors.items() for msg, n in errs.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_threshold_accuracy(curves: dict[str, list[dict]], confident: dict[str, list[dict]], n_pairs: int,
                            path: Location) -> None:
    """Left: the paper's accuracy and coverage by absolute margin (models only). Right: accuracy on the most
    confident share of pairs, which reads the same for any reward scale: a model whose margins all fall under
    the first threshold is flat on the left but still shows its ranking here, next to the baselines."""
    def percents(rows, key):  # accuracy is NaN where no pair was kept: matplotlib leaves a gap
        return [100 * r[key] for r in rows]

    plt = pyplot()
    fig, (ax, share) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    colors = {name: f"C{k}" for k, name in enumerate(dict.fromkeys([*curves, *confident]))}
    for name, rows in curves.items():
        x = [r["threshold"] for r in rows]
        ax.plot(x, percents(rows, "accuracy"), "o-", color=colors[name], label=f"{name}: accuracy")
        ax.plot(x, percents(rows, "coverage"), "s--", color=colors[name], alpha=0.7,
                label=f"{name}: coverage")
    ax.set(xlabel="margin threshold t: pairs with |R(chosen) − R(rejected)| ≥ t (reward units)", ylabel="%",
           ylim=(0, 102), title=f"Accuracy and coverage by margin (n = {n_pairs})")
    for name, rows in confident.items():
        share.plot(percents(rows, "coverage"), percents(rows, "accuracy"), "o-",
                   color=colors[name], label=name)
    share.set(xlabel="most confident pairs kept (% of pairs, by |margin|)", ylabel="accuracy %", ylim=(0, 102),
              title="Accuracy on the most confident pairs")
    share.invert_xaxis()
    for a in (ax, share):
        a.axhline(50, color="grey", lw=0.8, ls=":")
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="best")
    fig.suptitle("RM-Bench normal pairs", fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)


def plot_reliability(results: dict[str, dict], path: Location) -> None:
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect calibration")
    width = 1 / len(results[next(iter(results))]["bins"]) / (len(results) + 1)
    for k, (name, res) in enumerate(results.items()):
        bins = [b for b in res["bins"] if b["count"]]
        ax.plot([b["mean_prob"] for b in bins], [b["accuracy"] for b in bins], "o-", color=f"C{k}",
                label=f"{name} (ECE {100 * res['ece']:.1f}%)")
        hist.bar([b["lo"] + (k + 0.5) * width for b in res["bins"]], [b["count"] for b in res["bins"]],
                 width=width, align="edge", color=f"C{k}", alpha=0.7)
    ece = ", ".join(f"{n} {100 * r['ece']:.1f}%" for n, r in results.items())
    ax.set(ylabel="share where the first reply is preferred", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability, Platt-calibrated, held-out half\nECE: {ece}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    hist.set(xlabel="calibrated P(first reply preferred)", ylabel="pairs")
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)


def write_report(report: dict, out: Location) -> None:
    (out / "report.json").write_text(json.dumps(jsonable(report), indent=2) + "\n", encoding="utf-8")
    write_markdown(report, out / "report.md")
    cal = (report.get("calibration") or {}).get("scorers", {})
    models = {s: c for s, c in cal.items() if s not in BASELINES and "ece" in c}
    if models:
        plot_threshold_accuracy({s: c["thresholds"] for s, c in models.items()},
                                {s: c["confident"] for s, c in cal.items() if "confident" in c},
                                max(c["n"] for c in models.values()), out / "threshold_accuracy.png")
        plot_reliability(models, out / "reliability.png")
