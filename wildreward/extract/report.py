"""``stats.json``, ``dataset_card.md`` and ``funnel.png`` for an extraction run; annotator agreement vs gold."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from wildreward.extract.config import ExtractConfig
from wildreward.storage import Location, read_table, save_png

LEVEL_NAMES = {1: "clearly negative", 2: "correction", 3: "positive engagement", 4: "clear satisfaction"}


def reconcile(stats: dict) -> dict:
    """Every count must be explained: in = kept + filtered + quarantined, at each step."""
    r, t, a, f = stats["read"], stats["turns"], stats["annotate"], stats["final"]
    checks = {
        "records = conversations + quarantined": r["records"] == r["conversations"] + sum(r["quarantined"].values()),
        "turns = kept + rule-filtered": t["turns"] == t["kept"] + sum(t["dropped"].values()),
        "kept turns = annotated": t["kept"] == a["annotated"],
        "annotated = final kept + final dropped": a["annotated"] == f["kept"] + sum(f["dropped"].values()),
        "final kept = train + test": f["kept"] == stats["split"]["train"]["rows"] + stats["split"]["test"]["rows"],
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise RuntimeError(f"counts do not reconcile: {bad}; stats: {json.dumps(stats)}")
    return {name: True for name in checks}


def gold_agreement(gold_file: str, annotated_dir: Location) -> dict:
    """Agreement of the annotator's raw 1-5 labels with a gold JSONL of {id, label}: accuracy, kappa, confusion."""
    gold = {}
    with open(gold_file, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                gold[str(row["id"])] = int(row["label"])
    pred = {r["id"]: r["label"] for r in read_table(annotated_dir, ["id", "label"]).to_pylist()}
    pairs = [(g, pred[i]) for i, g in gold.items() if pred.get(i) is not None]
    n = len(pairs)
    out = {"gold": len(gold), "matched": n, "missing_or_error": len(gold) - n}
    if not n:
        return out
    confusion = [[sum(1 for g, p in pairs if g == gi and p == pi) for pi in range(1, 6)] for gi in range(1, 6)]
    observed = sum(confusion[i][i] for i in range(5)) / n
    expected = sum(sum(confusion[i]) * sum(row[i] for row in confusion) for i in range(5)) / n ** 2
    kappa = (observed - expected) / (1 - expected) if expected < 1 else 1.0
    return {**out, "accuracy": round(observed, 4), "cohen_kappa": round(kappa, 4),
            "confusion_gold_rows_pred_cols": confusion}


def plot_funnel(stats: dict, path: Location) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [("turns", stats["turns"]["turns"]), ("after rule filters", stats["turns"]["kept"]),
             ("annotated OK", stats["annotate"]["annotated"] - stats["annotate"]["errors"]),
             ("final data set", stats["final"]["kept"])]
    levels = stats["final"]["levels"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax1.barh([s for s, _ in steps][::-1], [n for _, n in steps][::-1], color="#4C72B0")
    for i, (_, n) in enumerate(steps[::-1]):
        ax1.text(n, i, f" {n:,}", va="center")
    ax1.set_title("Turns through the pipeline")
    ax1.margins(x=0.25)
    names = [f"{k}: {LEVEL_NAMES[int(k)]}" for k in sorted(levels)]
    ax2.bar(names, [levels[k] for k in sorted(levels)], color="#55A868")
    ax2.set_title("Final label levels")
    ax2.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    plt.close(fig)


def _table(d: dict, head: tuple[str, str]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"] + [f"| {k} | {v:,} |" for k, v in d.items()]
    return "\n".join(lines)


def write_report(out: Location, cfg: ExtractConfig, stats: dict) -> None:
    stats["reconciled"] = reconcile(stats)
    if cfg.gold_file:
        stats["annotator_agreement"] = gold_agreement(cfg.gold_file, out / "stages" / "annotate")
    users = read_table([out / "train", out / "test"], ["user_id", "language"]) if stats["final"]["kept"] \
        else pa.table({"user_id": [], "language": []})
    stats["users"] = len(pc.unique(users["user_id"].drop_null())) if users.num_rows else 0
    stats["languages"] = {str(r["values"]): r["counts"] for r in pc.value_counts(users["language"]).to_pylist()} \
        if users.num_rows else {}
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    plot_funnel(stats, out / "funnel.png")
    r, t, a, f, s = stats["read"], stats["turns"], stats["annotate"], stats["final"], stats["split"]
    levels = {f"{k} ({LEVEL_NAMES[int(k)]})": v for k, v in f["levels"].items()}
    card = f"""# WildFB-style data set

Built by `wildreward extract` from {", ".join(cfg.read.paths)}. Annotator: `{cfg.annotator.model}`
({cfg.annotator.backend}, {cfg.annotator.mode}). Config: `config.yaml`; versions: `run_info.json`.

![funnel](funnel.png)

## Counts
- Records read: {r['records']:,}; conversations: {r['conversations']:,}; quarantined: {sum(r['quarantined'].values()):,}
  (`quarantine/`, reasons below)
- Turns: {t['turns']:,}; kept by the rule filters: {t['kept']:,}
- Annotated: {a['annotated']:,}; annotation errors (dropped, never given a label): {a['errors']:,}
- Final: {f['kept']:,} rows (train {s['train']['rows']:,} in {s['train']['conversations']:,} conversations,
  test {s['test']['rows']:,} in {s['test']['conversations']:,}; split by conversation)
- Mined by hindsight (neutral -> positive): {f['mined']:,} ({f.get('mined_kept', f['mined']):,} kept with that
  label, {f.get('mined_via_dropped', 0):,} of them rescued only by a later turn the rule filters dropped, whose
  label was asked for mining alone: {stats.get('lookahead', {}).get('annotated', 0):,} such turns annotated);
  relabelled by refusal validation: {f['refusal_relabelled']:,}
- Users: {stats['users']:,}

## Quarantined records
{_table(r['quarantined'], ('reason', 'records')) if r['quarantined'] else 'None.'}

## Rule filters (turns dropped, first failing rule)
{_table(t['dropped'], ('rule', 'turns'))}

## Annotator labels (raw 1-5, before refinement)
{_table(a['labels'], ('label', 'turns'))}

## Dropped after annotation
{_table(f['dropped'], ('reason', 'turns')) if f['dropped'] else 'None.'}

## Final levels
{_table(levels, ('level', 'rows'))}

## Languages (final)
{_table(stats['languages'], ('language', 'rows')) if stats['languages'] else 'None.'}
"""
    if "annotator_agreement" in stats:
        g = stats["annotator_agreement"]
        card += f"\n## Annotator agreement with gold\n{json.dumps(g)}\n"
    (out / "dataset_card.md").write_text(card)
