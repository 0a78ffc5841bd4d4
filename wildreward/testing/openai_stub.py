"""Local stand-ins for a remote OpenAI-compatible annotator (``POST /v1/chat/completions``), for tests and
benchmarks. Two servers, because they answer differently on purpose:

:class:`StubOpenAI` (in this process, on a background event loop) answers with fixed text and fixed logprobs, and
the last message's content scripts a failure: FAIL500ONCE, RATE429ONCE (Retry-After: 1), BAD400, SLOW (sleeps
2 s), NOCHOICE; ``down = True`` makes every request a 503. It records every request and the most requests it ever
had in flight. The backend and extract tests use it to check retries, error accounting and concurrency.

:func:`start_stub` (a subprocess, with its own core time and event loop) sleeps ``--latency-ms`` (default 20 ms,
mimicking a remote server's latency), then answers a one-token completion whose ``top_logprobs`` are a
deterministic distribution over "1".."5" derived from a SHA-256 hash of the prompt (the last message's content).
THE LABELS ARE MEANINGLESS: they only give the pipeline a realistic mix of labels (neutral turns for hindsight
mining, negative ones for the refusal check), so that every stage runs, and a test can recompute the label of any
row with :func:`fake_logprobs`. Requests without ``logprobs`` (freeform mode) get the same choice as ``[[n]]``
text. ``GET /stats`` returns, per prompt kind ("feedback" for the feedback annotator, "refusal" for the refusal
judge, "other"), the request count and the server-side time of the first request's arrival and the last response,
so a benchmark can compute a stage's throughput as the server saw it; ``POST /reset`` clears them.

Start the subprocess server by hand: ``python -m wildreward.testing.openai_stub [--port 0] [--latency-ms 20]``; it
prints ``URL http://127.0.0.1:PORT/v1`` as its first stdout line (port 0 = a random free port).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import subprocess
import sys
import threading
import time

# ---------------------------------------------------------------- in this process, scripted answers

class StubOpenAI:
    """A local OpenAI-style /v1/chat/completions server on a background event loop of this process (``start()``
    returns its URL, ending in /v1; ``stop()`` ends it). The last user message picks a behaviour:
    FAIL500ONCE, RATE429ONCE (Retry-After: 1), BAD400, SLOW (sleeps 2 s), NOCHOICE; anything else succeeds
    after ``delay`` seconds. It records every request and the most requests it ever had in flight."""

    def __init__(self, text="The user thanked the assistant.\n[[5]]", delay=0.05):
        self.text, self.delay = text, delay
        self.requests, self.in_flight, self.max_in_flight = [], 0, 0
        self.seen: dict[str, int] = {}
        self.down = False  # True: every request gets a 503, as from an endpoint under maintenance

    def start(self) -> str:
        from aiohttp import web

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def serve():
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self.handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            return self.runner.addresses[0][1]

        port = asyncio.run_coroutine_threadsafe(serve(), self.loop).result()
        return f"http://127.0.0.1:{port}/v1"

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)

    def count(self, marker: str) -> int:
        return sum(marker in r["body"]["messages"][-1]["content"] for r in self.requests)

    async def handle(self, request):
        from aiohttp import web

        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        content = body["messages"][-1]["content"]
        self.seen[content] = self.seen.get(content, 0) + 1
        first = self.seen[content] == 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(2.0 if "SLOW" in content else self.delay)
            if self.down:
                return web.Response(status=503, text="down for maintenance")
            if "FAIL500ONCE" in content and first:
                return web.Response(status=500, text="upstream exploded")
            if "RATE429ONCE" in content and first:
                return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})
            if "BAD400" in content:
                return web.Response(status=400, text='{"error": "max_tokens is too large"}')
            if body.get("logprobs"):
                tokens = ["Hello", "there"] if "NOCHOICE" in content else ["5", " 5", "4", "Hello", "1"]
                top = [{"token": t, "logprob": lp} for t, lp in zip(tokens, [-0.5, -2.0, -1.5, -3.0, -4.0])]
                choice = {"message": {"role": "assistant", "content": tokens[0]},
                          "logprobs": {"content": [{"token": tokens[0], "logprob": -0.5, "top_logprobs": top}]}}
            else:
                choice = {"message": {"role": "assistant", "content": self.text}}
            return web.json_response({"id": "x", "object": "chat.completion", "choices": [choice]})
        finally:
            self.in_flight -= 1


# ---------------------------------------------------------------- in a subprocess, hash-derived labels

CHOICES = ["1", "2", "3", "4", "5"]


def fake_logprobs(prompt: str) -> list[float]:
    """Deterministic log-probabilities over CHOICES from the prompt's hash (argmax roughly uniform over 1..5)."""
    digest = hashlib.sha256(prompt.encode("utf-8", "replace")).digest()
    logits = [digest[i] / 32.0 for i in range(len(CHOICES))]  # 0..8
    top = max(logits)
    norm = top + math.log(sum(math.exp(x - top) for x in logits))
    return [x - norm for x in logits]


def prompt_kind(prompt: str) -> str:
    if prompt.startswith("You are annotating"):
        return "feedback"
    if prompt.startswith("You are an AI safety adjudicator"):
        return "refusal"
    return "other"


def make_app(latency_s: float):
    from aiohttp import web

    stats: dict[str, dict] = {}

    async def completions(request):
        arrived = time.time()
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        await asyncio.sleep(latency_s)
        logprobs = fake_logprobs(prompt)
        order = sorted(range(len(CHOICES)), key=lambda i: -logprobs[i])
        best = CHOICES[order[0]]
        if body.get("logprobs"):
            top = [{"token": CHOICES[i], "logprob": logprobs[i]} for i in order]
            choice = {"index": 0, "message": {"role": "assistant", "content": best}, "finish_reason": "length",
                      "logprobs": {"content": [{"token": best, "logprob": logprobs[order[0]], "top_logprobs": top}]}}
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": f"Stub rating.\n[[{best}]]"},
                      "finish_reason": "stop"}
        kind = stats.setdefault(prompt_kind(prompt), {"requests": 0, "first_s": arrived, "last_s": arrived})
        kind["requests"] += 1
        kind["first_s"] = min(kind["first_s"], arrived)
        kind["last_s"] = max(kind["last_s"], time.time())
        return web.json_response({"id": "stub", "object": "chat.completion", "model": body.get("model", "stub"),
                                  "choices": [choice]})

    async def get_stats(request):
        return web.json_response(stats)

    async def reset(request):
        stats.clear()
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    return app


async def serve(port: int, latency_s: float) -> None:
    from aiohttp import web

    runner = web.AppRunner(make_app(latency_s), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"URL http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
    await asyncio.Event().wait()


class StubProcess:
    """The hash-label stub in a subprocess (own core time, own event loop); ``url`` ends in /v1."""

    def __init__(self, latency_ms: float = 20.0):
        self.proc = subprocess.Popen([sys.executable, "-m", "wildreward.testing.openai_stub", "--latency-ms",
                                      str(latency_ms)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("URL "):
            self.proc.kill()
            raise RuntimeError(f"stub did not start: {line!r}")
        self.url = line[4:]
        self.root = self.url[: -len("/v1")]

    def stats(self) -> dict:
        import httpx

        return httpx.get(self.root + "/stats").json()

    def reset(self) -> None:
        import httpx

        httpx.post(self.root + "/reset")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_stub(latency_ms: float = 20.0) -> StubProcess:
    return StubProcess(latency_ms)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.latency_ms / 1000))
