"""Scores -> the evaluation report: accuracies per benchmark and subset, calibration, consistency; written as
report.json, report.md and two PNG plots.

Scores arrive as float arrays with NaN for an example a scorer failed on. A pair (an RM-Bench prompt: all six
replies) with a missing score is left out of that scorer's metrics and counted as ``failed``.
"""
from __future__ import annotations

import json
import math
import numpy as np

from wildreward.eval.metrics import (accuracy_at_coverage, pairwise_accuracy, platt_calibration, rm_bench_accuracy,
                                     roc_auc, threshold_accuracy)
from wildreward.plots import pyplot
from wildreward.storage import Location, save_png

# Subsets pooled into named groups (LLMBar: RewardBench's Chat-Hard split into its natural and adversarial parts).
GROUPS = {"llmbar": {"natural": ("llmbar-natural",), "adversarial": ("llmbar-adver",)}}
MODEL_SCORERS = ("rm", "second_rm")  # scorers on the reward scale, whose margins the threshold curve reads
MIN_CALIBRATION_PAIRS = 10


# ---------------------------------------------------------------- metrics per scorer

def accuracy_result(pairs: list[dict], chosen: np.ndarray, rejected: np.ndarray, benchmark: str,
                    tie_eps: float) -> dict:
    """Pair accuracy overall, per subset and per group, on the pairs this scorer scored."""
    ok = np.isfinite(chosen) & np.isfinite(rejected)
    subsets = np.array([p["subset"] for p in pairs])
    out = {"scored": int(ok.sum()), "failed": int((~ok).sum())}
    if not ok.any():
        return out

    def acc(mask: np.ndarray) -> dict | None:
        mask = mask & ok
        return pairwise_accuracy(chosen[mask], rejected[mask], tie_eps) if mask.any() else None

    out["overall"] = acc(np.ones(len(pairs), bool))
    out["subsets"] = {s: acc(subsets == s) for s in sorted(set(subsets))}
    groups = {g: acc(np.array([s.startswith(prefixes) for s in subsets]))
              for g, prefixes in GROUPS.get(benchmark, {}).items()}
    out["groups"] = {g: r for g, r in groups.items() if r}
    return out


def rm_bench_result(pairs: list[dict], chosen: np.ndarray, rejected: np.ndarray, tie_eps: float) -> dict:
    """RM-Bench easy / normal / hard / avg overall and per domain. ``pairs`` come from
    :func:`~wildreward.eval.benchmarks.flatten_rm_bench`: nine per prompt, pair 3i + j = chosen i vs rejected j."""
    chosen, rejected = chosen.reshape(-1, 3, 3), rejected.reshape(-1, 3, 3)
    by_chosen, by_rejected = chosen[:, :, 0], rejected[:, 0, :]  # [prompt, style]
    ok = np.isfinite(by_chosen).all(1) & np.isfinite(by_rejected).all(1)
    domains = np.array([p["subset"] for p in pairs[::9]])
    out = {"scored": int(ok.sum()), "failed": int((~ok).sum())}
    if not ok.any():
        return out

    def acc(mask: np.ndarray) -> dict:
        res = rm_bench_accuracy(by_chosen[mask], by_rejected[mask], tie_eps)
        outcomes = np.abs(by_chosen[mask][:, :, None] - by_rejected[mask][:, None, :]) <= tie_eps
        return {**res, "tie_rate": float(outcomes.mean())}

    out["overall"] = acc(ok)
    out["subsets"] = {d: acc(ok & (domains == d)) for d in sorted(set(domains)) if (ok & (domains == d)).any()}
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

def headline(benchmark: str, res: dict) -> dict[str, float]:
    """The numbers that go into the main table, as in the paper's Table 1 plus the safety splits of §4.1."""
    if "overall" not in res:
        return {}
    if benchmark == "rm_bench":
        return {f"RM-B {k.capitalize()}": res["overall"][k] for k in ("easy", "normal", "hard", "avg")}
    sub = {k: v["accuracy"] for k, v in res["subsets"].items() if v}
    grp = {k: v["accuracy"] for k, v in res.get("groups", {}).items()}
    named = {
        "llmbar": {"LLMBar": res["overall"]["accuracy"], "LLMBar Natural": grp.get("natural"),
                   "LLMBar Adv.": grp.get("adversarial")},
        "xstest": {"XSTest Should-Refuse": sub.get("xstest-should-refuse"),
                   "XSTest Should-Respond": sub.get("xstest-should-respond")},
        "hh_harmless": {"HH Harmless": res["overall"]["accuracy"]},
        "rewardbench": {"RewardBench (pairs)": res["overall"]["accuracy"]},
        "judgebench": {"JudgeBench": res["overall"]["accuracy"]},
        "ppe_human": {"PPE Human": res["overall"]["accuracy"]},
    }.get(benchmark, {benchmark: res["overall"]["accuracy"]})
    return {k: v for k, v in named.items() if v is not None}


def summary_table(report: dict) -> dict[str, dict[str, float]]:
    """scorer -> {column: value}; accuracies in [0, 1], AUC and ECE as they are."""
    rows: dict[str, dict[str, float]] = {}
    for name in report["scorers"]:
        row = rows.setdefault(name, {})
        for bench, b in report["benchmarks"].items():
            row.update(headline(bench, b["scorers"][name]))
        cons = (report.get("consistency") or {}).get("scorers", {}).get(name, {})
        if "auc" in cons:
            row["Consistency AUC"] = cons["auc"]
        cal = (report.get("calibration") or {}).get("scorers", {}).get(name, {})
        if "ece" in cal:
            row["ECE (RM-B Normal)"] = cal["ece"]
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


def accuracy_cell(res: dict | None) -> str:
    if not res:
        return "–"
    value = res.get("accuracy", res.get("avg"))
    ties = res.get("tie_rate", 0.0)
    return pct(value) + (f" ({100 * ties:.0f}% ties)" if ties >= 0.005 else "")


def benchmark_section(name: str, b: dict, scorers: list[str]) -> str:
    unit = "prompts" if name == "rm_bench" else "pairs"
    skipped = ", ".join(f"{reason}: {n}" for reason, n in b["skip_reasons"].items()) or "none"
    counts = table(["scorer", f"{unit} scored", "failed"],
                   [[s, b["scorers"][s]["scored"], b["scorers"][s]["failed"]] for s in scorers])
    text = [f"### {name}", f"`{b['path']}`: {b['loaded']} {unit} loaded, {b['evaluated']} evaluated "
            f"({b['not_sampled']} left out by max_pairs); rows skipped by the loader: {skipped}.", "", counts, ""]
    if name == "rm_bench":
        for s in scorers:
            res = b["scorers"][s]
            if "overall" not in res:
                continue
            rows = [[d, r["n"], *(pct(r[k]) for k in ("easy", "normal", "hard", "avg")), pct(r["tie_rate"])]
                    for d, r in [*res["subsets"].items(), ("all", res["overall"])]]
            text += [f"{s}:", "", table(["domain", "prompts", "easy", "normal", "hard", "avg", "ties"], rows), ""]
        return "\n".join(text)
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


def write_markdown(report: dict, path: Location) -> None:
    scorers = list(report["scorers"])
    summary = summary_table(report)
    columns = list(dict.fromkeys(c for row in summary.values() for c in row))

    def cell(column: str, value: float) -> str:
        return f"{value:.3f}" if column == "Consistency AUC" else pct(value)

    lines = ["# Reward-model evaluation", "",
             "Pointwise scores, a pair is right when R(chosen) > R(rejected); ties (|margin| <= "
             f"{report['tie_eps']:g}) count half. Accuracies and ECE in %.", ""]
    lines += [f"- **{s}**: {info['source']}" for s, info in report["scorers"].items()]
    lines += ["", "## Summary", "", table(["scorer", *columns],
                                          [[s, *(cell(c, summary[s][c]) if c in summary[s] else "–" for c in columns)]
                                           for s in scorers]), ""]
    lines += ["## Benchmarks", ""] + [benchmark_section(n, b, scorers) for n, b in report["benchmarks"].items()]
    cal = report.get("calibration")
    if not cal:
        lines += ["## Calibration", "", "Not computed: it needs rm_bench among the benchmarks.", ""]
    else:
        lines += ["## Calibration (RM-Bench normal pairs)", "", cal["note"], ""]
        rows = [[s, c.get("n", 0), pct(c.get("ece")), *(f"{c[k]:.3f}" if k in c else "–" for k in ("a", "b")),
                 c.get("error", "")] for s, c in cal["scorers"].items()]
        lines += [table(["scorer", "pairs", "ECE", "a", "b", "note"], rows), ""]
        curves = {s: c["thresholds"] for s, c in cal["scorers"].items() if s in MODEL_SCORERS and "thresholds" in c}
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
    models = {s: c for s, c in cal.items() if s in MODEL_SCORERS and "ece" in c}
    if models:
        plot_threshold_accuracy({s: c["thresholds"] for s, c in models.items()},
                                {s: c["confident"] for s, c in cal.items() if "confident" in c},
                                max(c["n"] for c in models.values()), out / "threshold_accuracy.png")
        plot_reliability(models, out / "reliability.png")
