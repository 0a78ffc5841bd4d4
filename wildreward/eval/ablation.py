"""Data-strategy ablation (the paper's Table 2): RMs trained on data sets built with and without implicit-feedback
mining and with and without refusal validation, compared on the safety pairs and overall.

All variants share the expensive part: the first variant's read, turn and annotation stages are copied into the
others, whose extraction then resumes from them (the stages are keyed by config fingerprints, so only the
refusal, mining, final and split stages are redone). Each variant then trains with the same train config and is
evaluated with the same eval config.
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from wildreward.config import Section, save_config
from wildreward.eval.config import EvalConfig
from wildreward.extract.config import ExtractConfig
from wildreward.train.config import TrainConfig
from wildreward.storage import Location

VARIANTS = {"full": (True, True), "no_mining": (False, True), "no_refusal": (True, False),
            "neither": (False, False)}  # name -> (mining, refusal validation)
SHARED_STAGES = ("read", "turns", "annotate")
COLUMNS = ("XSTest Should-Refuse", "XSTest Should-Respond", "HH Harmless", "RM-B Avg", "LLMBar")


class AblationConfig(Section):
    output_dir: str = "outputs/ablation"
    variants: list[str] = Field(list(VARIANTS), description=f"Any of {list(VARIANTS)}; the first one annotates.")
    extract: ExtractConfig = ExtractConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()


def variant_configs(cfg: AblationConfig, name: str, out: Location) -> tuple[ExtractConfig, TrainConfig, EvalConfig]:
    mining, refusal = VARIANTS[name]
    base = out / name
    extract = cfg.extract.model_copy(update={
        "output_dir": str(base / "extract"), "mining": cfg.extract.mining.model_copy(update={"enabled": mining}),
        "refusal": cfg.extract.refusal.model_copy(update={"enabled": refusal})})
    train = cfg.train.model_copy(update={
        "output_dir": str(base / "train"), "checkpoint": cfg.train.checkpoint.model_copy(update={"name": name}),
        "data": cfg.train.data.model_copy(update={"train": [str(base / "extract" / "train")],
                                                  "test": [str(base / "extract" / "test")]})})
    evaluate = cfg.eval.model_copy(update={"output_dir": str(base / "eval"), "model_dir": str(base / "train" / "model"),
                                           "consistency_data": str(base / "extract" / "test")})
    return extract, train, evaluate


def headline_row(report: dict[str, Any]) -> dict[str, float | None]:
    from wildreward.eval.report import headline

    row: dict[str, float | None] = {}
    for bench, result in report["benchmarks"].items():
        if "scorers" in result:  # benchmarks whose files are absent are not evaluated
            row.update(headline(bench, result["scorers"]["rm"]))
    values = [row.get(c) for c in COLUMNS if row.get(c) is not None]
    row["Overall"] = sum(values) / len(values) if values else None
    return row


def run_ablation(cfg: AblationConfig) -> dict[str, Any]:
    from wildreward.eval.pipeline import run_eval
    from wildreward.extract.pipeline import run_extract
    from wildreward.train.pipeline import run_train

    unknown = set(cfg.variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    out = Location.parse(cfg.output_dir)
    save_config(cfg, out, "ablation")
    results: dict[str, Any] = {}
    first = None
    for name in cfg.variants:
        extract, train, evaluate = variant_configs(cfg, name, out)
        if first is not None:  # reuse the annotation of the first variant
            for stage in SHARED_STAGES:
                src, dst = first / "stages" / stage, Location.parse(extract.output_dir) / "stages" / stage
                if src.exists() and not dst.exists():
                    src.copy_to(dst)
        stats = run_extract(extract)
        first = first or Location.parse(extract.output_dir)
        run_train(train)
        report = run_eval(evaluate)
        results[name] = {"mining": VARIANTS[name][0], "refusal_validation": VARIANTS[name][1],
                         "train_rows": stats["split"]["train"]["rows"], "levels": stats["final"]["levels"],
                         "mined": stats["final"]["mined"], "refusal_relabelled": stats["final"]["refusal_relabelled"],
                         "scores": headline_row(report)}
    (out / "ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "ablation.md").write_text(ablation_table(results))
    return results


def ablation_table(results: dict[str, Any]) -> str:
    columns = [*COLUMNS, "Overall"]
    lines = ["| variant | mining | refusal validation | train rows | mined | relabelled | " + " | ".join(columns)
             + " |", "|---|---|---|---|---|---|" + "---|" * len(columns)]
    for name, r in results.items():
        cells = [f"{100 * r['scores'][c]:.1f}" if r["scores"].get(c) is not None else "n/a" for c in columns]
        lines.append(f"| {name} | {'yes' if r['mining'] else 'no'} | {'yes' if r['refusal_validation'] else 'no'} | "
                     f"{r['train_rows']} | {r['mined']} | {r['refusal_relabelled']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
