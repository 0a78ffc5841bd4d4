"""Python clients for a served reward model (``wildreward serve``), for rollout workers and evaluation.

    with RewardClient("http://127.0.0.1:8000") as rm:
        rewards = rm.get_rewards(texts)           # templated texts, the OpenRLHF /get_reward protocol
        results = rm.score([{"query": q, "response": r}])   # structured turns; reward + level_probs

    async with AsyncRewardClient(url, concurrency=64) as rm:
        rewards = await rm.get_rewards(texts)

Large inputs are split into requests of ``texts_per_request`` sent concurrently over one connection pool, at most
``concurrency`` in flight. Only transient failures are retried (5xx, 429, timeouts, connection errors), with
jittered backoff, never sooner than the server's Retry-After. A request that still fails, or a reply with the wrong
number of results or a result that is not a finite number, raises :class:`RewardServiceError`: a client never gets
a made-up reward.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
from typing import Any, Sequence

from wildreward.http_retry import (LoopThread, RequestError, RetryableError, RetryPolicy, request_json, short,
                                   with_retries)

logger = logging.getLogger(__name__)


class RewardServiceError(RuntimeError):
    """The service could not score the inputs (after retries, for transient failures)."""


def is_number(value) -> bool:
    """A finite int or float; JSON's true/false are not rewards (Python counts bool as int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class AsyncRewardClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", *, concurrency: int = 32, texts_per_request: int = 32,
                 timeout_s: float = 60.0, max_retries: int = 5, api_key_env: str | None = None, transport=None):
        import httpx

        if concurrency < 1 or texts_per_request < 1:
            raise ValueError("concurrency and texts_per_request must be >= 1")
        headers = {}
        if api_key_env and os.environ.get(api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
        self.texts_per_request = texts_per_request
        self.retry = RetryPolicy(max_retries=max_retries)
        self.retries = 0  # transient failures retried so far
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/") + "/", headers=headers, timeout=timeout_s,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport)  # an httpx transport: a Unix socket, or a mock in tests
        self._slots = asyncio.Semaphore(concurrency)

    async def get_rewards(self, texts: Sequence[str]) -> list[float]:
        """One reward in [1, K] per text; each text is a full RM input (training template applied)."""
        if isinstance(texts, str):
            raise TypeError("get_rewards takes a list of texts")
        rewards = await self._post_chunked("get_reward", "query", "rewards", list(texts))
        if not all(is_number(r) for r in rewards):
            raise RewardServiceError(f"the service returned a reward that is not a finite number: "
                                     f"{short(str(rewards))}")
        return rewards

    async def score(self, items: Sequence[dict]) -> list[dict]:
        """Structured turns ({history?, query, response} or {messages}) -> {reward, level_probs} each."""
        results = await self._post_chunked("v1/score", "items", "results", list(items))
        for result in results:
            if not (isinstance(result, dict) and is_number(result.get("reward"))
                    and isinstance(result.get("level_probs"), list) and all(map(is_number, result["level_probs"]))):
                raise RewardServiceError(f"the service returned a malformed result: {short(str(result))}")
        return results

    async def info(self) -> dict:
        return await self._request("v1/info")

    async def _post_chunked(self, path: str, field: str, key: str, values: list) -> list:
        n = self.texts_per_request
        chunks = [values[i:i + n] for i in range(0, len(values), n)]
        parts = await asyncio.gather(*(self._post(path, {field: chunk}, key, len(chunk)) for chunk in chunks))
        return [value for part in parts for value in part]

    async def _post(self, path: str, payload: dict, key: str, expected: int) -> list:
        data = await self._request(path, payload)
        values = data.get(key) if isinstance(data, dict) else None
        if not isinstance(values, list) or len(values) != expected:
            got = len(values) if isinstance(values, list) else "no"
            raise RewardServiceError(f"POST /{path}: sent {expected} inputs, got {got} {key}: {short(str(data))}")
        return values

    async def _request(self, path: str, payload: dict | None = None):
        """The JSON reply of a POST (a GET without ``payload``), retried on transient failures."""
        async def call():
            async with self._slots:
                return await request_json(self._http, path, payload)

        try:
            return await with_retries(call, self.retry, self._count_retry)
        except (RequestError, RetryableError) as err:
            raise RewardServiceError(f"{'POST' if payload is not None else 'GET'} /{path}: {err}") from None

    def _count_retry(self, err: RetryableError) -> None:
        self.retries += 1
        logger.warning("reward service: %s; retrying", err)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


class RewardClient:
    """The synchronous client: the async one on its own event-loop thread, so it works from plain scripts, Ray
    actors and code that already runs a loop."""

    def __init__(self, url: str = "http://127.0.0.1:8000", **kwargs: Any):
        self._thread = LoopThread("wildreward-rm-client")

        async def start():  # the client's semaphore and pool belong to the thread's loop
            return AsyncRewardClient(url, **kwargs)

        self._client = self._thread.run(start())

    @property
    def retries(self) -> int:
        return self._client.retries

    def get_rewards(self, texts: Sequence[str]) -> list[float]:
        return self._thread.run(self._client.get_rewards(texts))

    def score(self, items: Sequence[dict]) -> list[dict]:
        return self._thread.run(self._client.score(items))

    def info(self) -> dict:
        return self._thread.run(self._client.info())

    def close(self) -> None:
        self._thread.close(self._client.aclose())

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
