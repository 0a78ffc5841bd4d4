"""Score rollout samples with the served reward model, concurrently, never inventing a reward.

The RM sees what it was trained on: the user's raw prompt as query, no history, and the response after a final
``</think>``, with the RM's own template applied server-side (``/v1/score`` or the handle's ``score``), not the
policy's chat template. Requests go out in chunks all at once, so Serve batches them across the chunks (and across
rollout workers). A chunk that fails after the client's retries marks its samples with the error; an empty
response is not sent (the RM rejects empty text) and is marked too. Callers drop marked samples and count them.
"""
from __future__ import annotations

import asyncio
from typing import Any

from wildreward.dpo.config import RMConfig
from wildreward.dpo.pairs import final_answer

CHUNK = 16  # responses per request: small enough to spread over replicas, large enough to amortise a request
EMPTY = "empty response (not scored)"


def rm_items(samples: list[dict], queries: dict[str, str]) -> list[dict]:
    return [{"history": [], "query": queries[s["prompt_id"]], "response": final_answer(s["response"])}
            for s in samples]


def score_samples(samples: list[dict], queries: dict[str, str], cfg: RMConfig) -> None:
    """Set ``reward`` and ``error`` on every sample (one of them is None)."""
    items = rm_items(samples, queries)
    todo = [i for i, item in enumerate(items) if item["response"]]
    for i, sample in enumerate(samples):
        sample["reward"], sample["error"] = None, None if items[i]["response"] else EMPTY
    chunks = [todo[k:k + CHUNK] for k in range(0, len(todo), CHUNK)]
    results = _score_chunks([[items[i] for i in chunk] for chunk in chunks], cfg)
    for chunk, result in zip(chunks, results):
        for pos, i in enumerate(chunk):
            if isinstance(result, Exception):
                samples[i]["error"] = f"{type(result).__name__}: {result}"[:300]
            else:
                samples[i]["reward"] = float(result[pos]["reward"])


def _score_chunks(chunks: list[list[dict]], cfg: RMConfig) -> list[Any]:
    """Per chunk: its results, or the exception that ended it."""
    if cfg.endpoint:
        from wildreward.serve.client import AsyncRewardClient

        async def run():
            async with AsyncRewardClient(cfg.endpoint, concurrency=cfg.concurrency, texts_per_request=CHUNK) as rm:
                return await asyncio.gather(*(rm.score(c) for c in chunks), return_exceptions=True)

        return asyncio.run(run())
    from wildreward import ray_compat as rc

    handle = rc.serve_handle(cfg.app_name)
    pending = [handle.score.remote(chunk) for chunk in chunks]  # all in flight before the first wait
    results: list[Any] = []
    for response in pending:
        try:
            results.append(response.result(timeout_s=600))
        except Exception as err:  # noqa: BLE001 - the chunk's samples carry it; never a default reward
            results.append(err)
    return results
