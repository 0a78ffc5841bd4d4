"""Scaling of the whole ``run_extract`` pipeline on local Ray (``ray.init(num_cpus=2)``) with a cheap annotator.

The annotator is the ``http`` backend in constrained mode pointed at ``wildreward/testing/openai_stub.py``: a local
OpenAI-compatible stub that sleeps ``--latency-ms`` (20 ms) per request, like a remote server, and returns a
hash-derived distribution over "1".."5". ITS LABELS ARE MEANINGLESS; they only make every stage do realistic work
(refusal judging and hindsight mining stay ON; nothing in the pipeline is disabled). Each actor keeps
``annotator.http.concurrency`` (4) requests in flight, so latency, not CPU, bounds one actor.

Input: JSONL files of ShareGPT conversations (``package:sharegpt``) with exactly N turns after reading. The packaged
file only holds ~26k turns in conversations that read cleanly, so conversations are repeated with an ``_rep<r>``
suffix on their id (ids stay unique) and the last one is cut to hit N exactly.

Measured (fresh output dir and fresh Ray per run; peak PSS summed over this process and all its descendants:
Ray's GCS/raylet/workers/actors and the stub):

(a) 5k vs 50k turns with 1 annotator actor: wall time and peak PSS ratios (targets: PSS <= 1.5x, time <= 12x);
(b) annotate-stage throughput with 1 vs 2 annotator actors on the 5k input (``annotator.min_actors=max_actors=2``,
    ``annotator.num_cpus=0.5``): ratio target >= 1.6x. Throughput is annotated rows / the annotate stage's seconds
    from stats.json, and also rows / the stub's first-to-last feedback-request window (no actor start-up).

Per-stage seconds from stats.json are reported for every run. The 5k 1-actor run serves both (a) and (b); all runs
use ``annotator.num_cpus=0.5`` and the same concurrency.

Run (about 15-25 minutes on 2 CPUs): ``python benchmarks/bench_extract_scale.py [--small 5000] [--large 50000]
[--latency-ms 20] [--concurrency 4] [--work-dir /tmp/wildreward_bench_extract]``; results go to
benchmarks/results/bench_extract_scale.json and .md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wildreward.ray_compat import LOCAL_RAY_ENV  # noqa: E402

for _key, _value in {**LOCAL_RAY_ENV, "VLLM_NO_USAGE_STATS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_key, _value)

BACK_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}
STAGES = ["read", "turns", "annotate", "refusal", "mining", "final", "split"]


def count_turns(messages: list[dict]) -> int:
    """Turns ``extract_turns`` yields: (user, assistant) pairs followed by a user message."""
    return sum(1 for i in range(len(messages) - 2)
               if messages[i]["role"] == "user" and messages[i + 1]["role"] == "assistant"
               and messages[i + 2]["role"] == "user")


def clean_conversations() -> list[dict]:
    """Conversations of the packaged ShareGPT file that read cleanly and have at least one turn."""
    from wildreward.extract.config import ReadConfig
    from wildreward.extract.read import SHAREGPT, plan_read_tasks, read_task

    cfg = ReadConfig(paths=[SHAREGPT])
    convs = []
    for spec in plan_read_tasks(cfg):
        for row in read_task(spec, cfg):
            if row["quarantine_reason"] is None and count_turns(row["messages"]):
                convs.append({"id": row["conversation_id"], "messages": row["messages"]})
    return convs


def write_input(convs: list[dict], n_turns: int, path: Path) -> dict:
    """JSONL of ShareGPT records with exactly ``n_turns`` turns; repeats the conversations (id suffix) if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    left, records, rep = n_turns, 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        while left > 0:
            for conv in convs:
                messages = conv["messages"]
                turns = count_turns(messages)
                if turns > left:  # cut after the user message that answers turn `left - 1`
                    first = next(i for i, m in enumerate(messages) if m["role"] != "system")
                    messages = messages[:first + 2 * left + 1]
                    turns = count_turns(messages)
                    assert turns == left, (conv["id"], turns, left)
                cid = conv["id"] if rep == 0 else f"{conv['id']}_rep{rep}"
                fh.write(json.dumps({"id": cid, "conversations": [{"from": BACK_ROLES[m["role"]], "value": m["content"]}
                                                                  for m in messages]}, ensure_ascii=False) + "\n")
                records += 1
                left -= turns
                if left == 0:
                    break
            rep += 1
    return {"path": str(path), "turns": n_turns, "conversations": records, "repeats": rep,
            "mb": round(path.stat().st_size / 2**20, 1)}


def wait_for_ray_children(keep: set[int], timeout_s: float = 60) -> None:
    """After ray.shutdown, wait until only ``keep`` (the stub) is left among this process's children."""
    import psutil

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not [p for p in psutil.Process().children(recursive=True) if p.pid not in keep]:
            return
        time.sleep(0.5)


def run_once(name: str, input_file: Path, n_turns: int, actors: int, args, stub) -> dict:
    import ray

    from benchmarks.common import PeakMemory
    from wildreward.config import load_config
    from wildreward.extract.config import ExtractConfig
    from wildreward.extract.pipeline import run_extract

    out = args.work_dir / "runs" / f"{name}_{int(time.time())}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(ExtractConfig, None, [
        f"output_dir={out}", f"read.paths=[{input_file}]", "annotator.backend=http", "annotator.mode=constrained",
        "annotator.model=stub-model", f"annotator.http.base_url={stub.url}",
        f"annotator.http.concurrency={args.concurrency}", f"annotator.num_cpus={args.num_cpus}",
        f"annotator.min_actors={actors}", f"annotator.max_actors={actors}",
        f"split.test_size={max(1, n_turns // 10)}"])
    stub.reset()
    gc.collect()
    load_before = os.getloadavg()
    print(f"[bench] {name}: {n_turns} turns, {actors} annotator actor(s) -> {out}", flush=True)
    timings: dict = {}
    with PeakMemory() as mem:
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        timings["ray_init_s"] = round(time.perf_counter() - start, 2)
        pipeline_start = time.perf_counter()
        stats = run_extract(cfg)
        timings["run_extract_s"] = round(time.perf_counter() - pipeline_start, 2)
        timings["wall_s"] = round(time.perf_counter() - start, 2)  # ray.init + run_extract
    load_after = os.getloadavg()
    ray.shutdown()
    wait_for_ray_children({stub.proc.pid})
    served = stub.stats()
    feedback = served.get("feedback", {})
    window = feedback.get("last_s", 0) - feedback.get("first_s", 0)
    annotated = stats["annotate"]["annotated"]
    result = {
        "name": name, "turns_target": n_turns, "actors": actors, **timings, "peak_pss_mb": mem.peak_mb,
        "stage_seconds": {s: stats[s].get("seconds") for s in STAGES},
        "turns": stats["turns"]["turns"], "kept": stats["turns"]["kept"], "annotated": annotated,
        "annotate_errors": stats["annotate"]["errors"], "refusal_judged": stats["refusal"].get("judged"),
        "mining_candidates": stats["mining"].get("candidates"), "mined": stats["final"]["mined"],
        "final_kept": stats["final"]["kept"], "split": stats["split"],
        "annotate_rows_per_s_stage": round(annotated / stats["annotate"]["seconds"], 1),
        "annotate_rows_per_s_server": round(feedback.get("requests", 0) / window, 1) if window > 0 else None,
        "stub_requests": {k: v["requests"] for k, v in served.items()},
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "output_dir": str(out),
    }
    print(f"[bench] {name}: {json.dumps(result)}", flush=True)
    if not args.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    return result


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=5_000, help="turns of the small input")
    parser.add_argument("--large", type=int, default=50_000, help="turns of the large input")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="stub latency per request")
    parser.add_argument("--concurrency", type=int, default=4, help="annotator.http.concurrency (per actor)")
    parser.add_argument("--num-cpus", type=float, default=0.5, help="annotator.num_cpus (per actor)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/wildreward_bench_extract"))
    parser.add_argument("--keep-outputs", action="store_true")
    parser.add_argument("--name", default="bench_extract_scale")
    args = parser.parse_args()
    args.work_dir = args.work_dir.resolve()

    from benchmarks.common import write_results
    from wildreward.testing.openai_stub import start_stub

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    convs = clean_conversations()
    clean_turns = sum(count_turns(c["messages"]) for c in convs)
    inputs = {n: write_input(convs, n, args.work_dir / "inputs" / f"sharegpt_{n}_turns.jsonl")
              for n in (args.small, args.large)}
    build_s = round(time.perf_counter() - t0, 1)
    del convs
    gc.collect()
    print(f"[bench] inputs built in {build_s} s from {clean_turns} clean ShareGPT turns: {inputs}", flush=True)

    stub = start_stub(args.latency_ms)
    try:
        runs = {
            "small_1actor": run_once("small_1actor", Path(inputs[args.small]["path"]), args.small, 1, args, stub),
            "small_2actors": run_once("small_2actors", Path(inputs[args.small]["path"]), args.small, 2, args, stub),
            "large_1actor": run_once("large_1actor", Path(inputs[args.large]["path"]), args.large, 1, args, stub),
        }
    finally:
        stub.stop()
    load_end = os.getloadavg()

    small, small2, large = runs["small_1actor"], runs["small_2actors"], runs["large_1actor"]
    mem_ratio = large["peak_pss_mb"] / small["peak_pss_mb"]
    time_ratio = large["wall_s"] / small["wall_s"]
    scale = args.large / args.small
    stage_ratio = small2["annotate_rows_per_s_stage"] / small["annotate_rows_per_s_stage"]
    server_ratio = (small2["annotate_rows_per_s_server"] / small["annotate_rows_per_s_server"]
                    if small["annotate_rows_per_s_server"] and small2["annotate_rows_per_s_server"] else None)
    results = {
        "config": {"small": args.small, "large": args.large, "latency_ms": args.latency_ms,
                   "concurrency_per_actor": args.concurrency, "annotator_num_cpus": args.num_cpus,
                   "ray_num_cpus": 2, "annotator": "http stub, constrained (meaningless hash labels)",
                   "batch_size": 8},
        "inputs": {"clean_sharegpt_turns": clean_turns, "build_s": build_s, **{str(k): v for k, v in inputs.items()}},
        "runs": runs,
        "scale": {"turn_ratio": scale, "peak_pss_ratio": round(mem_ratio, 2), "peak_pss_target": 1.5,
                  "peak_pss_met": mem_ratio <= 1.5, "wall_ratio": round(time_ratio, 2), "wall_target": 12,
                  "wall_met": time_ratio <= 12},
        "actors": {"annotate_stage_ratio": round(stage_ratio, 2), "annotate_server_ratio":
                   round(server_ratio, 2) if server_ratio else None, "target": 1.6,
                   "stage_met": stage_ratio >= 1.6, "server_met": bool(server_ratio and server_ratio >= 1.6)},
        "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in load_end],
    }

    def stage_row(r: dict) -> str:
        return " | ".join(str(r["stage_seconds"][s]) for s in STAGES)

    md = f"""
`run_extract` end to end on local Ray (2 CPUs), annotator = `http` backend (constrained) against the local stub
`wildreward/testing/openai_stub.py` ({args.latency_ms:g} ms latency per request, hash-derived labels that are
MEANINGLESS: throughput and memory only), {args.concurrency} requests in flight per actor,
`annotator.num_cpus={args.num_cpus}`.
Refusal judging and hindsight mining are on. Inputs: ShareGPT conversations with exactly N turns; the package file
has only {clean_turns} turns in cleanly read conversations, so they are repeated with an id suffix
(small: {inputs[args.small]['conversations']} records, {inputs[args.small]['mb']} MB; large:
{inputs[args.large]['conversations']} records, {inputs[args.large]['mb']} MB). Peak PSS is summed over the driver,
all Ray processes and the stub. Wall = `ray.init` + `run_extract`.

| run | turns | kept | actors | wall s | peak PSS MB | annotate rows/s (stage) | annotate rows/s (stub window) | refusal judged | mining candidates |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(  # noqa: E501 (markdown table rows)
        f"| {r['name']} | {r['turns']} | {r['kept']} | {r['actors']} | {r['wall_s']} | {r['peak_pss_mb']} | "
        f"{r['annotate_rows_per_s_stage']} | {r['annotate_rows_per_s_server']} | {r['refusal_judged']} | "
        f"{r['mining_candidates']} |" for r in runs.values()) + f"""

Stage seconds (from stats.json):

| run | {' | '.join(STAGES)} |
|---|{'---|' * len(STAGES)}
""" + "\n".join(f"| {r['name']} | {stage_row(r)} |" for r in runs.values()) + f"""

**(a) {args.small} -> {args.large} turns ({scale:g}x), 1 actor:** peak PSS {mem_ratio:.2f}x (target <= 1.5x:
{verdict(mem_ratio <= 1.5)}), wall time {time_ratio:.2f}x (target <= 12x: {verdict(time_ratio <= 12)}).

**(b) 1 -> 2 annotator actors, {args.small} turns:** annotate-stage throughput {stage_ratio:.2f}x from stage seconds
(target >= 1.6x: {verdict(stage_ratio >= 1.6)}); {f'{server_ratio:.2f}x' if server_ratio else 'n/a'} from the stub's
request window (excludes actor start-up and the stage's materialize/write).

Load average (1/5/15 min) at start {results['loadavg_start']}, at end {results['loadavg_end']} on {os.cpu_count()}
CPUs; per run in the JSON. The machine is shared, so a load above 2 means other work competed for the CPUs.
"""
    path = write_results(args.name, results, md)
    print(md)
    print(f"[bench] wrote {path}")


if __name__ == "__main__":
    main()
