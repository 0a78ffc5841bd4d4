"""HTTP calls that retry only what retrying can fix, shared by the annotator's OpenAI-compatible backend and the
reward-model client.

Transient failures (5xx, 429, timeouts, dropped connections) are retried with jittered exponential backoff, and
never sooner than the server's ``Retry-After``; anything else (other 4xx, a bad URL, a reply that is not JSON)
fails at once. Callers turn a final failure into an error they count; nothing here ever substitutes a value.
"""
from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")


class RetryableError(Exception):
    """A transient HTTP failure (5xx, 429, timeout, connection); ``wait_s`` is the server's Retry-After."""

    def __init__(self, message: str, wait_s: float | None = None):
        super().__init__(message)
        self.wait_s = wait_s


class RequestError(Exception):
    """A failure that retrying cannot fix (other 4xx, malformed response)."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or garbled."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


async def request_json(client, path: str, payload: dict | None = None) -> Any:
    """POST ``payload`` (GET without one) with an ``httpx.AsyncClient``; the decoded JSON reply, or a classified
    error."""
    import httpx

    try:
        response = await client.post(path, json=payload) if payload is not None else await client.get(path)
    except httpx.TimeoutException as err:
        raise RetryableError(f"timeout: {type(err).__name__}") from None
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as err:  # the caller's URL or request is wrong
        raise RequestError(f"bad request: {type(err).__name__}: {short(str(err))}") from None
    except httpx.TransportError as err:
        raise RetryableError(f"connection error: {type(err).__name__}: {short(str(err))}") from None
    status = response.status_code
    if status == 429 or status >= 500:
        raise RetryableError(f"http {status}: {short(response.text)}",
                             parse_retry_after(response.headers.get("retry-after")))
    if status >= 400:
        raise RequestError(f"http {status}: {short(response.text)}")
    try:
        return response.json()
    except ValueError:
        raise RequestError(f"http {status}: response is not JSON: {short(response.text)}") from None


@dataclass
class RetryPolicy:
    max_retries: int = 5
    backoff_s: float = 0.5       # the first retry waits up to this long, doubling each attempt ...
    max_backoff_s: float = 30.0  # ... up to this; a longer Retry-After from the server wins, up to max_wait_s
    max_wait_s: float = 300.0

    def delay(self, attempt: int, err: RetryableError) -> float:
        # Jitter keeps many clients that failed together from retrying together.
        backoff = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
        if err.wait_s is None:
            return backoff
        # An overloaded server sends every client it turns away the same Retry-After: wait at least that long,
        # and never less than the backoff (a Retry-After of 0 would otherwise spin), spread over 1.5x.
        return min(max(err.wait_s, backoff) * random.uniform(1.0, 1.5), self.max_wait_s)


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy,
                       on_retry: Callable[[RetryableError], None] | None = None) -> T:
    """``await call()``, retrying on :class:`RetryableError` (``on_retry`` sees each one); after the last attempt
    the error is re-raised with the attempt count in its message."""
    attempt = 0
    while True:
        try:
            return await call()
        except RetryableError as err:
            if attempt >= policy.max_retries:
                raise RetryableError(f"{err} (gave up after {attempt + 1} attempts)", err.wait_s) from None
            if on_retry is not None:
                on_retry(err)
            await asyncio.sleep(policy.delay(attempt, err))
            attempt += 1


class LoopThread:
    """An event loop in a daemon thread, so synchronous callers (Ray actors, scripts, code that already runs a
    loop) can await coroutines, and pooled connections live between calls."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name=name, daemon=True).start()

    def run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self, coro: Awaitable | None = None) -> None:
        """Run ``coro`` (e.g. the client's ``aclose()``), then stop the loop."""
        if self.loop.is_running():
            if coro is not None:
                self.run(coro)
            self.loop.call_soon_threadsafe(self.loop.stop)
