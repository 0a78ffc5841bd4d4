"""Config of the evaluation stage (``wildreward eval``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from wildreward.config import Section
from wildreward.eval.benchmarks import DEFAULT_PATHS, LOADERS
from wildreward.ordinal import SATISFIED_MIN_LEVEL


def default_data_dir() -> str:
    """``$WILDREWARD_SHARED/data``, else ``../shared/data`` next to the repository (as the tests find it)."""
    shared = os.environ.get("WILDREWARD_SHARED") or Path(__file__).resolve().parents[3] / "shared"
    return str(Path(shared) / "data")


DEFAULT_THRESHOLDS = [0.0, 0.05] + [round(0.1 * k, 1) for k in range(1, 11)]


class EvalConfig(Section):
    output_dir: str = "outputs/eval"
    model_dir: str = Field("outputs/default/train/model", description=(
        "The reward model: a `wildreward train` model directory, scored in a Ray Data actor pool."))
    endpoint: str | None = Field(None, description=(
        "URL of a running `wildreward serve`: score the reward model there instead (model_dir is then unused)."))
    second_model_dir: str | None = Field(None, description="Another exported RM, reported next to the baselines.")
    benchmarks: list[str] = Field(["rm_bench", "llmbar", "xstest", "hh_harmless"], description=(
        "Any of rm_bench, llmbar, xstest, hh_harmless, rewardbench, judgebench, ppe_human (the last three need "
        "paths.<name>: a local copy of the hub files)."))
    data_dir: str = Field(default_factory=default_data_dir, description=(
        "The shared data folder (holding benchmarks/); give an absolute path on a cluster."))
    paths: dict[str, str] = Field(default_factory=dict, description="Per-benchmark file or folder overrides.")
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
    n_bins: int = Field(10, ge=1, description="Reliability / ECE bins.")
    thresholds: list[float] = Field(DEFAULT_THRESHOLDS, description=(
        "Margin thresholds of the accuracy-vs-coverage curve, in reward units. The readout is the paper's "
        "(expected level in [1, 4]), so these are on the paper's scale."))

    @model_validator(mode="after")
    def _check(self):
        unknown = sorted(set(self.benchmarks) - set(LOADERS))
        if unknown or not self.benchmarks:
            raise ValueError(f"unknown benchmark(s) {unknown} (known: {', '.join(LOADERS)})" if unknown
                             else "benchmarks is empty")
        if set(self.paths) - set(LOADERS):
            raise ValueError(f"paths has unknown benchmark(s) {sorted(set(self.paths) - set(LOADERS))}")
        pathless = [b for b in self.benchmarks if b not in DEFAULT_PATHS and b not in self.paths]
        if pathless:
            raise ValueError(f"benchmark(s) {pathless} have no default location: set paths.<name>")
        if self.negative_max_label >= self.positive_min_label:
            raise ValueError(f"negative_max_label ({self.negative_max_label}) must be below positive_min_label "
                             f"({self.positive_min_label})")
        if any(t < 0 for t in self.thresholds) or not self.thresholds:
            raise ValueError("thresholds must be a non-empty list of margins >= 0")
        return self
