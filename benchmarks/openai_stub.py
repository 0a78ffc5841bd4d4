"""A cheap stand-in for a remote OpenAI-compatible annotator, for throughput and memory benchmarks ONLY.

``POST /v1/chat/completions`` sleeps ``--latency-ms`` (default 20 ms, mimicking a remote server's latency), then
answers a one-token completion whose ``top_logprobs`` are a deterministic distribution over "1".."5" derived from
a SHA-256 hash of the prompt (the last message's content). THE LABELS ARE MEANINGLESS: they only give the pipeline
a realistic mix of labels (neutral turns for hindsight mining, negative ones for the refusal check), so that every
stage runs. Requests without ``logprobs`` (freeform mode) get the same choice as ``[[n]]`` text.

``GET /stats`` returns, per prompt kind ("feedback" for the feedback annotator, "refusal" for the refusal judge,
"other"), the request count and the server-side time of the first request's arrival and the last response, so a
benchmark can compute a stage's throughput as the server saw it; ``POST /reset`` clears them.

Start: ``python benchmarks/openai_stub.py [--port 0] [--latency-ms 20]``; it prints ``URL http://127.0.0.1:PORT/v1``
as its first stdout line (port 0 = a random free port), or use :func:`start_stub` for a managed subprocess.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import subprocess
import sys
import time

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
    """The stub in a subprocess (own core time, own event loop); ``url`` ends in /v1."""

    def __init__(self, latency_ms: float = 20.0):
        self.proc = subprocess.Popen([sys.executable, __file__, "--latency-ms", str(latency_ms)],
                                     stdout=subprocess.PIPE, text=True)
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
