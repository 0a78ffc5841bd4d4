"""Config of the evaluation stage (``wildreward eval``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from wildreward.config import Section
from wildreward.eval.benchmarks import LOADERS
from wildreward.ordinal import SATISFIED_MIN_LEVEL


def default_data_dir() -> str:
    """``$WILDREWARD_SHARED/data``, else ``../shared/data`` next to the repository (as the tests find it)."""
    shared = os.environ.get("WILDREWARD_SHARED") or Path(__file__).resolve().parents[3] / "shared"
    return str(Path(shared) / "data")


DEFAULT_THRESHOLDS = [0.0, 0.05] + [round(0.1 * k, 1) for k in range(1, 11)]


ScorerKind = Literal["auto", "wildreward", "hf_scalar", "wildreward_release", "endpoint"]
RESERVED_SCORERS = ("rm", "second_rm", "length", "random")


class ScorerSpec(Section):
    """One more reward model in the report: a checkpoint directory (``path``) or a running service (``url``)."""
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Its row in the report.")
    kind: ScorerKind = Field("auto", description=(
        "auto: read from the checkpoint (wildreward.json -> wildreward; config.json with 1 label -> hf_scalar, "
        "3 labels -> wildreward_release), or endpoint for a url."))
    path: str | None = Field(None, description="A model directory (local or a URI); safetensors weights only.")
    url: str | None = Field(None, description="A running reward service; a URL ending in /get_reward or "
                                              "/v1/score fixes the protocol.")
    protocol: Literal["auto", "get_reward", "score"] = Field("auto", description=(
        "Endpoints: get_reward (OpenRLHF: texts templated here with the WildReward template), score (`wildreward "
        "serve`'s /v1/score: structured turns), auto: /v1/score when GET /v1/info answers, else /get_reward."))
    max_length: int | None = Field(None, ge=2, description=(
        "hf_scalar and wildreward_release: tokens kept (right truncation); null = the model's own limit "
        "(wildreward_release: at most 4096, the original server's)."))

    @model_validator(mode="after")
    def _check(self):
        if (self.path is None) == (self.url is None):
            raise ValueError(f"scorer {self.name}: give exactly one of path and url")
        if self.url is not None and self.kind not in ("auto", "endpoint"):
            raise ValueError(f"scorer {self.name}: kind {self.kind} needs a path, not a url")
        if self.path is not None and self.kind == "endpoint":
            raise ValueError(f"scorer {self.name}: kind endpoint needs a url, not a path")
        if self.path is not None and self.protocol != "auto":
            raise ValueError(f"scorer {self.name}: protocol is for endpoints")
        return self


class EvalConfig(Section):
    output_dir: str = "outputs/eval"
    model_dir: str = Field("outputs/default/train/model", description=(
        "The reward model: a `wildreward train` model directory, scored in a Ray Data actor pool."))
    endpoint: str | None = Field(None, description=(
        "URL of a running `wildreward serve`: score the reward model there instead (model_dir is then unused)."))
    second_model_dir: str | None = Field(None, description="Another exported RM, reported next to the baselines.")
    scorers: list[ScorerSpec] = Field(default_factory=list, description=(
        "More reward models, each its own row next to rm and the baselines. Items: name, kind (auto | wildreward "
        "| hf_scalar | wildreward_release | endpoint), path or url, protocol (endpoints: auto | get_reward | "
        "score), max_length; see `ScorerSpec` and the Evaluation section."))
    benchmarks: list[str] = Field(default_factory=lambda: list(LOADERS), description=(
        "Any of rm_bench, llmbar, xstest, hh_harmless, rewardbench, judgebench_gpt4o, judgebench_claude, "
        "ppe_human, ppe_correctness (default: all). The hub ones (RewardBench, JudgeBench, PPE) are read from a "
        "local copy at their default place under data_dir or at paths.<name>; a benchmark whose file is absent is "
        "reported as not evaluated."))
    data_dir: str = Field(default_factory=default_data_dir, description=(
        "The shared data folder (holding benchmarks/); give an absolute path on a cluster."))
    paths: dict[str, str] = Field(default_factory=dict, description=(
        "Per-benchmark file or folder overrides of the defaults under data_dir (rewardbench: "
        "benchmarks/rewardbench/filtered.parquet; judgebench_*: benchmarks/judgebench/ with the upstream file "
        "names; ppe_human: benchmarks/ppe/human_preference_v1.parquet; ppe_correctness: benchmarks/ppe/correctness/ "
        "holding <set>.parquet for mmlu_pro, math, gpqa, ifeval, mbpp_plus)."))
    max_pairs: int | None = Field(None, ge=1, description=(
        "Per benchmark, a seeded subset of this many pairs (RM-Bench: prompts, 9 pairs each); null = all."))
    consistency_data: str | None = Field(None, description=(
        "Held-out extracted data (`wildreward extract`'s test/ folder) for cross-sample consistency (ROC-AUC)."))
    max_consistency_rows: int | None = Field(None, ge=1, description="Seeded subset of consistency_data rows.")
    # Levels 1-2 are the negative feedback classes (rejection, correction) and 3-4 the positive ones (engagement,
    # satisfaction); extraction already dropped the neutral class, so by default every row gets a binary label.
    positive_min_label: int = Field(SATISFIED_MIN_LEVEL, ge=1, description="Rows with label >= this are positive.")
    negative_max_label: int = Field(SATISFIED_MIN_LEVEL - 1, ge=1, description=(
        "Rows with label <= this are negative; labels between the two are left out (counted)."))
    batch_size: int = Field(32, ge=1, description="Examples per actor call (and per request to the endpoint).")
    num_actors: int = Field(2, ge=1, description="Most scoring actors per model (the pool starts with one).")
    num_cpus: float = Field(1.0, gt=0, description="Per actor.")
    num_gpus: float = Field(0.0, ge=0, description="Per actor; > 0 scores on CUDA.")
    dtype: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0
    tie_eps: float = Field(0.0, ge=0, description="|R(chosen) - R(rejected)| <= tie_eps is a tie (counts half).")
    n_bootstrap: int = Field(1000, ge=100, description=(
        "Bootstrap resamples behind every accuracy's 95% interval (pairs resampled; RM-Bench: prompts; within "
        "each subset/domain/set where the score averages over them), seeded by seed."))
    n_bins: int = Field(10, ge=1, description="Reliability / ECE bins.")
    thresholds: list[float] = Field(DEFAULT_THRESHOLDS, description=(
        "Margin thresholds of the accuracy-vs-coverage curve, in reward units. The readout is the paper's "
        "(expected level in [1, 4]), so these are on the paper's scale."))

    def model_scorers(self) -> list[ScorerSpec]:
        """Every model row: ``rm`` (model_dir, or endpoint), ``second_rm`` (second_model_dir), then ``scorers``."""
        rm = (ScorerSpec(name="rm", kind="endpoint", url=self.endpoint) if self.endpoint else
              ScorerSpec(name="rm", kind="wildreward", path=self.model_dir))
        second = [ScorerSpec(name="second_rm", kind="wildreward", path=self.second_model_dir)] \
            if self.second_model_dir else []
        return [rm, *second, *self.scorers]

    @model_validator(mode="after")
    def _check(self):
        unknown = sorted(set(self.benchmarks) - set(LOADERS))
        if unknown or not self.benchmarks:
            raise ValueError(f"unknown benchmark(s) {unknown} (known: {', '.join(LOADERS)})" if unknown
                             else "benchmarks is empty")
        if set(self.paths) - set(LOADERS):
            raise ValueError(f"paths has unknown benchmark(s) {sorted(set(self.paths) - set(LOADERS))}")
        if self.negative_max_label >= self.positive_min_label:
            raise ValueError(f"negative_max_label ({self.negative_max_label}) must be below positive_min_label "
                             f"({self.positive_min_label})")
        names = [s.name for s in self.scorers]
        taken = sorted({n for n in names if n in RESERVED_SCORERS or names.count(n) > 1})
        if taken:
            raise ValueError(f"scorer name(s) {taken} repeat or are reserved ({', '.join(RESERVED_SCORERS)})")
        if any(t < 0 for t in self.thresholds) or not self.thresholds:
            raise ValueError("thresholds must be a non-empty list of margins >= 0")
        return self
