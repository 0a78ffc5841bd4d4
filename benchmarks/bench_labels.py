"""bench_labels: every feedback labeller against the gold test split, in one run (issue 20).

    python benchmarks/bench_labels.py --chatlogs ../shared/data/chatlogs --qwen-rows 378

Labellers: keyword rules; SmolLM2-135M and Qwen2.5-Coder-1.5B prompted with the paper's rubric (hf backend,
constrained); a MiniLM feedback classifier trained on gold dev with the project's Ray Train path; and the cascade
(classifier, its least confident rows to Qwen). Prevalence-dependent figures (accuracy, F1) come from the
uniformly drawn part of test, with 95% bootstrap intervals. Test labels are read only to score: the labellers see
test turns loaded without them. LLM predictions are cached per (labeller, id) in --cache, so a teacher run that
takes hours on 2 CPUs can be done in parts (``--only qwen`` fills the cache, ``--llm-rows`` caps the rows).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import remove_work_dir, write_results  # noqa: E402
from wildreward.eval.metrics import expected_calibration_error, roc_auc  # noqa: E402
from wildreward.extract.gold import load_gold, read_gold  # noqa: E402
from wildreward.extract.labellers import (KeywordLabeller, agreement, bootstrap_interval,  # noqa: E402
                                          group_probs)

LLMS = {"smollm2": "smollm2", "qwen": "qwen2.5-1.5b"}
FIGURES = ("accuracy3", "negative_f1", "positive_f1")


def order_key(turn_id: str) -> str:
    """A fixed pseudo-random order: any prefix of the uniform rows is itself a uniform sample."""
    return hashlib.sha256(f"bench_labels:{turn_id}".encode()).hexdigest()


def llm_labeller(model: str, batch_size: int):
    from wildreward.extract.annotate import FeedbackAnnotator
    from wildreward.extract.config import AnnotatorConfig

    # neutral: the gold rubric rates only the user's reaction, never the response's own quality
    return FeedbackAnnotator(AnnotatorConfig(backend="hf", mode="constrained", model=model, max_field_chars=1000,
                                             batch_size=batch_size, unclear_feedback="neutral"))


def cached_predictions(name: str, model: str, turns: list[dict], cache: Path, max_rows: int, batch: int) -> dict:
    """{id: result} for the first ``max_rows`` turns, computing (and appending to ``cache``) the missing ones."""
    done = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            rec = json.loads(line)
            if rec["labeller"] == name:
                done[rec["id"]] = rec
    todo = [t for t in turns[:max_rows] if t["id"] not in done]
    if todo:
        labeller = llm_labeller(model, batch)
        for start in range(0, len(todo), batch):
            rows = todo[start:start + batch]
            t0 = time.perf_counter()
            results = labeller(rows)
            seconds = (time.perf_counter() - t0) / len(rows)
            with open(cache, "a") as fh:
                for row, res in zip(rows, results):
                    rec = {"labeller": name, "id": row["id"], **res, "seconds": seconds}
                    done[row["id"]] = rec
                    fh.write(json.dumps(rec) + "\n")
            print(f"{name}: {len(done)} cached, {seconds:.1f} s/turn", flush=True)
    return {t["id"]: done[t["id"]] for t in turns[:max_rows] if t["id"] in done}


def train_classifier(chatlogs: str, out: Path, overrides: list[str]) -> Path:
    """A feedback classifier as the main job makes it (jobs/configs/labeller_default.yaml, gold dev only)."""
    from wildreward.config import load_config
    from wildreward.extract.classifier import LabellerConfig, run_labeller

    cfg = load_config(LabellerConfig, "jobs/configs/labeller_default.yaml",
                      [f"output_dir={out}", f"chatlogs_dir={Path(chatlogs).resolve()}", *overrides])
    return Path(run_labeller(cfg)["model_dir"])


def measure_speed(labeller, rows: list[dict]) -> float:
    """Turns per second of one call on ``rows`` (model already loaded); run while nothing else uses the CPUs."""
    t0 = time.perf_counter()
    labeller(rows)
    return len(rows) / (time.perf_counter() - t0)


def classifier_predictions(model_dir: Path, turns: list[dict]) -> tuple[dict, float]:
    from wildreward.extract.labellers import ClassifierLabeller

    labeller = ClassifierLabeller(str(model_dir))
    labeller(turns[:8])  # warm-up
    t0 = time.perf_counter()
    results = labeller(turns)
    return {t["id"]: r for t, r in zip(turns, results)}, len(turns) / (time.perf_counter() - t0)


def summarise(preds: dict, gold: dict, ids: list[str], turns_per_s: float | None) -> dict:
    """Agreement figures with intervals on ``ids`` (the rows this labeller labelled), calibration of its
    negative / positive probabilities when it has them."""
    ids = [i for i in ids if i in preds]
    pred = [preds[i]["label"] for i in ids]
    true = [gold[i]["label"] for i in ids]
    row = agreement(pred, true) | {"turns_per_s": turns_per_s}
    row["ci95"] = {k: bootstrap_interval(pred, true, k) for k in FIGURES}
    probs = [preds[i].get("label_probs") for i in ids]
    if ids and all(p is not None for p in probs):
        grouped = group_probs(probs)
        neg, pos = np.array([y <= 2 for y in true]), np.array([y >= 4 for y in true])
        row["ece_negative"] = expected_calibration_error(grouped[:, 0], neg)
        row["ece_positive"] = expected_calibration_error(grouped[:, 2], pos)
        # ranking quality of P(negative), whatever the decision rule: an LLM's argmax can fail where this holds
        row["auc_negative"] = roc_auc(grouped[:, 0], neg) if 0 < neg.sum() < len(neg) else float("nan")
    return row


def cascade_curve(classifier: dict, llm: dict, gold: dict, ids: list[str]) -> list[dict]:
    """Negative-feedback F1 when the k least confident classifier rows take the LLM's label, for growing k."""
    ids = [i for i in ids if i in llm and llm[i]["label"] is not None]
    order = sorted(ids, key=lambda i: max(classifier[i]["label_probs"]))
    true = [gold[i]["label"] for i in ids]
    points = []
    for k in sorted({int(round(f * len(ids))) for f in np.linspace(0, 1, 11)}):
        sent = set(order[:k])
        pred = [llm[i]["label"] if i in sent else classifier[i]["label"] for i in ids]
        points.append({"llm_calls": k, "share": k / len(ids) if ids else 0.0,
                       **{f: agreement(pred, true)[f] for f in FIGURES}})
    return points


def plot_cascade(points: list[dict], teacher_f1: float | None, path: Path) -> None:
    from wildreward.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot([p["llm_calls"] for p in points], [p["negative_f1"] for p in points], "o-", label="cascade")
    if teacher_f1 is not None:
        ax.axhline(teacher_f1, color="grey", ls="--", label="LLM alone")
    ax.set_xlabel("LLM calls (least confident classifier rows)")
    ax.set_ylabel("negative-feedback F1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: dict, meta: dict, curve: list[dict]) -> str:
    def cell(row, key):
        lo, hi = row["ci95"][key]
        return f"{row[key]:.3f} [{lo:.2f}, {hi:.2f}]" if row["labelled"] else "-"

    lines = [f"Gold test, uniformly drawn part: {meta['uniform_test']} turns (gold classes {meta['gold_classes']}). "
             "Figures with 95% bootstrap intervals; `n` is the rows the labeller was run on (LLMs on a "
             "fixed random prefix), `unlabelled` the rows it left without a label.", "",
             "| labeller | n | unlabelled | 3-way acc | negative F1 | positive F1 | AUC neg | ECE neg | turns/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        ece = f"{row['ece_negative']:.3f}" if "ece_negative" in row else "-"
        auc = f"{row['auc_negative']:.3f}" if "auc_negative" in row else "-"
        speed = f"{row['turns_per_s']:.3g}" if row.get("turns_per_s") else "-"
        lines.append(f"| {name} | {row['n']} | {row['unlabelled']} | {cell(row, 'accuracy3')} | "
                     f"{cell(row, 'negative_f1')} | {cell(row, 'positive_f1')} | {auc} | {ece} | {speed} |")
    if curve:
        lines += ["", "Cascade (classifier first, its least confident rows to Qwen), on the rows Qwen labelled:", "",
                  "| LLM calls | share | negative F1 | 3-way acc |", "|---|---|---|---|"]
        lines += [f"| {p['llm_calls']} | {p['share']:.0%} | {p['negative_f1']:.3f} | {p['accuracy3']:.3f} |"
                  for p in curve]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chatlogs", default="../shared/data/chatlogs")
    ap.add_argument("--cache", default="benchmarks/results/bench_labels_llm_cache.jsonl")
    ap.add_argument("--llm-rows", type=int, default=378, help="uniform test rows SmolLM2 labels (a prefix)")
    ap.add_argument("--qwen-rows", type=int, default=378, help="uniform test rows Qwen labels (a prefix)")
    ap.add_argument("--only", choices=sorted(LLMS), help="only fill this LLM's cache, then stop")
    ap.add_argument("--skip", nargs="*", default=[], help="labellers to leave out")
    ap.add_argument("--labeller", nargs="*", default=[], help="overrides of jobs/configs/labeller_default.yaml")
    ap.add_argument("--finetune", action="store_true", help="also the fine-tuned classifier (Ray Train, slow)")
    ap.add_argument("--speed-rows", type=int, default=8, help="rows each LLM is timed on, alone, after loading")
    ap.add_argument("--keep-outputs", action="store_true")
    args = ap.parse_args()

    test = sorted(load_gold(args.chatlogs, ["test"], with_labels=False), key=lambda t: order_key(t["id"]))
    strata = {r["id"]: r["stratum"] for r in read_gold() if r["split"] == "test"}
    uniform = [t for t in test if strata[t["id"]] == "uniform"]
    cache = Path(args.cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    if args.only:
        rows = args.qwen_rows if args.only == "qwen" else args.llm_rows
        cached_predictions(args.only, LLMS[args.only], uniform, cache, rows, 4)
        return

    preds, speed = {}, {}
    t0 = time.perf_counter()
    preds["keyword"] = {t["id"]: r for t, r in zip(uniform, KeywordLabeller()(uniform))}
    speed["keyword"] = len(uniform) / (time.perf_counter() - t0)
    for name, model in LLMS.items():
        if name not in args.skip:
            rows = args.qwen_rows if name == "qwen" else args.llm_rows
            preds[name] = cached_predictions(name, model, uniform, cache, rows, 4)
            if args.speed_rows:  # the cache's timings were taken on a shared machine; time a few rows alone
                speed[name] = measure_speed(llm_labeller(model, 4), uniform[:args.speed_rows])
    work = Path(tempfile.mkdtemp(prefix="bench_labels_"))
    if "classifier" not in args.skip:
        model_dir = train_classifier(args.chatlogs, work / "probe", args.labeller)
        preds["classifier"], speed["classifier"] = classifier_predictions(model_dir, uniform)
    if args.finetune:
        model_dir = train_classifier(args.chatlogs, work / "finetune",
                                     ["kind=finetune", "decision_folds=2", *args.labeller])
        preds["finetuned"], speed["finetuned"] = classifier_predictions(model_dir, uniform)

    # Scoring: the only place test labels are read.
    gold = {r["id"]: r for r in read_gold() if r["split"] == "test"}
    ids = [t["id"] for t in uniform]
    rows = {name: summarise(p, gold, ids, speed.get(name)) for name, p in preds.items()}
    curve = []
    if "classifier" in preds and preds.get("qwen"):
        curve = cascade_curve(preds["classifier"], preds["qwen"], gold, ids)
        plot_cascade(curve, rows["qwen"]["negative_f1"], Path("benchmarks/results/bench_labels_cascade.png"))
    classes = {str(k): sum(gold[i]["label"] == k for i in ids) for k in range(1, 6)}
    meta = {"uniform_test": len(ids), "gold_classes": classes}
    results = {"meta": meta, "labellers": rows, "cascade": curve}
    if "classifier" in rows and "qwen" in rows and rows["qwen"].get("turns_per_s"):
        results["distillation"] = {
            "speedup": rows["classifier"]["turns_per_s"] / rows["qwen"]["turns_per_s"],
            "negative_f1_gap": rows["qwen"]["negative_f1"] - rows["classifier"]["negative_f1"]}
    write_results("bench_labels", results, markdown(rows, meta, curve))
    print(markdown(rows, meta, curve))
    remove_work_dir(work, args.keep_outputs)


if __name__ == "__main__":
    main()
