"""The Ray Serve deployment: one replica holds an exported reward model and scores texts gathered across
concurrent requests (``@serve.batch``), sorted by length and cut by a token budget inside each batch.

Routes (FastAPI, bound to loopback unless configured):

- ``POST /get_reward`` ``{"query": [text, ...]} -> {"rewards": [...]}``: the OpenRLHF / WildReward client format;
  each text is a full RM input (the template already applied by the client).
- ``POST /v1/score`` ``{"items": [{history?, query, response} | {messages}]}``: the template is applied here,
  with the training truncation; returns reward and class probabilities per item, and ``p_satisfied``
  when the model carries a calibration fit.
- ``GET /health``, ``GET /v1/info`` (model metadata, batch statistics).

Ray actors call ``handle.score.remote(items)`` (same output as ``/v1/score``) through a DeploymentHandle.
Bad input gets 400/413/422 with a message, a model failure 500 with an error id; nothing is ever defaulted.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from wildreward.ordinal import expected_rating, level_probs
from wildreward.serve.config import ServeConfig

logger = logging.getLogger("ray.serve")
api = FastAPI(title="wildreward reward model")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    content: str


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: list[Message] | None = None
    query: str | None = None
    response: str | None = None
    messages: list[Message] | None = Field(None, description="OpenAI-style; the last message is the response.")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Item]


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: list[str]


def item_to_example(item: Item) -> dict[str, Any]:
    """``messages`` -> history + query + response (last assistant reply, the user turn before it)."""
    if item.messages is not None:
        if item.query is not None or item.response is not None or item.history is not None:
            raise ValueError("give either messages or history/query/response, not both")
        msgs = [m.model_dump() for m in item.messages]
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant" or msgs[-2]["role"] != "user":
            raise ValueError("messages must end with a user message followed by the assistant response")
        return {"history": msgs[:-2], "query": msgs[-2]["content"], "response": msgs[-1]["content"]}
    if not item.query or not item.response:
        raise ValueError("each item needs a non-empty query and response (or messages)")
    return {"history": [m.model_dump() for m in item.history or []], "query": item.query,
            "response": item.response}


@serve.deployment
@serve.ingress(api)
class RewardServer:
    def __init__(self, cfg: dict):
        import torch

        from wildreward.rm import RewardModel

        self.cfg = ServeConfig.model_validate(cfg)
        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        use_bf16 = self.cfg.dtype == "bf16" or (self.cfg.dtype == "auto" and device == "cuda"
                                                 and torch.cuda.is_bf16_supported())
        self.rm = RewardModel(self.cfg.model_dir, device=device,
                              dtype=torch.bfloat16 if use_bf16 else torch.float32)
        self._score_texts.set_max_batch_size(self.cfg.max_batch_size)
        self._score_texts.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)
        self.batches = {"count": 0, "texts": 0, "max": 0}
        fit = self.rm.meta.get("score_stats", {}).get("calibration", {})
        self.calibration = (fit["a"], fit["b"]) if "a" in fit else None

    def _check_texts(self, texts: list[str]) -> None:
        if not texts:
            raise HTTPException(400, "no texts given")
        if len(texts) > self.cfg.max_texts_per_request:
            raise HTTPException(413, f"{len(texts)} texts > max_texts_per_request={self.cfg.max_texts_per_request}")
        longest = max(len(t) for t in texts)
        if longest > self.cfg.max_chars_per_text:
            raise HTTPException(413, f"a text has {longest} characters > max_chars_per_text="
                                     f"{self.cfg.max_chars_per_text}")
        if any(not t.strip() for t in texts):
            raise HTTPException(400, "empty text")

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _score_texts(self, texts: list[str]) -> list[list[float]]:
        self.batches["count"] += 1
        self.batches["texts"] += len(texts)
        self.batches["max"] = max(self.batches["max"], len(texts))
        # The forward pass blocks; run it off the event loop so requests keep queueing into the next batch.
        logits = await asyncio.to_thread(self.rm.logits_for_texts, texts)
        return logits.tolist()

    async def _logits(self, texts: list[str]):
        import torch

        try:
            return torch.tensor(await asyncio.gather(*(self._score_texts(t) for t in texts)))
        except Exception as err:  # a real failure, reported with an id, never a made-up score
            error_id = uuid.uuid4().hex[:12]
            logger.exception("scoring failed (error id %s)", error_id)
            raise HTTPException(500, f"model failure, error id {error_id}: {type(err).__name__}") from err

    @api.post("/get_reward")
    async def get_reward(self, request: RewardRequest) -> dict:
        self._check_texts(request.query)
        return {"rewards": expected_rating(await self._logits(request.query)).tolist()}

    @api.post("/v1/score")
    async def score_http(self, request: ScoreRequest) -> dict:
        return {"results": await self.score(request.items)}

    async def score(self, items: list[Item] | list[dict]) -> list[dict]:
        """(history, query, response) or messages items -> reward and class probabilities per item."""
        try:
            examples = [item_to_example(i if isinstance(i, Item) else Item.model_validate(i)) for i in items]
        except ValueError as err:
            raise HTTPException(422, str(err)) from err
        self._check_texts(["".join([e["query"], e["response"], *(m["content"] for m in e["history"])])
                           for e in examples])
        texts = self.rm.texts(examples)
        logits = await self._logits(texts)
        rewards, probs = expected_rating(logits).tolist(), level_probs(logits).tolist()
        results = [{"reward": r, "level_probs": p} for r, p in zip(rewards, probs)]
        if self.calibration:  # Platt fit of P(satisfied) on the held-out split, saved at export
            a, b = self.calibration
            for result in results:
                result["p_satisfied"] = 1.0 / (1.0 + math.exp(-(a * result["reward"] + b)))
        return results

    @api.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/info")
    async def info(self) -> dict:
        import resource

        import torch

        meta = {k: v for k, v in self.rm.meta.items() if not k.startswith("template")}
        replica = {"pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        return {"model_dir": self.cfg.model_dir, "meta": meta, "batches": dict(self.batches),
                "max_batch_size": self.cfg.max_batch_size, "replica": replica}


def build_app(cfg: ServeConfig):
    """The bound application, with autoscaling, load shedding and replica resources from the config."""
    from ray.serve.config import BackpressureConfig

    return RewardServer.options(
        name="RewardServer", max_ongoing_requests=cfg.ongoing_requests,
        max_queued_requests=cfg.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=cfg.retry_after_s),
        autoscaling_config={"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                            "target_ongoing_requests": cfg.target_ongoing_requests},
        ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
    ).bind(cfg.model_dump(mode="json"))


def app_builder(args: dict):
    """Serve's application builder: ``serve run wildreward.serve.app:app_builder model_dir=...`` and the ``args``
    of a Serve config file (``wildreward serve --write-serve-config``, cluster/serve/)."""
    return build_app(ServeConfig.model_validate(args))


def __getattr__(name: str):
    # ``serve build`` needs an Application object: ``app`` is the one for the config in $WILDREWARD_SERVE_CONFIG
    # (JSON), built on first access so importing this module never builds one.
    if name == "app":
        return app_builder(json.loads(os.environ.get("WILDREWARD_SERVE_CONFIG", "{}")))
    raise AttributeError(name)
