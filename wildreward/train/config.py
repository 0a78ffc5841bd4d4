"""Config of the training stage (``wildreward train``). Defaults follow the paper (§2.3) unless noted."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from wildreward.config import Section


class DataConfig(Section):
    train: list[str] = Field(default_factory=list, description=(
        "Parquet files or directories with history, query, response, label (1..num_levels): the train/ folder "
        "of `wildreward extract`, or several of them."))
    test: list[str] = Field(default_factory=list, description="Held-out Parquet (extract's test/); empty = no eval.")
    max_train_rows: int | None = Field(None, ge=1, description="Cap (demos, tests).")
    max_test_rows: int | None = Field(None, ge=1)


class ModelConfig(Section):
    backbone: str = Field("minilm", description=(
        "HF model dir or alias (minilm, smollm2). Encoders pool their [CLS]; decoders the last non-pad token."))
    head: Literal["independent", "coral"] = Field("independent", description=(
        "independent: K-1 free logits (the paper); coral: one score minus learned ordered cut-points."))
    num_levels: int = Field(4, ge=2)
    input: Literal["rm", "feedback"] = Field("rm", description=(
        "rm: the paper's template over history, query and response (a reward model); feedback: the user's next "
        "message, the end of the response and the query (a feedback classifier for annotator.backend: "
        "classifier, trained with num_levels: 5 on the annotator's 1-5 labels)."))
    max_length: int = Field(512, ge=16, description="Tokens (paper: 4096; MiniLM's limit is 512).")
    truncation: Literal["right", "middle"] = Field("middle", description=(
        "Over-long examples lose their oldest history messages first, then query/response text at the end "
        "(right) or in the middle (middle); the response always keeps at least half the room."))
    dropout: bool = Field(False, description="Keep the backbone's dropout (off: deterministic, as TRL's default).")
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False


class OptimConfig(Section):
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Paper code: 0.05.")
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float = Field(1.0, gt=0)
    threshold_weights: Literal["none", "balanced"] = Field("none", description=(
        "balanced: weight each threshold's positive targets by n(y<=k)/n(y>k) on the training rows (capped at "
        "max_pos_weight), for skewed labels; none: plain BCE as the paper's code."))
    max_pos_weight: float = Field(50.0, ge=1)


class BatchConfig(Section):
    global_batch_size: int = Field(512, ge=1, description="Rows per optimizer step over all workers (paper: 512).")
    micro_batch_size: int = Field(4, ge=1, description="Rows per forward pass per worker.")
    length_group_size: int = Field(64, ge=1, description=(
        "Micro-batches per length-grouping window: rows of a window are sorted by length and cut into "
        "micro-batches (dynamic padding), whose order is then shuffled."))
    pad_to_multiple_of: int = Field(1, ge=1, description="8 helps tensor cores on GPUs.")
    eval_batch_size: int = Field(16, ge=1)


class DistConfig(Section):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    strategy: Literal["deepspeed", "ddp"] = "deepspeed"
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage (paper code: 2).")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="fp16 needs a GPU.")
    offload_optimizer: bool = Field(False, description="ZeRO optimizer states in CPU memory (GPU clusters).")

    @model_validator(mode="after")
    def _check(self):
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("precision fp16 needs use_gpu=true (DeepSpeed has no fp16 on CPU); use bf16 or fp32")
        if self.strategy == "ddp" and self.precision == "fp16":
            raise ValueError("the ddp strategy supports fp32 and bf16 autocast only")
        return self


class CheckpointConfig(Section):
    every_steps: int = Field(50, ge=1, description="Optimizer steps between checkpoints (and the end).")
    num_to_keep: int = Field(2, ge=1)
    name: str = Field("wildreward-rm", description=(
        "Ray Train run name: re-running with the same name and storage_path resumes from its last checkpoint."))
    storage_path: str | None = Field(None, description="Shared storage for checkpoints (default <output_dir>/ray).")
    max_failures: int = Field(3, ge=0, description="Worker-group restarts from the last checkpoint.")


class TrainConfig(Section):
    output_dir: str = "outputs/train"
    seed: int = 42
    epochs: int = Field(1, ge=1, description="Paper: 1.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    eval_every_steps: int | None = Field(None, ge=1, description="Also evaluate every N steps (always at the end).")
    log_every_steps: int = Field(1, ge=1)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    batch: BatchConfig = BatchConfig()
    dist: DistConfig = DistConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    fail_once_at_step: int | None = Field(None, ge=1, description=(
        "Fault injection for recovery drills: worker rank 1 (or 0 alone) raises once after this step."))

    @model_validator(mode="after")
    def _check(self):
        per_step = self.batch.micro_batch_size * self.dist.num_workers
        if self.batch.global_batch_size % per_step:
            raise ValueError(f"batch.global_batch_size ({self.batch.global_batch_size}) must be a multiple of "
                             f"micro_batch_size x num_workers ({per_step})")
        return self

    @property
    def grad_accum(self) -> int:
        return self.batch.global_batch_size // (self.batch.micro_batch_size * self.dist.num_workers)
