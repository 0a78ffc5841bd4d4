"""The Ray Serve deployment: one replica holds an exported reward model and scores texts gathered across
concurrent requests (``@serve.batch``), sorted by length and cut by a token budget inside each batch.

Routes (FastAPI, bound to loopback unless configured):

- ``POST /get_reward`` ``{"query": [text, ...]} -> {"rewards": [...]}``: the OpenRLHF / WildReward client format;
  each text is a full RM input (the template already applied by the client).
- ``POST /v1/score`` ``{"items": [{history?, query, response} | {messages}]}``: the template is applied here,
  with the training truncation; returns reward and class probabilities per item, and ``p_satisfied``
  when the model carries a calibration fit.
- ``GET /health`` (the model scores a tiny fixed text; 503 when it cannot), ``GET /v1/info`` (model metadata,
  batch statistics). Serve's periodic replica check runs the same probe, so a broken replica is replaced.

Ray actors call ``handle.score.remote(items)`` (same output as ``/v1/score``) through a DeploymentHandle.
Bad input gets 400/413/422 with a message, a model failure 500 with an error id; nothing is ever defaulted. A
text that breaks the model fails only its own request, not the others batched with it.
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from wildreward.ordinal import expected_rating, level_probs
from wildreward.serve.config import ServeConfig
from wildreward.template import build_rm_text

logger = logging.getLogger("ray.serve")
api = FastAPI(title="wildreward reward model")


class LimitBody:
    """ASGI middleware: a request body over ``max_request_bytes`` gets a 413 before anything parses it, whether
    it declares its length or streams it in chunks."""

    # The replica sets it from its config (a replica has its process to itself). A class attribute, not a module
    # global: Ray ships the deployment class by value, with copies of the globals it names, but this class by name.
    max_request_bytes = ServeConfig.model_fields["max_request_bytes"].default

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_request_bytes
        too_large = f"request body over max_request_bytes={limit}"
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await JSONResponse({"detail": too_large}, 413)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, too_large)  # FastAPI lets an HTTPException out of its body reading
            return message

        await self.app(scope, counted_receive, send)


api.add_middleware(LimitBody)


def model_failure(err: Exception) -> HTTPException:
    """A 500 naming an id that the replica's log shows with the traceback; never a made-up score."""
    error_id = uuid.uuid4().hex[:12]
    logger.error("scoring failed (error id %s)", error_id, exc_info=err)
    return HTTPException(500, f"model failure, error id {error_id}: {type(err).__name__}")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]  # the template writes roles verbatim: no free text there
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
        example = {"history": msgs[:-2], "query": msgs[-2]["content"], "response": msgs[-1]["content"]}
    else:
        example = {"history": [m.model_dump() for m in item.history or []], "query": item.query or "",
                   "response": item.response or ""}
    if not example["query"].strip() or not example["response"].strip():
        raise ValueError("each item needs a non-empty query and response (or messages ending with them)")
    return example


class HealthProbe:
    """Scores a tiny fixed text, so that a replica whose model is broken (raises, gives non-finite logits, or
    hangs past ``timeout_s``) reports unhealthy. The text is tokenized once here: at probe time only the model
    runs, never the tokenizer, which a fast tokenizer would refuse while a batch uses it on another thread.
    Concurrent checks share one forward pass, and a hung one is not started again on top of itself."""

    TEXT = "health check: is the reward model answering?"

    def __init__(self, rm, timeout_s: float):
        self.rm, self.timeout_s, self.running = rm, timeout_s, None
        self.inputs = rm.tokenizer([self.TEXT], return_tensors="pt")

    def _forward(self) -> None:
        import torch

        with torch.inference_mode():
            logits = self.rm.model.backbone(**self.inputs.to(self.rm.device)).logits.float()
        if logits.shape[0] != 1 or not bool(torch.isfinite(logits).all()):
            raise FloatingPointError(f"the model gave non-finite logits on the health-check text: {logits.tolist()}")

    async def check(self) -> None:
        """Returns when the model scored the text; raises otherwise."""
        if self.running is None or self.running.done():
            self.running = asyncio.ensure_future(asyncio.to_thread(self._forward))
        try:
            await asyncio.wait_for(asyncio.shield(self.running), self.timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"the model did not score the health-check text within {self.timeout_s} s") from None


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
        self.batches = {"count": 0, "texts": 0, "max": 0, "rescored_alone": 0}
        fit = self.rm.meta.get("score_stats", {}).get("calibration", {})
        self.calibration = (fit["a"], fit["b"]) if "a" in fit else None
        # /v1/score applies the template (a tokenizer loop per item) off the event loop, on one thread with its
        # own tokenizer: a fast tokenizer fails ("Already borrowed") when two threads use it at once, and the
        # forward passes tokenize on another thread.
        self._template_tokenizer = copy.deepcopy(self.rm.tokenizer)
        self._template_thread = ThreadPoolExecutor(1, thread_name_prefix="rm-template")
        LimitBody.max_request_bytes = self.cfg.max_request_bytes
        self.probe = HealthProbe(self.rm, self.cfg.health_timeout_s)

    def _check_texts(self, texts: list[str]) -> None:
        if not texts:
            raise HTTPException(400, "no texts given")
        if len(texts) > self.cfg.max_texts_per_request:
            raise HTTPException(413, f"{len(texts)} texts > max_texts_per_request={self.cfg.max_texts_per_request}")
        longest = max(len(t) for t in texts)
        if longest > self.cfg.max_chars_per_text:
            raise HTTPException(413, f"a text has {longest} characters > max_chars_per_text="
                                     f"{self.cfg.max_chars_per_text}")
        for i, text in enumerate(texts):
            if not text.strip():
                raise HTTPException(400, f"text {i} is empty")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:  # JSON allows a lone surrogate escape; the tokenizer does not
                raise HTTPException(400, f"text {i} is not valid Unicode: {err.reason} at {err.start}") from None

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _score_texts(self, texts: list[str]) -> list[list[float] | Exception]:
        self.batches["count"] += 1
        self.batches["texts"] += len(texts)
        self.batches["max"] = max(self.batches["max"], len(texts))
        return await self._forward(texts)

    async def _forward(self, texts: list[str]) -> list[list[float] | Exception]:
        """Logits per text, or the error scoring it raised. Serve fails every request of a batch whose function
        raises, so a failed batch is scored again text by text: one bad text fails only its own request."""
        try:
            # The forward pass blocks; run it off the event loop so requests keep queueing into the next batch.
            logits = await asyncio.to_thread(self.rm.logits_for_texts, texts)
        except Exception as err:
            if len(texts) == 1:
                return [err]
            self.batches["rescored_alone"] += len(texts)
            return [result for text in texts for result in await self._forward([text])]
        return [row if all(map(math.isfinite, row)) else FloatingPointError("the model gave non-finite logits")
                for row in logits.tolist()]

    async def _logits(self, texts: list[str]):
        import torch

        try:
            rows = await asyncio.gather(*(self._score_texts(t) for t in texts))
        except Exception as err:
            raise model_failure(err) from err
        failed = next((row for row in rows if isinstance(row, Exception)), None)
        if failed is not None:
            raise model_failure(failed)
        return torch.tensor(rows)

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
        # The limits apply to the text the model would read before truncation, roles and history included.
        self._check_texts([build_rm_text(e["history"], e["query"], e["response"]) for e in examples])
        try:
            texts = await asyncio.get_running_loop().run_in_executor(self._template_thread, self._template,
                                                                     examples)
        except Exception as err:
            raise model_failure(err) from err
        logits = await self._logits(texts)
        rewards, probs = expected_rating(logits).tolist(), level_probs(logits).tolist()
        results = [{"reward": r, "level_probs": p} for r, p in zip(rewards, probs)]
        if self.calibration:  # Platt fit of P(satisfied) on the held-out split, saved at export
            a, b = self.calibration
            for result in results:
                result["p_satisfied"] = 0.5 * (1.0 + math.tanh((a * result["reward"] + b) / 2))  # no overflow
        return results

    def _template(self, examples: list[dict]) -> list[str]:
        return self.rm.texts(examples, tokenizer=self._template_tokenizer)

    @api.get("/health")
    async def health(self) -> dict:
        """200 once the model scored a tiny fixed text, else 503 naming what failed (for load balancers and
        probes outside Ray)."""
        try:
            await self.probe.check()
        except Exception as err:
            logger.warning("health check failed: %s: %s", type(err).__name__, err)
            raise HTTPException(503, f"unhealthy: {type(err).__name__}: {err}") from None
        return {"status": "ok"}

    async def check_health(self) -> None:
        """Serve's own periodic replica check: raising marks the replica unhealthy, and Serve replaces it."""
        await self.probe.check()

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
