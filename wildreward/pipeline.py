"""``wildreward pipeline``: labeller -> extract -> train -> eval -> serve -> (optional) online DPO as one run, one
YAML with a section per stage (jobs/configs/pipeline_default.yaml includes the stage configs). ``labeller`` trains
the feedback classifier that extraction then labels with (``extract.annotator.backend: classifier``).

The pipeline wires the stages together: each stage's inputs are the previous stages' outputs under
``output_dir`` (``<output_dir>/<stage>``), whatever the sections say about them. A stage whose outputs are
complete is skipped, so re-running after a crash continues with the first unfinished stage (and extract and train
resume inside themselves); ``force`` redoes named stages from scratch, and the stages after them. ``serve`` deploys
the trained RM on Ray Serve, checks it scores like the offline model, and keeps it up for ``dpo``; the application
is removed at the end unless ``keep_serving`` is set.
"""
from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import Field, model_validator

from wildreward import ray_compat as rc
from wildreward.config import Section, save_config
from wildreward.dpo.config import DPOConfig
from wildreward.eval.config import EvalConfig
from wildreward.extract.classifier import LabellerConfig
from wildreward.extract.config import ExtractConfig
from wildreward.logs import stage_logger
from wildreward.serve.config import ServeConfig
from wildreward.train.config import TrainConfig
from wildreward.storage import Location, read_table

STAGES = ("labeller", "extract", "train", "eval", "serve", "dpo")
Stage = Literal["labeller", "extract", "train", "eval", "serve", "dpo"]


class PipelineConfig(Section):
    output_dir: str = "outputs/pipeline"
    stages: list[Stage] = Field(["extract", "train", "eval", "serve"], description="Stages to run, in order.")
    force: list[Stage] = Field(default_factory=list, description=(
        "Redo these stages from scratch, and every stage after them: their outputs (and the trainers' checkpoints) "
        "are deleted first."))
    keep_serving: bool = Field(False, description="Leave the RM deployed when the pipeline ends.")
    labeller: LabellerConfig = LabellerConfig()
    extract: ExtractConfig = ExtractConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    serve: ServeConfig = ServeConfig()
    dpo: DPOConfig = DPOConfig()

    @model_validator(mode="after")
    def _check(self):
        if "dpo" in self.stages and "serve" not in self.stages:
            raise ValueError("dpo needs the serve stage (the policy is scored by the served RM)")
        if "labeller" in self.stages and self.extract.annotator.backend != "classifier":
            raise ValueError("the labeller stage trains a classifier for extract.annotator.backend=classifier; "
                             f"the annotator is {self.extract.annotator.backend!r}")
        return self


def wire(cfg: PipelineConfig) -> PipelineConfig:
    """Point every stage at its folder and at the previous stages' outputs."""
    out = Location.parse(cfg.output_dir)
    data = cfg.model_dump(mode="json")
    data["output_dir"] = str(out)
    data["labeller"]["output_dir"] = str(out / "labeller")
    if "labeller" in cfg.stages:
        data["extract"]["annotator"]["classifier"]["model_dir"] = str(out / "labeller" / "model")
    data["extract"]["output_dir"] = str(out / "extract")
    data["train"].update(output_dir=str(out / "train"))
    data["train"]["data"].update(train=[str(out / "extract" / "train")], test=[str(out / "extract" / "test")])
    data["eval"].update(output_dir=str(out / "eval"), model_dir=str(out / "train" / "model"),
                        consistency_data=str(out / "extract" / "test"))
    data["serve"]["model_dir"] = str(out / "train" / "model")
    data["dpo"]["output_dir"] = str(out / "dpo")
    data["dpo"]["rm"].update(app_name=cfg.serve.name, endpoint=None)
    return PipelineConfig.model_validate(data)


def done_marker(stage: str, cfg: PipelineConfig) -> Location:
    out = Location.parse(cfg.output_dir)
    return {"labeller": out / "labeller" / "model" / "labeller.json", "extract": out / "extract" / "stats.json",
            "train": out / "train" / "model" / "wildreward.json",
            "eval": out / "eval" / "report.json", "dpo": out / "dpo" / "report.json",
            "serve": out / "serve" / "check.json"}[stage]


log = stage_logger("pipeline")


def forced_stages(force: list[str]) -> list[str]:
    """The forced stages and every stage after them: a later stage's output was made from the old one's."""
    first = min((STAGES.index(stage) for stage in force), default=len(STAGES))
    return list(STAGES[first:])


def clear_stage(stage: str, cfg: PipelineConfig) -> None:
    """Delete what a forced stage would otherwise reuse: its outputs and, for the trainers, the checkpoints of their
    run (Ray Train would resume the finished run and export the same model again)."""
    (Location.parse(cfg.output_dir) / stage).rmtree()
    section = cfg.labeller.train if stage == "labeller" else getattr(cfg, stage, None)
    checkpoint = getattr(section, "checkpoint", None)
    if checkpoint is not None and checkpoint.storage_path:
        (Location.parse(checkpoint.storage_path) / checkpoint.name).rmtree()


def serve_and_check(cfg: PipelineConfig) -> dict[str, Any]:
    """Deploy the RM and check that served scores equal offline scores on a few extracted turns."""
    from wildreward.rm import RewardModel
    from wildreward.serve.app import build_app

    rc.serve_run(build_app(cfg.serve), name=cfg.serve.name, host=cfg.serve.host, port=cfg.serve.port,
                 route_prefix=cfg.serve.route_prefix)
    rows = read_table(cfg.eval.consistency_data, ["history", "query", "response"]).slice(0, 8).to_pylist()
    items = [{"history": r["history"] or [], "query": r["query"], "response": r["response"]} for r in rows]
    served = [r["reward"] for r in rc.serve_handle(cfg.serve.name).score.remote(items).result(timeout_s=300)]
    offline = RewardModel(cfg.serve.model_dir).score(items)
    diff = max((abs(a - b) for a, b in zip(served, offline)), default=0.0)
    if diff > 1e-3:
        raise RuntimeError(f"served scores differ from offline scores by {diff:.2g}")
    return {"app": cfg.serve.name, "url": f"http://{cfg.serve.host}:{cfg.serve.port}{cfg.serve.route_prefix}",
            "checked_items": len(items), "max_abs_diff": diff}


def run_pipeline(cfg: PipelineConfig) -> dict[str, Any]:
    from wildreward.dpo.pipeline import run_dpo
    from wildreward.eval.pipeline import run_eval
    from wildreward.extract.classifier import run_labeller
    from wildreward.extract.pipeline import run_extract
    from wildreward.train.pipeline import run_train

    cfg = wire(cfg)
    out = Location.parse(cfg.output_dir)
    save_config(cfg, out, "pipeline")
    rc.init_ray()
    runners = {"labeller": lambda: run_labeller(cfg.labeller), "extract": lambda: run_extract(cfg.extract),
               "train": lambda: run_train(cfg.train),
               "eval": lambda: run_eval(cfg.eval), "serve": lambda: serve_and_check(cfg),
               "dpo": lambda: run_dpo(cfg.dpo)}
    summary: dict[str, Any] = {"stages": {}}
    forced = forced_stages(cfg.force)
    served = False
    try:
        for stage in (s for s in STAGES if s in cfg.stages):
            marker = done_marker(stage, cfg)
            if stage in forced:
                log(f"{stage}: forced, deleting its earlier outputs")
                clear_stage(stage, cfg)
            elif marker.exists() and stage != "serve":
                log(f"{stage}: done before ({marker}), skipped")
                summary["stages"][stage] = {"skipped": True, "seconds": 0.0}
                continue
            log(f"{stage}: starting")
            start = time.perf_counter()
            served = served or stage == "serve"  # before deploying: a failed check must not leave it up
            result = runners[stage]()
            if stage == "serve":
                marker.write_text(json.dumps(result, indent=2) + "\n")
            seconds = round(time.perf_counter() - start, 1)
            summary["stages"][stage] = {"skipped": False, "seconds": seconds}
            log(f"{stage}: finished in {seconds} s")
    finally:
        if served and not cfg.keep_serving:
            rc.serve_delete(cfg.serve.name)
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
