"""bench_eval_quality: the issue-5 report for reward models trained on real extracted data, MiniLM and SmolLM2
backbones, next to the random and longer-reply-wins baselines, plus the users-vs-performance curve and (with
`--ablation`) the data-strategy ablation table.

Input: `wildreward extract` output dirs (their train/ and test/ are concatenated), e.g. the real runs on the
WildChat sample, Arena + LMSYS and ShareGPT:

    .venv/bin/python benchmarks/bench_eval_quality.py --data /tmp/realruns/wildchat /tmp/realruns/sharegpt \
        /tmp/realruns/arena_lmsys [--max-pairs 150] [--smollm2-rows 160] \
        [--ablation 'extract.read.paths=[../shared/data/chatlogs/chatbot_arena_sample.jsonl]' ...]

`--ablation` takes dotted overrides of jobs/configs/ablation_default.yaml (its extraction re-reads raw logs and
annotates once for all variants); the MiniLM training settings below and this run's eval settings apply to it.

Writes benchmarks/results/bench_eval_quality.{json,md} and the report's PNGs under
benchmarks/results/bench_eval_quality/. Models trained on labels from a 135M-parameter annotator are expected near
chance; the table says how near.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, remove_work_dir, write_results  # noqa: E402
from benchmarks.bench_train_quality import label_counts  # noqa: E402
from wildreward.config import load_config  # noqa: E402
from wildreward.eval.ablation import AblationConfig, ablation_table, run_ablation  # noqa: E402
from wildreward.eval.config import EvalConfig  # noqa: E402
from wildreward.eval.pipeline import run_eval  # noqa: E402
from wildreward.eval.users import UsersScalingConfig, run_users_scaling  # noqa: E402
from wildreward.train.config import TrainConfig  # noqa: E402
from wildreward.train.pipeline import run_train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TRAIN_OVERRIDES = ["model.max_length=512", "optim.lr=5e-5", "batch.global_batch_size=16", "batch.micro_batch_size=4",
                   "batch.length_group_size=16", "checkpoint.every_steps=1000", "dist.num_workers=2"]


def train_rm(backbone: str, data: list[str], out: Path, max_rows: int | None) -> tuple[str, dict]:
    if (out / "model" / "wildreward.json").exists():  # finished in an earlier run with the same --work
        return str(out / "model"), {"held_out": json.loads((out / "eval.json").read_text())["eval"], "reused": True}
    overrides = [f"model.backbone={backbone}", f"output_dir={out}", *TRAIN_OVERRIDES,
                 f"data.train={json.dumps([f'{d}/train' for d in data])}",
                 f"data.test={json.dumps([f'{d}/test' for d in data])}"]
    if max_rows:
        overrides.append(f"data.max_train_rows={max_rows}")
    start = time.perf_counter()
    summary = run_train(load_config(TrainConfig, None, overrides))
    return summary["model_dir"], {"held_out": summary["eval"], "final_loss": summary["final_loss"],
                                  "wall_s": round(time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="extract output dirs")
    parser.add_argument("--max-pairs", type=int, default=150, help="per benchmark (RM-Bench: prompts)")
    parser.add_argument("--smollm2-rows", type=int, default=160, help="train rows for SmolLM2 (CPU time)")
    parser.add_argument("--users-examples", type=int, default=32)
    parser.add_argument("--ablation", nargs="*", metavar="KEY=VALUE",
                        help="also run the data-strategy ablation, with these overrides of ablation_default.yaml")
    parser.add_argument("--work", help="working dir; re-running with the same one reuses finished models, the eval "
                                       "report and finished users-scaling points (they resume from checkpoints)")
    args = parser.parse_args()
    tmp = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_eval_quality_"))
    results: dict = {"data": args.data, "label_counts": {s: label_counts(args.data, s) for s in ("train", "test")},
                     "training": {}}
    models = {}
    for backbone, rows in (("minilm", None), ("smollm2", args.smollm2_rows)):
        models[backbone], results["training"][backbone] = train_rm(backbone, args.data, tmp / backbone, rows)
    # The consistency set: every held-out row of the runs, in one folder.
    test_dir = tmp / "test"
    test_dir.mkdir(exist_ok=True)
    for i, d in enumerate(args.data):
        for f in sorted(Path(d, "test").glob("*.parquet")):
            shutil.copy(f, test_dir / f"{i}-{f.name}")
    start = time.perf_counter()
    eval_cfg = load_config(EvalConfig, None, [
        f"output_dir={tmp / 'eval'}", f"model_dir={models['minilm']}", f"second_model_dir={models['smollm2']}",
        f"data_dir={SHARED_DATA}", f"consistency_data={test_dir}", f"max_pairs={args.max_pairs}", "num_actors=2"])
    report_file = tmp / "eval" / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else run_eval(eval_cfg)
    results["eval_wall_s"] = round(time.perf_counter() - start)
    results["eval"] = {k: report[k] for k in ("scorers", "benchmarks", "calibration", "consistency") if k in report}
    users_cfg = UsersScalingConfig(
        output_dir=str(tmp / "users"), train_data=[f"{d}/train" for d in args.data],
        test_data=[f"{d}/test" for d in args.data], n_examples=args.users_examples, user_counts=[16, 32, 64, 128],
        seeds=[0, 1, 2], user_key="conversation_id", train_overrides=[*TRAIN_OVERRIDES, "dist.num_workers=1",
                                                                       "model.backbone=minilm"])
    results["users_scaling"] = run_users_scaling(users_cfg)
    if args.ablation is not None:
        ablation_cfg = load_config(AblationConfig, REPO / "jobs" / "configs" / "ablation_default.yaml", [
            f"output_dir={tmp / 'ablation'}", "train.model.backbone=minilm", *[f"train.{o}" for o in TRAIN_OVERRIDES],
            f"eval.data_dir={SHARED_DATA}", f"eval.max_pairs={args.max_pairs}", "eval.num_actors=2", *args.ablation])
        start = time.perf_counter()
        results["ablation"] = {"overrides": args.ablation, "variants": run_ablation(ablation_cfg),
                               "wall_s": round(time.perf_counter() - start)}
    figures = RESULTS / "bench_eval_quality"
    figures.mkdir(parents=True, exist_ok=True)
    for png in ("threshold_accuracy.png", "reliability.png"):
        shutil.copy(tmp / "eval" / png, figures / png)
    shutil.copy(tmp / "users" / "users_scaling.png", figures / "users_scaling.png")
    report_md = (tmp / "eval" / "report.md").read_text()
    curves = results["users_scaling"]["curves"]
    users_md = ["## Users vs performance (MiniLM, held-out split, mean ± std over 3 seeds)", "",
                "| users (conversations) | accuracy | Spearman | consistency AUC |", "|---|---|---|---|"]
    for i, point in enumerate(curves["accuracy"]):
        cells = [f"{c[i]['mean']:.3f} ± {c[i]['std']:.3f}" if i < len(c) else "n/a"
                 for c in (curves["accuracy"], curves["spearman"], curves["consistency_auc"])]
        users_md.append(f"| {point['users']} | " + " | ".join(cells) + " |")
    md = [f"Data: {', '.join(args.data)}; label counts {results['label_counts']}. `rm` = MiniLM "
          f"(all train rows), `second_rm` = SmolLM2-135M ({args.smollm2_rows} train rows); "
          f"{args.max_pairs} pairs per benchmark (RM-Bench: prompts). Training: "
          + ", ".join(f"{k} {v.get('wall_s', 'n/a (earlier run)')} s" for k, v in results["training"].items())
          + f"; eval {results['eval_wall_s']} s. Figures in benchmarks/results/bench_eval_quality/.", "",
          report_md.split("\n", 1)[1], "", *users_md]
    if "ablation" in results:
        md += ["", "## Data-strategy ablation (MiniLM, like the paper's Table 2; accuracies in %)", "",
               f"Extraction overrides: `{' '.join(args.ablation)}`; {results['ablation']['wall_s']} s.", "",
               ablation_table(results["ablation"]["variants"])]
    remove_work_dir(tmp, keep=bool(args.work))  # a named --work dir is kept for resuming
    print(write_results("bench_eval_quality", results, "\n".join(md)))


if __name__ == "__main__":
    main()
