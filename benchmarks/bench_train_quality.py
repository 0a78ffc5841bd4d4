"""bench_train_quality: held-out ordinal metrics of reward models trained on real extracted data, MiniLM and
SmolLM2 backbones, each with the paper's independent head and the CORAL (cumulative-link) head.

Input: one or more `wildreward extract` output dirs (their train/ and test/ are concatenated), e.g. runs on the
WildChat sample, Arena + LMSYS and ShareGPT:

    .venv/bin/python benchmarks/bench_train_quality.py --data /tmp/realruns/wildchat /tmp/realruns/sharegpt \
        /tmp/realruns/arena_lmsys [--smollm2-rows 160]

The table also gives the majority-class predictor, which any useful model must beat: with a weak annotator
almost every label is the same and the metrics say little about the backbones (see the label counts).
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as pads

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import remove_work_dir, write_results  # noqa: E402
from wildreward.config import load_config  # noqa: E402
from wildreward.train.config import TrainConfig  # noqa: E402
from wildreward.train.pipeline import run_train  # noqa: E402


def label_counts(dirs: list[str], split: str) -> dict[int, int]:
    counts: collections.Counter = collections.Counter()
    for d in dirs:
        counts.update(pads.dataset(f"{d}/{split}", format="parquet").to_table(columns=["label"])["label"].to_pylist())
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="extract output dirs")
    parser.add_argument("--smollm2-rows", type=int, default=160, help="train rows for SmolLM2 (CPU time)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--keep-outputs", action="store_true", help="keep the work dir (several GB) for inspection")
    args = parser.parse_args()
    train = [f"{d}/train" for d in args.data]
    test = [f"{d}/test" for d in args.data]
    counts = {"train": label_counts(args.data, "train"), "test": label_counts(args.data, "test")}
    tmp = Path(tempfile.mkdtemp(prefix="bench_quality_"))
    results: dict = {"data": args.data, "label_counts": counts, "runs": {}}
    for backbone in ("minilm", "smollm2"):
        for head in ("independent", "coral"):
            name = f"{backbone}-{head}"
            overrides = [f"model.backbone={backbone}", f"model.head={head}", f"output_dir={tmp / name}",
                         "model.max_length=512", "optim.lr=5e-5", f"epochs={args.epochs}",
                         "batch.global_batch_size=16", "batch.micro_batch_size=4", "batch.length_group_size=16",
                         "checkpoint.every_steps=1000", "dist.num_workers=2"]
            if backbone == "smollm2":
                overrides.append(f"data.max_train_rows={args.smollm2_rows}")
            cfg = load_config(TrainConfig, None, [f"data.train={json.dumps(train)}", f"data.test={json.dumps(test)}",
                                                  *overrides])
            start = time.perf_counter()
            summary = run_train(cfg)
            results["runs"][name] = {"train_rows": cfg.data.max_train_rows or sum(counts["train"].values()),
                                     "final_train_loss": summary["final_loss"], "eval": summary["eval"],
                                     "wall_s": time.perf_counter() - start}
            print(name, results["runs"][name], flush=True)
    n_test = sum(counts["test"].values())
    majority = max(counts["test"].values()) / n_test
    md = [f"Data: {', '.join(args.data)}. Labels from the extraction's annotator.", "",
          f"Label counts: train {counts['train']}, test {counts['test']}.", "",
          "| model | train rows | final train loss | accuracy | MAE | Spearman | AUC >1 | AUC >2 | AUC >3 | wall s |",
          "|---|---|---|---|---|---|---|---|---|---|",
          f"| majority class | | | {majority:.3f} | | | | | | |"]
    for name, r in results["runs"].items():
        e = r["eval"]
        md.append(f"| {name} | {r['train_rows']} | {r['final_train_loss']:.4f} | {e['accuracy']:.3f} | {e['mae']:.3f} "
                  f"| {e['spearman']:.3f} | {e['auc_gt1']:.3f} | {e['auc_gt2']:.3f} | {e['auc_gt3']:.3f} "
                  f"| {r['wall_s']:.0f} |")
    md += ["", "NaN: the held-out split has one class only for that threshold (or one level only overall)."]
    remove_work_dir(tmp, args.keep_outputs)
    print(write_results("bench_train_quality", results, "\n".join(md)))


if __name__ == "__main__":
    main()
