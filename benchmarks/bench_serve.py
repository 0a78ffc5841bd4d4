"""bench_serve: the reward-model service under load, each figure against a baseline measured in the same run.

Model: an ordinal RM on the real all-MiniLM-L6-v2 backbone (512 tokens, untrained head: speed does not depend on
the weights); texts: real chat-log turns in the training template, so lengths vary as in use. On a GPU
(``--device cuda``, run by ``gpu_check.sh``'s ``serve`` part) the RM is a Qwen3-shaped decoder with random weights
(``--backbone qwen3-0.6b``, 4096 tokens, bf16 in both servers), and the turns come from a saved turns file.

1. Closed-loop load at concurrency 1/8/32/64, one text per request: `wildreward serve` (one Ray Serve replica,
   cross-request batching) vs a baseline written like the original (benchmarks/baseline_rm_server.py: FastAPI,
   one model call per request, no cross-request batching). Both get the same CPU threads. Target: >= 3x requests/s
   at concurrency 32 with p99 no worse than the baseline's.
2. Serving efficiency: served texts/s at concurrency 64 / offline texts/s of `RewardModel.logits_for_texts` on the
   same texts in batches of the served mean batch size, same thread count (target >= 0.7).
3. Overload: open-loop arrivals at 4x the measured capacity for 15 s. Serve admits what its queue bound allows and
   sheds the rest with 503 + Retry-After; we report admitted/rejected counts and latencies, and replica memory.

    .venv/bin/python benchmarks/bench_serve.py            # ~10 min on 2 CPUs
    .venv/bin/python benchmarks/bench_serve.py --quick    # smoke run
    python3 benchmarks/bench_serve.py --device cuda --backbone qwen3-0.6b --tokenizer DIR --source F.turns.jsonl.gz
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import kept_turns, write_results  # noqa: E402
from wildreward.rm import META_FILE  # noqa: E402

SHARED = Path(os.environ.get("WILDREWARD_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CHATLOGS = SHARED / "data" / "chatlogs"
SOURCES = [str(CHATLOGS / name) for name in ("wildchat_sample.jsonl", "chatbot_arena_sample.jsonl",
                                             "lmsys_chat_sample.jsonl")]
THREADS = 2  # torch threads for the replica and the baseline alike
BASELINE_PORT, SERVE_PORT = 8471, 8472


def build_rm(out: Path, backbone: str, tokenizer: str | None, device: str) -> str:
    import torch

    torch.manual_seed(0)
    if backbone != "minilm":  # a random Qwen3 shape, saved as training exports it
        from transformers import AutoTokenizer

        from benchmarks.bench_gpu import build_rm_dir

        tok = AutoTokenizer.from_pretrained(tokenizer)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return str(build_rm_dir(backbone, tok, out, device)[0])
    from wildreward.models import resolve_model
    from wildreward.rm import build_model, save_reward_model

    model, tok = build_model(resolve_model("minilm"), "independent", 4)
    return str(save_reward_model(model.eval(), tok, out, max_length=512, truncation="middle"))


def real_texts(model_dir: str, sources: list[str], n: int) -> list[str]:
    """``n`` turns, an equal share from each source, in the RM's template."""
    from wildreward.rm import RewardModel

    rm = RewardModel(model_dir)
    return rm.texts([t for source in sources for t in kept_turns(source, n // len(sources))])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarize(latencies: list[float], statuses: Counter, elapsed: float) -> dict:
    return {"requests": sum(statuses.values()), "ok": statuses[200], "statuses": dict(statuses),
            "rps": round(statuses[200] / elapsed, 2), "p50_ms": round(1000 * percentile(latencies, 0.5), 1),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 1)}


async def closed_loop(url: str, texts: list[str], concurrency: int, n_requests: int) -> dict:
    """``concurrency`` clients, each sending its next single-text request when the last one returns."""
    latencies, statuses = [], Counter()
    next_index = iter(range(n_requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        async def user():
            for i in next_index:
                start = time.perf_counter()
                response = await client.post(url, json={"query": [texts[i % len(texts)]]})
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        return summarize(latencies, statuses, time.perf_counter() - start)


async def open_loop(url: str, texts: list[str], rate: float, duration_s: float) -> dict:
    """Requests arrive at ``rate``/s whatever the server does (as many rollout workers would)."""
    ok_latencies, rejected_latencies, statuses = [], [], Counter()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=4096)) as client:
        async def one(i: int):
            start = time.perf_counter()
            try:
                response = await client.post(url, json={"query": [texts[i % len(texts)]]})
            except httpx.HTTPError as err:
                statuses[type(err).__name__] += 1
                return
            statuses[response.status_code] += 1
            (ok_latencies if response.status_code == 200 else rejected_latencies).append(time.perf_counter() - start)

        tasks, start, n = [], time.perf_counter(), int(rate * duration_s)
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        out = summarize(ok_latencies, statuses, time.perf_counter() - start)
    out.update(offered_rps=rate, rejected=len(rejected_latencies),
               rejected_p50_ms=round(1000 * percentile(rejected_latencies, 0.5), 1),
               rejected_p99_ms=round(1000 * percentile(rejected_latencies, 0.99), 1))
    return out


def load_sweep(url: str, texts: list[str], levels: list[int], per_level: int) -> dict:
    asyncio.run(closed_loop(url, texts, 4, 16))  # warm-up
    return {c: asyncio.run(closed_loop(url, texts, c, max(per_level // 4, 40) if c == 1 else per_level))
            for c in levels}


def wait_ready(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")


def run_baseline(model_dir: str, texts: list[str], levels: list[int], per_level: int, device: str,
                 max_length: int) -> dict:
    env = {**os.environ, "MODEL_PATH": model_dir, "OMP_NUM_THREADS": str(THREADS), "MAX_LENGTH": str(max_length),
           "DEVICE": device}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "benchmarks.baseline_rm_server:app", "--host",
                               "127.0.0.1", "--port", str(BASELINE_PORT), "--log-level", "warning"],
                              cwd=Path(__file__).resolve().parents[1], env=env)
    try:
        base = f"http://127.0.0.1:{BASELINE_PORT}"
        wait_ready(f"{base}/")
        info = httpx.get(f"{base}/").json()
        import psutil

        sweep = load_sweep(f"{base}/get_reward", texts, levels, per_level)
        rss = psutil.Process(server.pid).memory_info().rss
        return {"sweep": sweep, "torch_threads": info["torch_threads"], "rss_mb": round(rss / 2**20, 1),
                "sample_rewards": httpx.post(f"{base}/get_reward", json={"query": texts[:4]}).json()["rewards"]}
    finally:
        server.terminate()
        server.wait(30)


def run_serve(model_dir: str, texts: list[str], levels: list[int], per_level: int, overload_s: float,
              device: str) -> dict:
    from wildreward import ray_compat as rc
    from wildreward.serve.app import build_app
    from wildreward.serve.config import ServeConfig

    rc.init_ray(num_cpus=THREADS + 2)
    cfg = ServeConfig(model_dir=model_dir, port=SERVE_PORT, num_cpus=THREADS, max_batch_size=32,
                      batch_wait_timeout_s=0.01, max_queued_requests=64, device=device,
                      num_gpus=1 if device == "cuda" else 0)
    rc.serve_run(build_app(cfg), name=cfg.name, host=cfg.host, port=cfg.port)
    base = f"http://127.0.0.1:{SERVE_PORT}"
    try:
        def batches():
            return httpx.get(f"{base}/v1/info").json()["batches"]

        sweep = {}
        asyncio.run(closed_loop(f"{base}/get_reward", texts, 4, 16))  # warm-up
        for c in levels:
            before = batches()
            sweep[c] = asyncio.run(closed_loop(f"{base}/get_reward", texts, c,
                                               max(per_level // 4, 40) if c == 1 else per_level))
            after = batches()
            sweep[c]["mean_batch"] = round((after["texts"] - before["texts"])
                                           / max(1, after["count"] - before["count"]), 2)
        capacity = max(level["rps"] for level in sweep.values())
        overload = asyncio.run(open_loop(f"{base}/get_reward", texts, 4 * capacity, overload_s))
        after_overload = asyncio.run(closed_loop(f"{base}/get_reward", texts, 8, 40))  # still healthy?
        info = httpx.get(f"{base}/v1/info").json()
        return {"sweep": sweep, "capacity_rps": capacity, "overload": overload,
                "healthy_after_overload": after_overload["ok"] == after_overload["requests"],
                "replica": info["replica"], "config": {"max_batch_size": cfg.max_batch_size,
                                                       "max_ongoing_requests": cfg.ongoing_requests,
                                                       "max_queued_requests": cfg.max_queued_requests},
                "sample_rewards": httpx.post(f"{base}/get_reward", json={"query": texts[:4]}).json()["rewards"]}
    finally:
        rc.serve_shutdown()


def offline_rate(model_dir: str, texts: list[str], batch: int, device: str) -> float:
    """Texts/s of the offline forward pass in batches of ``batch`` texts (length-sorted inside each call), in the
    dtype the replica uses."""
    import torch

    from wildreward.rm import RewardModel

    torch.set_num_threads(THREADS)
    rm = RewardModel(model_dir, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    rm.logits_for_texts(texts[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        rm.logits_for_texts(texts[i:i + batch])
    return len(texts) / (time.perf_counter() - start)


def to_markdown(r: dict) -> str:
    lines = ["## Closed-loop load, one text per request", "",
             "| concurrency | baseline rps | baseline p50 / p99 ms | serve rps | serve p50 / p99 ms | serve mean batch "
             "| rps ratio |",
             "|---|---|---|---|---|---|---|"]
    for c, s in r["serve"]["sweep"].items():
        b = r["baseline"]["sweep"][c]
        lines.append(f"| {c} | {b['rps']} | {b['p50_ms']} / {b['p99_ms']} | {s['rps']} | {s['p50_ms']} / "
                     f"{s['p99_ms']} | {s['mean_batch']} | {round(s['rps'] / b['rps'], 2)} |")
    t = r["targets"]
    o = r["serve"]["overload"]
    lines += ["", f"Target at concurrency 32: rps ratio {t['rps_ratio_c32']} (>= 3: {t['rps_ratio_c32'] >= 3}), "
              f"p99 {t['serve_p99_c32_ms']} ms vs baseline {t['baseline_p99_c32_ms']} ms "
              f"(no worse: {t['serve_p99_c32_ms'] <= t['baseline_p99_c32_ms']}).", "",
              "## Serving efficiency", "",
              f"Served {t['served_texts_per_s']} texts/s at concurrency 64 (mean batch {t['efficiency_batch']}) vs "
              f"offline {t['offline_texts_per_s']} texts/s at that batch size: **{t['serving_efficiency']}** "
              "(target >= 0.7).", "",
              "## Overload (open loop at 4x capacity)", "",
              f"Offered {o['offered_rps']:.1f} rps for {r['overload_s']} s ({o['requests']} requests): {o['ok']} "
              f"admitted (p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms), {o['rejected']} rejected with 503 "
              f"(p50 {o['rejected_p50_ms']} ms, p99 {o['rejected_p99_ms']} ms); statuses {o['statuses']}. "
              f"Healthy afterwards: {r['serve']['healthy_after_overload']}.", "",
              f"Memory: serve replica peak RSS {r['serve']['replica']['peak_rss_mb']} MB "
              f"({r['serve']['replica']['torch_threads']} torch threads); baseline worker RSS "
              f"{r['baseline']['rss_mb']} MB ({r['baseline']['torch_threads']} threads). "
              f"Serve config: {r['serve']['config']}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--backbone", default="minilm", help="minilm (real weights) or a bench_gpu Qwen3 shape")
    parser.add_argument("--tokenizer", help="tokenizer folder for a Qwen3 shape (SmolLM2's)")
    parser.add_argument("--source", action="append", help="chat logs or a saved turns file (repeatable; default: "
                                                          "the WildChat, Arena and LMSYS samples)")
    parser.add_argument("--name", help="results/<name>.json/.md (default bench_serve, or bench_serve_quick)")
    args = parser.parse_args()
    levels = [1, 8, 32, 64]
    per_level, overload_s = (60, 4) if args.quick else (400, 15)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_rm(Path(tmp) / "rm", args.backbone, args.tokenizer, args.device)
        max_length = json.loads((Path(model_dir) / META_FILE).read_text())["max_length"]  # as the model was saved
        texts = real_texts(model_dir, args.source or SOURCES, 600)
        baseline = run_baseline(model_dir, texts, levels, per_level, args.device, max_length)
        serve = run_serve(model_dir, texts, levels, per_level, overload_s, args.device)
        batch = max(1, round(serve["sweep"][64]["mean_batch"]))
        offline = offline_rate(model_dir, texts, batch, args.device)
    tokens = [len(t) for t in texts]
    device = args.device
    if device == "cuda":
        import torch
        device = torch.cuda.get_device_name(0)
    results = {"device": device, "backbone": args.backbone, "max_length": max_length,
               "texts": len(texts), "mean_chars": round(statistics.mean(tokens)), "threads": THREADS,
               "baseline": baseline, "serve": serve, "overload_s": overload_s}
    results["targets"] = {
        "rps_ratio_c32": round(serve["sweep"][32]["rps"] / baseline["sweep"][32]["rps"], 2),
        "serve_p99_c32_ms": serve["sweep"][32]["p99_ms"], "baseline_p99_c32_ms": baseline["sweep"][32]["p99_ms"],
        "served_texts_per_s": serve["sweep"][64]["rps"], "efficiency_batch": batch,
        "offline_texts_per_s": round(offline, 2), "serving_efficiency": round(serve["sweep"][64]["rps"] / offline, 3),
        "same_rewards": max(abs(a - b) for a, b in zip(baseline["sample_rewards"], serve["sample_rewards"])) < 1e-3}
    name = args.name or "bench_serve" + ("_quick" if args.quick else "")
    print(write_results(name, results, to_markdown(results)))
    print(to_markdown(results))


if __name__ == "__main__":
    main()
