"""Config of the serving stage (``wildreward serve``)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from wildreward.config import Section


class ServeConfig(Section):
    model_dir: str = Field("outputs/default/train/model", description="A `wildreward train` model directory.")
    name: str = Field("wildreward-rm", description="Serve application name.")
    host: str = Field("127.0.0.1", description="HTTP bind address (loopback by default).")
    port: int = Field(8000, ge=1, le=65535)
    route_prefix: str = "/"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPUs that support it.")
    max_batch_size: int = Field(32, ge=1, description="Texts per forward pass, gathered across requests.")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_ongoing_requests: int | None = Field(None, ge=1, description=(
        "Per replica; default 2 x max_batch_size so batches can fill (a smaller value starves them)."))
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)
    num_cpus: float = Field(1.0, gt=0, description="Per replica.")
    num_gpus: float = Field(0.0, ge=0, description="Per replica.")
    max_queued_requests: int = Field(256, ge=-1, description=(
        "Requests allowed to wait for a busy replica; beyond that Serve sheds load with 503 + Retry-After "
        "instead of queueing without bound. -1: unbounded."))
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After sent with overload 503s.")
    max_texts_per_request: int = Field(256, ge=1)
    max_chars_per_text: int = Field(200_000, ge=1, description=(
        "Characters of one RM text; for /v1/score, of the item written into the template, before truncation."))
    max_request_bytes: int = Field(64 << 20, ge=1, description=(
        "Request body size, checked before the JSON is parsed (413 above it)."))
    health_timeout_s: float = Field(10.0, gt=0, description=(
        "/health and Serve's replica check score a tiny fixed text; slower than this (or failing) is unhealthy."))

    @model_validator(mode="after")
    def _check(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.max_batch_size:
            raise ValueError("max_ongoing_requests < max_batch_size: batches could never fill (Ray issue #43288)")
        if self.max_replicas > self.min_replicas and self.target_ongoing_requests >= self.ongoing_requests:
            raise ValueError(f"target_ongoing_requests ({self.target_ongoing_requests}) >= the replica's "
                             f"max_ongoing_requests ({self.ongoing_requests}): the autoscaler would never add one")
        return self

    @property
    def ongoing_requests(self) -> int:
        return self.max_ongoing_requests or 2 * self.max_batch_size
