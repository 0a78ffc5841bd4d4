"""Config of the online DPO stage (``wildreward dpo``). Defaults follow the paper (§3.6) and its code unless noted."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from wildreward.config import Section
from wildreward.train.config import CheckpointConfig, DistConfig, OptimConfig


class PolicyConfig(Section):
    path: str = Field("smollm2", description="HF model dir or alias; also the frozen reference (paper: "
                                             "Llama-3.1-8B-Instruct).")
    use_chat_template: bool = Field(True, description="Prompt through the tokenizer's chat template (false: the "
                                                      "user text alone, for base models).")
    max_prompt_tokens: int = Field(1024, ge=1, description="Longer prompts are dropped (counted), not cut.")
    max_response_tokens: int = Field(4096, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n_samples: int = Field(8, ge=2, description="Responses per prompt; the pair is the best and the worst.")
    gradient_checkpointing: bool = Field(True, description="As the paper's code (4096-token responses).")


class RolloutConfig(Section):
    backend: Literal["vllm", "hf"] = Field("vllm", description="hf: transformers generate (tests, CPU).")
    num_engines: int = Field(1, ge=1)
    num_gpus_per_engine: float = Field(0.0, ge=0)
    num_cpus_per_engine: float = Field(1.0, gt=0)
    engine_kwargs: dict = Field(default_factory=dict, description=(
        "Extra vLLM LLM(...) arguments, e.g. tensor_parallel_size: 2, gpu_memory_utilization: 0.85."))


class RMConfig(Section):
    endpoint: str | None = Field(None, description="URL of a running `wildreward serve` (HTTP).")
    app_name: str | None = Field("wildreward-rm", description=(
        "Serve application in the same Ray cluster, called through a DeploymentHandle; used when no endpoint "
        "is given."))
    concurrency: int = Field(32, ge=1, description="Scoring requests in flight.")
    max_failure_rate: float = Field(0.05, ge=0, le=1, description=(
        "Share of samples whose scoring failed (after retries) above which a step stops the run; below it "
        "they are dropped and counted. The original scored failures as 2.0 without a word."))

    @model_validator(mode="after")
    def _check(self):
        if self.endpoint is None and self.app_name is None:
            raise ValueError("set rm.endpoint or rm.app_name")
        return self


class PairsConfig(Section):
    min_margin: float = Field(0.0, ge=0, description=(
        "Drop pairs whose reward gap is below this (paper: none). All-tie groups are always dropped."))


class LossConfig(Section):
    beta: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Conservative DPO; sigmoid loss only.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    length_normalize: bool = Field(False, description="Mean instead of sum of token log-probs (paper: sum).")

    @model_validator(mode="after")
    def _check(self):
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError("label_smoothing applies to loss_type sigmoid only")
        return self


class DPOOptimConfig(OptimConfig):
    """The training optimizer with the paper's DPO defaults: AdamW 5e-7, constant, no warmup."""
    lr: float = Field(5e-7, gt=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    schedule: Literal["linear", "cosine", "constant"] = "constant"


class DPOBatchConfig(Section):
    prompts_per_step: int = Field(64, ge=1, description="Prompts sampled per step = at most that many pairs, "
                                                       "one optimizer step.")
    micro_batch_pairs: int = Field(2, ge=1, description="Pairs per forward pass per worker.")


class DPOCheckpointConfig(CheckpointConfig):
    every_steps: int = Field(100, ge=1, description="Steps between checkpoints (and the end). Paper: 100.")
    name: str = Field("wildreward-dpo", description=(
        "Ray Train run name: re-running with the same name and storage_path resumes from its last checkpoint."))


class PromptsConfig(Section):
    paths: list[str] = Field(default_factory=list, description=(
        "Prompt files or directories (JSONL/JSON/Parquet): a string per row, or a `field` string or "
        "`messages` list."))
    field: str = "prompt"
    chatlogs: list[str] = Field(default_factory=list, description="Or: chat logs, whose first user turns are "
                                                                  "the prompts.")
    n: int | None = Field(None, ge=1, description="Keep at most this many prompts (held-out eval ones included).")

    @model_validator(mode="after")
    def _check(self):
        if self.paths and self.chatlogs:
            raise ValueError("set prompts.paths or prompts.chatlogs, not both")
        return self


class DPOEvalConfig(Section):
    held_out_prompts: int = Field(64, ge=0, description=(
        "Prompts kept out of training; the policy's mean RM reward on them is tracked."))
    instruction_checks: bool = Field(True, description="Also run the judge-free instruction checks.")


class DPOConfig(Section):
    output_dir: str = "outputs/dpo"
    seed: int = 42
    epochs: int = Field(1, ge=1, description="Passes over the prompts (paper: 1).")
    max_steps: int | None = Field(None, ge=1)
    eval_every_steps: int | None = Field(None, ge=1, description="Also evaluate every N steps (always at the end).")
    policy: PolicyConfig = PolicyConfig()
    rollout: RolloutConfig = RolloutConfig()
    rm: RMConfig = RMConfig()
    pairs: PairsConfig = PairsConfig()
    loss: LossConfig = LossConfig()
    optim: DPOOptimConfig = DPOOptimConfig()
    batch: DPOBatchConfig = DPOBatchConfig()
    dist: DistConfig = DistConfig()
    checkpoint: DPOCheckpointConfig = DPOCheckpointConfig()
    prompts: PromptsConfig = PromptsConfig()
    eval: DPOEvalConfig = DPOEvalConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.batch.prompts_per_step % self.dist.num_workers:
            raise ValueError(f"batch.prompts_per_step ({self.batch.prompts_per_step}) must be a multiple of "
                             f"dist.num_workers ({self.dist.num_workers})")
        return self
